"""Provider adapters: the HTTP transport of each wire protocol, one pooled session each.

They implement ``core.adapter.Adapter`` and leave the shapes of their protocol to
``protocols``. May import ``core`` (the interface and neutral types), ``protocols``,
``contract`` and ``errors``; only the app, which hands ``registry.make_adapter`` to the
gateway, and the operator's prober import them.
"""

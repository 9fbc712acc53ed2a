"""The router's HTTP surface: the completion surfaces (native, OpenAI, Anthropic) on one
shared request opening, admin, usage and cluster endpoints; errors mapped in one place.

May import ``core``, ``protocols`` and the layers below them; never ``providers``.
"""

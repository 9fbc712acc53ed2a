"""The router's domain, free of HTTP: neutral requests, selection, the failover loop,
breakers and budgets, the response cache, cost and accounting.

Calls providers only through ``adapter.Adapter``, which ``providers`` implement. May
import ``storage``, ``table``, ``kube``, ``metrics``, ``contract`` and ``errors``.
"""

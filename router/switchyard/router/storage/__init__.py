"""Storage: usage records, the response cache and spend counters, on PostgreSQL or SQLite.

May import ``metrics``, ``contract`` and ``errors``.
"""

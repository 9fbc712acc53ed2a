"""Kubernetes access, through lightkube: credentials, a small client, following an object.

Only what runs against a cluster imports lightkube (the router when it follows a
ConfigMap through the API, its cluster endpoints, the operator, ``create-api-key``), so
a router serving a table file never loads it. ``errors`` and ``resources`` import no
client library. May import ``contract``.
"""

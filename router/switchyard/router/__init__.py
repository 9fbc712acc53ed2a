"""The data plane: serves completions from a routing table (see docs/architecture.md).

Never imports ``switchyard.operator`` or kopf; lightkube only when it follows a cluster.
"""

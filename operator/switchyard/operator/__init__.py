"""The control plane: a kopf operator that validates, probes and compiles the routing table.

It may import ``switchyard.router``'s contract, table packing and provider adapters (the
router is the consumer of what the operator produces); the router never imports it.
"""

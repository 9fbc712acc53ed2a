"""The data plane: serves completions from a routing table."""

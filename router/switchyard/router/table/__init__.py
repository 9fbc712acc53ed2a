"""The routing table: the one contract between the operator and the router."""

"""The router's domain: requests, selection, limits, failover and cost, free of HTTP."""

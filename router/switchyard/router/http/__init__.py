"""The router's HTTP surface: one module per API, errors mapped in one place."""

"""Tenants and API keys: stored as hashes, held in memory on the request path."""

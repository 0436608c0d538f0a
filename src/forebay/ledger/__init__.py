"""The append-only usage ledger: one record per request, written off the request path."""

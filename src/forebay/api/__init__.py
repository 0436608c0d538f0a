"""HTTP surface: the OpenAI-compatible API, the admin API, probes and metrics."""

"""The embedded local models: each runs in its own supervised worker process that
the gateway reaches as an ordinary OpenAI-compatible upstream on loopback."""

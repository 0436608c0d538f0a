"""Adapters behind one small interface: openai_compat, local (and later anthropic)."""

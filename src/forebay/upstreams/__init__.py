"""Adapters behind one small interface: openai_compat, openai, azure_openai, anthropic, local."""

"""Forebay: a shared, metered, OpenAI-compatible inference plane."""

__version__ = "0.1.0"

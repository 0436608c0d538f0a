"""Wire formats <-> the canonical form (canonical.py), one codec per protocol."""

"""Counters that limits and budgets are enforced with: reserved before dispatch
and settled after, in one atomic step, in-process or in Redis."""

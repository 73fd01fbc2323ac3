"""Fleets: one plan rolled over many databases as a durable DBOS workflow (the `fleet` extra)."""

"""zdm: zero-downtime online migrations for PostgreSQL."""

__version__ = "0.1.0"

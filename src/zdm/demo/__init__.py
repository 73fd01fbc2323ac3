"""Example schema and data for `zdm demo`, tests and benchmarks."""

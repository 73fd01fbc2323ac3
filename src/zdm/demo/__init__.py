"""`zdm demo` and what tests and benchmarks share with it: the example schema and data (seed),
the simulated application (traffic) and the embedded PostgreSQL server (testing)."""

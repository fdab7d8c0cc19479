"""Benchmarks: py_cachify's pools against py-cachify 3.1.0 and against Redis itself; see README.md."""

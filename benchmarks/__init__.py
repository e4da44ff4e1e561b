"""idsim benchmark suite: run ``python benchmarks/run.py [--quick]``."""

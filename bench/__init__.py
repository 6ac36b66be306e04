"""Benchmarks: each module is a command (``python -m bench.<name>``) that prints its figures (bench/README.md).
The pieces they and the tests share are in ``bench.harness``."""

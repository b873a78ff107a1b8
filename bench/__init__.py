"""Throughput and memory benchmark for target-pinterest-audiences (run ``python -m bench``).

Deliberately import-free: ``python -m bench.floor`` and ``python -m bench.sdk_baseline``
run as measured subprocesses, and anything imported here would inflate their peak memory.
"""

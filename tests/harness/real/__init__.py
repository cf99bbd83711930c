"""Real tritonserver and Prometheus launchers, load generators and test models used by
the ``tests/real`` suite, ``tests/harness/fleet`` and ``benchmarks/bench_perf_real.py``."""

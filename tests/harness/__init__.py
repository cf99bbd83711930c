"""Harness code shared by the test suites and benchmarks (not tests themselves):
one ``free_port`` (:mod:`tests.harness.net`) and one ``OperatorProcess``
(:mod:`tests.harness.operator`)."""

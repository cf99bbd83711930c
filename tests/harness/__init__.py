"""Harness code shared by the test suites and benchmarks (not tests themselves).

One ``free_port`` (:mod:`tests.harness.net`), one ``OperatorProcess``
(:mod:`tests.harness.operator`), the e2e suite's chart/example/pool helpers
(:mod:`tests.harness.e2e`), the unit suite's ``FakeKube`` (:mod:`tests.harness.fakes`)
and CEL evaluator (:mod:`tests.harness.celk8s`), the local control plane
(:mod:`tests.harness.k8s`), the Triton fleet emulator (:mod:`tests.harness.fleet`) and
the real-server launchers (:mod:`tests.harness.real`)."""

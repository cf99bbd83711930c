"""Fixtures that run a real tritonserver and a real Prometheus for ``tests/real``.

Session-scoped and shared: the ``fleet`` (two Triton servers playing two (variant,
pool) groups of one ScaledModel, scraped by one Prometheus) starts once.  Tests that
stop a server start their own through ``triton_factory`` / ``PrometheusServer``.
Servers that cannot start FAIL the tests (never skip): run
``hack/install-triton-prometheus.sh``.  Logs stay under the directory printed at the
end of the session (``TRITONSCALE_REAL_LOGS`` chooses it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness.real.servers import PrometheusServer, wait_until_scraped
from tests.harness.real.support import (
    MODEL,
    Fleet,
    Group,
    Timing,
    TritonFactory,
    fleet_targets,
    warm_up,
)

_LOG_DIRS: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "triton: needs a real tritonserver (nvidia-pytriton wheel)")
    config.addinivalue_line("markers", "prometheus: needs a real Prometheus server")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for d in _LOG_DIRS:
        terminalreporter.write_line(f"tests/real server logs: {d}")


@pytest.fixture(scope="session")
def real_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("TRITONSCALE_REAL_LOGS")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("real-servers")
    _LOG_DIRS.append(path)
    return path


@pytest.fixture(scope="session")
def triton_factory(real_log_dir: Path) -> Iterator[TritonFactory]:
    factory = TritonFactory(real_log_dir)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def fleet(triton_factory: TritonFactory, real_log_dir: Path) -> Iterator[Fleet]:
    fp16_t = Timing(base_ms=6.0, per_item_ms=1.0)
    int8_t = Timing(base_ms=3.0, per_item_ms=0.5)
    fp16 = Group("fp16", "gpu-a", fp16_t, triton_factory.start("fp16", {MODEL: fp16_t}))
    int8 = Group("int8", "gpu-b", int8_t, triton_factory.start("int8", {MODEL: int8_t}))
    for g in (fp16, int8):
        warm_up(g.server, MODEL)
    targets = fleet_targets((fp16, int8))
    prom = PrometheusServer(workdir=real_log_dir / "prometheus-fleet", targets=targets)
    prom.start()
    try:
        wait_until_scraped(prom, len(targets))
        yield Fleet(fp16, int8, prom)
    finally:
        prom.stop()

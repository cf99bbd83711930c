"""The operator's latency percentile exists on the real Triton (2.51) it renders.

Triton's latency summary exports the quantiles 0.5, 0.9, 0.95 and 0.99 unless told
otherwise, the 0.5 with a rank error of 0.05. An SLO at any other percentile (p97,
p99.9) therefore had no quantile to read, and the operator's signals fell back to
the mean latency, far below the tail it plans for. ``core/render.py`` now renders
``--metrics-config=summary_quantiles=...`` with the SLO's percentile
(:func:`tritonscale.core.render.metrics_args`): here a real server started with those
flags exports the p97 the adapter reads, and one started with the flags for a p99 SLO
does not, so a p97 read there is flagged as the mean.
"""

from __future__ import annotations

import time

import pytest
import requests
from tests.harness.real.servers import TritonServer
from tests.harness.real.support import MODEL, Timing, TritonFactory, warm_up

from tritonscale.adapters.triton import MetricsSnapshot, signals_between
from tritonscale.core.render import metrics_args

pytestmark = pytest.mark.triton

TIMING = Timing(base_ms=5.0, per_item_ms=1.0)
REQUESTS = 60


def _snapshot(server: TritonServer) -> MetricsSnapshot:
    text = requests.get(server.metrics_url, timeout=5).text
    return MetricsSnapshot.parse(text, MODEL, time.monotonic())


def _p97_after_load(server: TritonServer) -> tuple[MetricsSnapshot, float | None, bool]:
    warm_up(server, MODEL)
    before = _snapshot(server)
    warm_up(server, MODEL, requests=REQUESTS)
    deadline = time.monotonic() + 30.0
    after = _snapshot(server)
    while after.success - before.success < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _snapshot(server)
    assert after.success - before.success >= REQUESTS, (before.success, after.success)
    sig = signals_between(before, after, 97.0)
    return after, sig.latency_ms, sig.latency_is_mean


def test_a_p97_slo_reads_triton_p97(triton_factory: TritonFactory) -> None:
    server = triton_factory.start("p97", {MODEL: TIMING}, args=metrics_args(97.0))
    after, latency, is_mean = _p97_after_load(server)
    assert 0.97 in after.quantiles, after.quantiles
    assert {0.5, 0.9, 0.95, 0.99} <= set(after.quantiles), after.quantiles
    assert not is_mean
    # The compute alone is base_ms + per_item_ms for a request served on its own.
    assert latency is not None and latency >= TIMING.base_ms, latency
    assert latency == pytest.approx(after.quantiles[0.97] / 1000.0)


def test_without_it_a_p97_slo_gets_the_mean(triton_factory: TritonFactory) -> None:
    server = triton_factory.start("p99-flags", {MODEL: TIMING})  # the flags of a p99 SLO
    after, latency, is_mean = _p97_after_load(server)
    assert 0.97 not in after.quantiles, after.quantiles
    assert 0.99 in after.quantiles, after.quantiles
    assert is_mean and latency is not None

"""Value logic of the signal adapters that needs no server: parsing, deltas, merging."""

from __future__ import annotations

import math

import pytest

from tritonscale.adapters.signals import GroupKey, Signals, finite, to_observation
from tritonscale.adapters.triton import (
    MetricsSnapshot,
    ModelStatistics,
    aggregate,
    aggregate_groups,
    signals_between,
)

EXPOSITION = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 100
nv_inference_request_success{model="m",version="2"} 20
nv_inference_request_success{model="other",version="1"} 999
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 5
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="m",version="1"} 1200000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="m",version="1"} 240000
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="m",version="1"} 3
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="m",version="1"} 120
nv_inference_request_summary_us_sum{model="m",version="1"} 1200000
nv_inference_request_summary_us{model="m",version="1",quantile="0.5"} 9000
nv_inference_request_summary_us{model="m",version="1",quantile="0.95"} 25000
nv_inference_request_summary_us{model="m",version="1",quantile="0.99"} NaN
"""


def test_snapshot_parses_triton_exposition() -> None:
    snap = MetricsSnapshot.parse(EXPOSITION, "m", taken_at=10.0)
    assert snap.found
    assert snap.success == 120 and snap.failure == 5  # versions summed, other model not
    assert snap.duration_us == 1_200_000 and snap.queue_us == 240_000 and snap.pending == 3
    assert snap.quantiles == {0.5: 9000, 0.95: 25000}  # NaN dropped
    assert not MetricsSnapshot.parse(EXPOSITION, "absent", taken_at=0).found


def test_signals_between_two_scrapes() -> None:
    a = MetricsSnapshot(taken_at=0.0, success=100, failure=0, duration_us=1e6, queue_us=1e5,
                        found=True)  # fmt: skip
    b = MetricsSnapshot(taken_at=10.0, success=300, failure=20, duration_us=3e6, queue_us=3e5,
                        pending=4, quantiles={0.95: 25000.0}, found=True)  # fmt: skip
    s = signals_between(a, b, 95)
    assert s.ok
    assert s.request_rate == pytest.approx(22.0)  # (200 ok + 20 failed) / 10 s
    assert s.latency_ms == pytest.approx(25.0) and not s.latency_is_mean
    assert s.queue_ms == pytest.approx(1.0)  # 2e5 us / 200 requests
    mean = signals_between(a, b, 97)  # not exported: mean, flagged
    assert mean.latency_ms == pytest.approx(10.0) and mean.latency_is_mean
    reset = MetricsSnapshot(taken_at=20.0, success=5, found=True)
    assert not signals_between(b, reset, 95).ok  # a restart resets counters
    assert not signals_between(b, a, 95).ok  # out of order
    idle = signals_between(a, MetricsSnapshot(taken_at=5.0, success=100, duration_us=1e6,
                                              queue_us=1e5, found=True), 95)  # fmt: skip
    assert idle.ok and idle.request_rate == 0 and idle.latency_ms is None


def test_aggregate_is_conservative() -> None:
    p1 = Signals(95, request_rate=10, latency_ms=20, queue_ms=1, pending_requests=1)
    p2 = Signals(95, request_rate=30, latency_ms=40, queue_ms=3, pending_requests=2)
    both = aggregate([p1, p2], 95)
    assert both.request_rate == 40 and both.pending_requests == 3
    assert both.latency_ms == 40  # max: an upper bound of the combined p95
    assert both.queue_ms == pytest.approx((10 * 1 + 30 * 3) / 40)
    assert not aggregate([p1, Signals.unknown(95, "pod down")], 95).ok
    assert not aggregate([], 95).ok
    whole = aggregate_groups({GroupKey("fp16", "a"): [p1], GroupKey("int8", "b"): [p2]}, 95)
    assert whole.ok and set(whole.groups) == {GroupKey("fp16", "a"), GroupKey("int8", "b")}


def test_ok_and_observation() -> None:
    idle = Signals(95, request_rate=0.0, latency_ms=None, pending_requests=0.0)
    assert idle.ok  # nothing served: no latency to know, not a failing source
    busy_unknown = Signals(95, request_rate=5.0, latency_ms=None, pending_requests=0.0)
    assert not busy_unknown.ok
    obs = to_observation(busy_unknown)
    assert not obs.ok and obs.error
    grouped = Signals(
        95, request_rate=5, latency_ms=9, pending_requests=0,
        groups={GroupKey("v", "p"): Signals(95, request_rate=5, latency_ms=9, pending_requests=0)},
    )  # fmt: skip
    obs = to_observation(grouped)
    assert obs.ok and obs.per_placement_rps == {("v", "p"): 5}
    assert obs.per_placement_latency_ms == {("v", "p"): 9}


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "-Inf", "fast", None, True, math.nan])
def test_finite_maps_garbage_to_unknown(raw: object) -> None:
    assert finite(raw) is None


def test_statistics_parse_and_delta() -> None:
    def payload(n: int) -> dict[str, object]:
        d = {"count": n, "ns": n * 2_000_000}
        return {
            "model_stats": [
                {
                    "name": "m", "version": "1", "inference_count": 4 * n, "execution_count": n,
                    "inference_stats": {"success": d, "fail": {"count": 0, "ns": 0}, "queue": d,
                                        "compute_input": d, "compute_infer": d,
                                        "compute_output": d},
                    "batch_stats": [{"batch_size": 4, "compute_input": d, "compute_infer": d,
                                     "compute_output": d}],
                }
            ]
        }  # fmt: skip

    a, b = ModelStatistics.parse("m", payload(2)), ModelStatistics.parse("m", payload(5))
    d = b - a
    assert d.success.count == 3 and d.inference_count == 12 and d.execution_count == 3
    assert d.batch(4).count == 3 and d.batch(4).compute_ms == pytest.approx(6.0)
    assert d.batch(8).count == 0 and d.batch(8).compute_ms is None
    assert ModelStatistics.parse("m", "garbage").success.count == 0

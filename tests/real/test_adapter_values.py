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


ROUTER_EXPOSITION = """\
# HELP tritonscale_cascade_requests_total Inferences the cascade router answered
# TYPE tritonscale_cascade_requests_total counter
tritonscale_cascade_requests_total{model="m-cascade"} 200
tritonscale_cascade_requests_total{model="other"} 999
# HELP tritonscale_cascade_escalated_total Inferences escalated to the last tier
# TYPE tritonscale_cascade_escalated_total counter
tritonscale_cascade_escalated_total{model="m-cascade"} 50
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m-cascade",version="1"} 200
"""


def test_router_counters_give_the_escalated_fraction() -> None:
    a = MetricsSnapshot.parse(ROUTER_EXPOSITION, "m-cascade", taken_at=0.0)
    assert (a.cascade_requests, a.cascade_escalated) == (200, 50)  # other model not summed
    later = (ROUTER_EXPOSITION.replace("} 200", "} 300").replace("} 50", "} 75"))
    b = MetricsSnapshot.parse(later, "m-cascade", taken_at=10.0)
    s = signals_between(a, b, 95)
    assert s.escalated == pytest.approx(0.25) and s.escalation_error == ""  # 25 of 100
    assert s.escalation_weight == pytest.approx(10.0)  # requests/s behind it
    # A plain model exports no router counters: unknown, and says why.
    plain = MetricsSnapshot.parse(EXPOSITION, "m", taken_at=0.0)
    assert plain.cascade_requests is None
    n = signals_between(plain, MetricsSnapshot.parse(EXPOSITION, "m", taken_at=5.0), 95)
    assert n.ok and n.escalated is None and n.escalation_error == "no cascade router counters"
    # A restarted router (counters went back) and an idle one are unknown.
    reset = MetricsSnapshot.parse(ROUTER_EXPOSITION.replace("} 200", "} 3"), "m-cascade", 20.0)
    assert signals_between(b, reset, 95).escalated is None
    idle = signals_between(b, MetricsSnapshot.parse(later, "m-cascade", 30.0), 95)
    assert idle.escalated is None and "no cascade requests" in idle.escalation_error


def _pod(rate: float, escalated: float | None, error: str = "") -> Signals:
    return Signals(percentile=95, request_rate=rate, latency_ms=10.0, pending_requests=0.0,
                   escalated=escalated, escalation_error=error,
                   escalation_weight=rate if escalated is not None else 0.0)


def test_pods_escalation_is_weighted_by_the_requests_each_answered() -> None:
    both = aggregate([_pod(30.0, 0.1), _pod(10.0, 0.5)], 95)
    assert both.escalated == pytest.approx((30 * 0.1 + 10 * 0.5) / 40)  # 0.2, not 0.3
    # A pod that answered nothing in the window does not count; an unknown one does.
    idle = _pod(0.0, None, "no cascade requests in the window")
    assert aggregate([_pod(30.0, 0.1), idle], 95).escalated == pytest.approx(0.1)
    reset = _pod(30.0, None, "counter reset between scrapes (restart?)")
    one_unknown = aggregate([_pod(30.0, 0.1), reset], 95)
    assert one_unknown.escalated is None and "reset" in one_unknown.escalation_error
    whole = aggregate_groups({GroupKey("t1", "a"): [_pod(30.0, 0.1)],
                              GroupKey("t1", "b"): [_pod(10.0, 0.5)]}, 95)
    assert whole.escalated == pytest.approx(0.2)
    assert to_observation(whole).escalated == pytest.approx(0.2)


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

"""The operator's own metrics: one test per metric, plus removal and the HTTP endpoint."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.harness.net import free_port

from tritonscale.adapters.metrics import OperatorMetrics
from tritonscale.core.types import Decision, Observation, Placement, PlacementState

NS, SM = "prod", "resnet50"


def samples(m: OperatorMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the text exposition: (sample name, labels) -> value."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, frozenset(labels.items())))


def names_present(m: OperatorMetrics) -> set[str]:
    return {name for name, _ in samples(m)}


def decision(reason: str = "ScaledUp", **kw: object) -> Decision:
    args: dict[object, object] = {
        "placements": (Placement("int8", "t4-spot", 3),),
        "reason": reason,
        "message": "3 x int8 on t4-spot",
        "predicted_latency_ms": 42.0,
        "cost_per_hour": 1.58,
    }
    args.update(kw)
    return Decision(**args)  # type: ignore[arg-type]


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics()


def test_dedicated_registry_and_build_info(m: OperatorMetrics) -> None:
    other = OperatorMetrics()  # a second instance must not clash (no global registry)
    assert other.registry is not m.registry
    assert value(m, "tritonscale_build_info", version="0.1.0") == 1.0


def test_every_exported_name_has_the_prefix(m: OperatorMetrics) -> None:
    assert m.metric_names()
    assert all(n.startswith("tritonscale_") for n in m.metric_names())


def test_decisions_total_by_reason(m: OperatorMetrics) -> None:
    m.observe_decision(NS, SM, decision("ScaledUp"), 0.1)
    m.observe_decision(NS, SM, decision("ScaledUp"), 0.1)
    m.observe_decision(NS, SM, decision("HeldUnknownSignals"), 0.1)
    lbl = {"namespace": NS, "scaledmodel": SM}
    assert value(m, "tritonscale_decisions_total", **lbl, reason="ScaledUp") == 2
    assert value(m, "tritonscale_decisions_total", **lbl, reason="HeldUnknownSignals") == 1


def test_reconcile_duration_histogram(m: OperatorMetrics) -> None:
    m.observe_decision(NS, SM, decision(), 0.02)
    m.observe_decision(NS, SM, decision(), 3.0)
    m.observe_decision(NS, SM, decision(), float("nan"))  # unknown: not observed
    assert value(m, "tritonscale_reconcile_duration_seconds_count", namespace=NS) == 2
    assert value(m, "tritonscale_reconcile_duration_seconds_sum", namespace=NS) == pytest.approx(
        3.02
    )
    assert value(m, "tritonscale_reconcile_duration_seconds_bucket", namespace=NS, le="0.025") == 1
    assert value(m, "tritonscale_reconcile_duration_seconds_bucket", namespace=NS, le="+Inf") == 2


def test_predicted_latency_cost_and_feasibility(m: OperatorMetrics) -> None:
    m.observe_decision(NS, SM, decision(), 0.1)
    lbl = {"namespace": NS, "scaledmodel": SM}
    assert value(m, "tritonscale_predicted_latency_seconds", **lbl) == pytest.approx(0.042)
    assert value(m, "tritonscale_cost_per_hour_dollars", **lbl) == pytest.approx(1.58)
    assert value(m, "tritonscale_slo_feasible", **lbl) == 1
    m.observe_decision(NS, SM, decision(predicted_latency_ms=None, slo_feasible=False), 0.1)
    assert value(m, "tritonscale_predicted_latency_seconds", **lbl) is None  # gap, not 0
    assert value(m, "tritonscale_slo_feasible", **lbl) == 0


def test_desired_and_ready_replicas_per_variant_and_pool(m: OperatorMetrics) -> None:
    m.observe_placements(
        NS, SM, [PlacementState("fp16", "a100", 2, 1), PlacementState("int8", "t4-spot", 3, 3)]
    )
    lbl = {"namespace": NS, "scaledmodel": SM}
    assert value(m, "tritonscale_desired_replicas", **lbl, variant="fp16", pool="a100") == 2
    assert value(m, "tritonscale_ready_replicas", **lbl, variant="fp16", pool="a100") == 1
    assert value(m, "tritonscale_desired_replicas", **lbl, variant="int8", pool="t4-spot") == 3
    # fp16/a100 left the plan: its series go away rather than freezing at the last value.
    m.observe_placements(NS, SM, [PlacementState("int8", "t4-spot", 4, 3)])
    assert value(m, "tritonscale_desired_replicas", **lbl, variant="fp16", pool="a100") is None
    assert value(m, "tritonscale_ready_replicas", **lbl, variant="fp16", pool="a100") is None
    assert value(m, "tritonscale_desired_replicas", **lbl, variant="int8", pool="t4-spot") == 4


def test_observed_latency_rps_and_target(m: OperatorMetrics) -> None:
    lbl = {"namespace": NS, "scaledmodel": SM}
    m.observe_signals(NS, SM, Observation(rps=120.0, latency_ms=35.0), target_ms=50.0)
    assert value(m, "tritonscale_observed_latency_seconds", **lbl) == pytest.approx(0.035)
    assert value(m, "tritonscale_latency_target_seconds", **lbl) == pytest.approx(0.05)
    assert value(m, "tritonscale_observed_requests_per_second", **lbl) == 120.0
    # NaN / missing are unknown: the series disappears, the target stays.
    m.observe_signals(NS, SM, Observation(rps=math.nan, latency_ms=None), target_ms=50.0)
    assert value(m, "tritonscale_observed_latency_seconds", **lbl) is None
    assert value(m, "tritonscale_observed_requests_per_second", **lbl) is None
    assert value(m, "tritonscale_latency_target_seconds", **lbl) == pytest.approx(0.05)


def test_signal_failures_and_consecutive_failures(m: OperatorMetrics) -> None:
    lbl = {"namespace": NS, "scaledmodel": SM}
    m.signal_failure(NS, SM, "prometheus")
    m.signal_failure(NS, SM, "prometheus")
    m.signal_failure(NS, SM, "triton")
    assert value(m, "tritonscale_signal_failures_total", **lbl, source="prometheus") == 2
    assert value(m, "tritonscale_signal_failures_total", **lbl, source="triton") == 1
    assert value(m, "tritonscale_signal_consecutive_failures", **lbl) == 3
    # A failed observation does not reset the streak; a good one does.
    m.observe_signals(NS, SM, Observation(rps=None, error="timeout"), target_ms=50.0)
    assert value(m, "tritonscale_signal_consecutive_failures", **lbl) == 3
    m.observe_signals(NS, SM, Observation(rps=10.0), target_ms=50.0)
    assert value(m, "tritonscale_signal_consecutive_failures", **lbl) == 0
    # The counter is monotonic.
    assert value(m, "tritonscale_signal_failures_total", **lbl, source="prometheus") == 2


def test_forget_removes_every_series_of_one_scaledmodel(m: OperatorMetrics) -> None:
    for name in (SM, "bert"):
        m.observe_decision(NS, name, decision(), 0.1)
        m.observe_placements(NS, name, [PlacementState("int8", "t4-spot", 1, 1)])
        m.observe_signals(NS, name, Observation(rps=1.0, latency_ms=3.0), target_ms=50.0)
        m.signal_failure(NS, name, "prometheus")
    m.forget(NS, SM)
    m.forget(NS, "never-seen")  # harmless
    left = samples(m)
    assert not [k for k in left if ("scaledmodel", SM) in k[1]]
    assert [k for k in left if ("scaledmodel", "bert") in k[1]]
    # The per-namespace histogram is not per object and stays.
    assert value(m, "tritonscale_reconcile_duration_seconds_count", namespace=NS) == 2


def test_metric_names_cover_what_is_rendered(m: OperatorMetrics) -> None:
    m.observe_decision(NS, SM, decision(), 0.1)
    m.observe_placements(NS, SM, [PlacementState("int8", "t4-spot", 1, 1)])
    m.observe_signals(NS, SM, Observation(rps=1.0, latency_ms=3.0), target_ms=50.0)
    m.signal_failure(NS, SM, "prometheus")
    assert names_present(m) <= m.metric_names()
    for required in (
        "tritonscale_decisions_total",
        "tritonscale_reconcile_duration_seconds_bucket",
        "tritonscale_desired_replicas",
        "tritonscale_ready_replicas",
        "tritonscale_predicted_latency_seconds",
        "tritonscale_observed_latency_seconds",
        "tritonscale_latency_target_seconds",
        "tritonscale_cost_per_hour_dollars",
        "tritonscale_signal_failures_total",
        "tritonscale_signal_consecutive_failures",
    ):
        assert required in names_present(m), required


def test_serve_exposes_metrics_over_http(m: OperatorMetrics) -> None:
    port = free_port()
    m.observe_decision(NS, SM, decision(), 0.1)
    m.serve(port, addr="127.0.0.1")
    m.serve(port, addr="127.0.0.1")  # idempotent: no "address in use"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        m.shutdown()
    want = 'tritonscale_decisions_total{namespace="prod",reason="ScaledUp",scaledmodel="resnet50"}'
    assert want in body

"""The operator's signal routing (handlers/signals.py) and metrics listener."""

from __future__ import annotations

from typing import Any, ClassVar

from tests.harness.fakes import load_example

from tritonscale.adapters.metrics import OperatorMetrics
from tritonscale.adapters.signals import GroupKey, Signals
from tritonscale.core.spec import parse_spec
from tritonscale.core.types import Decision, Observation, Placement, PlacementState
from tritonscale.handlers.reconcile import Outcome
from tritonscale.handlers.signals import SpecSignalSource
from tritonscale.handlers.telemetry import MetricsListener


def _spec(source: str = "prometheus") -> Any:
    doc = load_example("resnet50.yaml")["spec"]
    if source != "prometheus":
        doc["metrics"] = {"source": source}
    return parse_spec(doc)


class FakeProm:
    instances = 0

    def __init__(self, cfg: Any) -> None:
        FakeProm.instances += 1
        self.calls: list[tuple[str, str, float]] = []

    def signals(self, namespace: str, model: str, percentile: float) -> Signals:
        self.calls.append((namespace, model, percentile))
        return Signals(percentile=percentile, request_rate=120.0, latency_ms=12.0,
                       pending_requests=1.0,
                       groups={GroupKey("int8", "t4-spot"): Signals(
                           percentile=percentile, request_rate=120.0, latency_ms=12.0,
                           pending_requests=1.0)})


def test_prometheus_route_and_client_reuse() -> None:
    FakeProm.instances = 0
    src = SpecSignalSource(prometheus_factory=FakeProm)
    obs = src.observe("ml", "resnet50", _spec())
    assert obs.ok and obs.rps == 120.0 and obs.latency_ms == 12.0
    assert obs.per_placement_rps == {("int8", "t4-spot"): 120.0}
    src.observe("ml", "other", _spec())
    assert FakeProm.instances == 1  # one client per Prometheus configuration


def test_source_errors_become_unknown() -> None:
    def boom(cfg: Any) -> Any:
        raise ConnectionError("refused")

    obs = SpecSignalSource(prometheus_factory=boom).observe("ml", "r", _spec())
    # A fixed text: an exception's message may quote an untrusted server's answer.
    assert obs.rps is None and obs.error == "prometheus: internal error (ConnectionError)"


def test_none_source() -> None:
    obs = SpecSignalSource().observe("ml", "r", _spec("none"))
    assert not obs.ok and "none" in (obs.error or "")


def _pod(uid: str, ip: str, variant: str = "int8", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": uid, "labels": {
            "tritonscale.io/variant": variant, "tritonscale.io/pool": "t4-spot"}},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class FakeScraper:
    made: ClassVar[list[str]] = []
    closed: ClassVar[list[str]] = []

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        FakeScraper.made.append(url)

    def signals(self, percentile: float) -> Signals:
        return Signals(percentile=percentile, request_rate=10.0, latency_ms=5.0,
                       pending_requests=0.0)

    def close(self) -> None:
        FakeScraper.closed.append(self.url)


def test_triton_route_scrapes_ready_pods_and_forgets_gone_ones() -> None:
    FakeScraper.made, FakeScraper.closed = [], []
    pods = [_pod("a", "10.0.0.1"), _pod("b", "10.0.0.2"), _pod("c", "10.0.0.3", ready=False)]
    src = SpecSignalSource(list_pods=lambda ns, name: pods, scraper_factory=FakeScraper)
    obs = src.observe("ml", "resnet50", _spec("triton"))
    assert obs.ok and obs.rps == 20.0
    assert FakeScraper.made == ["http://10.0.0.1:8002/metrics", "http://10.0.0.2:8002/metrics"]
    pods.pop(0)
    src.observe("ml", "resnet50", _spec("triton"))
    assert FakeScraper.closed == ["http://10.0.0.1:8002/metrics"]
    assert len(FakeScraper.made) == 2  # b's scraper kept (a rate needs two scrapes)
    src.forget("ml", "resnet50")
    assert FakeScraper.closed[-1] == "http://10.0.0.2:8002/metrics"


def test_triton_without_pods() -> None:
    src = SpecSignalSource(list_pods=lambda ns, name: [], scraper_factory=FakeScraper)
    assert "no Ready" in (src.observe("ml", "r", _spec("triton")).error or "")


def test_metrics_listener() -> None:
    m = OperatorMetrics()
    listener = MetricsListener(m)
    spec = _spec()
    out = Outcome(
        valid=True, namespace="ml", name="resnet50", spec=spec,
        decision=Decision(placements=(Placement("int8", "t4-spot", 2),), reason="ScaledUp",
                          message="m", cost_per_hour=0.4, predicted_latency_ms=9.0),
        observation=Observation(rps=None, error="prometheus down"),
        placements=(PlacementState("int8", "t4-spot", 2, 1),), duration_seconds=0.01,
    )
    listener(out)
    text = m.render().decode()
    assert 'tritonscale_decisions_total{namespace="ml",reason="ScaledUp",scaledmodel="resnet50"}' \
        in text
    assert "tritonscale_ready_replicas" in text and "tritonscale_signal_failures_total" in text
    listener.forget("ml", "resnet50")
    assert 'scaledmodel="resnet50"' not in m.render().decode()


def test_prometheus_breaker_skips_a_dead_server() -> None:
    calls: list[str] = []
    now = [100.0]

    class Dead:
        def __init__(self, cfg: Any) -> None:
            pass

        def signals(self, namespace: str, model: str, percentile: float) -> Signals:
            calls.append(namespace)
            return Signals.unknown(percentile, "Prometheus: connection refused")

    src = SpecSignalSource(prometheus_factory=Dead, clock=lambda: now[0], breaker_seconds=10)
    first = src.observe("a", "m1", _spec())
    second = src.observe("b", "m2", _spec())
    assert calls == ["a"]
    assert first.error == "Prometheus: connection refused"
    assert "not retried" in (second.error or "")
    now[0] += 11
    src.observe("c", "m3", _spec())
    assert calls == ["a", "c"]

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

    def signals(self, namespace: str, model: str, percentile: float,
                cascade: bool = False) -> Signals:
        self.calls.append((namespace, model, percentile))
        self.cascade = cascade
        return Signals(percentile=percentile, request_rate=120.0, latency_ms=12.0,
                       pending_requests=1.0, escalated=0.25 if cascade else None,
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


def _cascade_spec() -> Any:
    doc = load_example("bert-cascade.yaml")["spec"]
    doc["metrics"] = {"source": "prometheus",
                      "prometheus": {"url": "http://prometheus.monitoring.svc:9090"}}
    return parse_spec(doc)


def test_a_cascade_is_observed_through_its_router() -> None:
    """Demand and end-to-end latency are the router's; its escalation rate too."""
    made: list[FakeProm] = []

    def factory(cfg: Any) -> FakeProm:
        made.append(FakeProm(cfg))
        return made[-1]

    obs = SpecSignalSource(prometheus_factory=factory).observe("ml", "bc", _cascade_spec())
    assert made[0].calls == [("ml", "bert-qa-cascade", 95.0)] and made[0].cascade
    assert obs.ok and obs.escalated == 0.25
    plain = SpecSignalSource(prometheus_factory=factory).observe("ml", "r", _spec())
    assert made[1].calls[0][1] == "resnet50" and not made[1].cascade
    assert plain.escalated is None


def test_a_cascade_is_scraped_on_its_tier1_pods_only() -> None:
    doc = load_example("bert-cascade.yaml")["spec"]
    doc["metrics"] = {"source": "triton"}
    spec = parse_spec(doc)
    made: list[tuple[str, str]] = []

    def scraper(url: str, model: str) -> FakeScraper:
        made.append((url, model))
        return FakeScraper(url, model)

    pods = [_pod("a", "10.0.0.1", variant="distil-int8"),
            _pod("b", "10.0.0.2", variant="large-int8")]
    src = SpecSignalSource(list_pods=lambda ns, n: pods, scraper_factory=scraper)
    src.observe("ml", "bc", spec)
    assert made == [("http://10.0.0.1:8002/metrics", "bert-qa-cascade")]


def test_escalation_query_reads_the_routers_counters_escaped() -> None:
    from tritonscale.adapters.prometheus import PrometheusSignals

    p = PrometheusSignals("http://p:9090", window_s=30)
    expr = p.escalation_expr('ml"}) or vector(1', "bert-qa-cascade")
    sel = 'namespace="ml\\"}) or vector(1",model="bert-qa-cascade"'
    assert expr == (f"sum(rate(tritonscale_cascade_escalated_total{{{sel}}}[30s])) / "
                    f"sum(rate(tritonscale_cascade_requests_total{{{sel}}}[30s]))")


def test_a_routers_own_latency_replaces_tritons_hand_off_time() -> None:
    """The router answers after its execute returned: Triton's duration and summary of
    the router end at the hand-off, so a scrape takes the router's own series."""
    from tritonscale.adapters.triton import MetricsSnapshot, signals_between

    def text(success: int, triton_us: float, own_us: float, own_p95: str) -> str:
        lab = 'model="m-cascade",version="1"'
        return "\n".join([
            "# TYPE nv_inference_request_success counter",
            f"nv_inference_request_success{{{lab}}} {success}",
            "# TYPE nv_inference_request_duration_us counter",
            f"nv_inference_request_duration_us{{{lab}}} {triton_us}",
            "# TYPE nv_inference_request_summary_us summary",
            f'nv_inference_request_summary_us{{{lab},quantile="0.95"}} 300',
            "# TYPE tritonscale_cascade_request_duration_us counter",
            f'tritonscale_cascade_request_duration_us{{model="m-cascade"}} {own_us}',
            "# TYPE tritonscale_cascade_request_summary_us gauge",
            f'tritonscale_cascade_request_summary_us{{model="m-cascade",quantile="0.95"}} '
            f"{own_p95}",
            "",
        ])

    a = MetricsSnapshot.parse(text(10, 3_000.0, 200_000.0, "41000"), "m-cascade", 0.0)
    b = MetricsSnapshot.parse(text(30, 9_000.0, 700_000.0, "45000"), "m-cascade", 2.0)
    assert b.quantiles == {0.95: 45000.0} and b.duration_us == 700_000.0
    sig = signals_between(a, b, 95.0)
    assert sig.latency_ms == 45.0 and not sig.latency_is_mean
    mean = signals_between(a, b, 50.0)  # no p50 exported: the router's mean, 25 ms
    assert mean.latency_is_mean and mean.latency_ms == 500_000.0 / 20 / 1000
    # An idle router exports NaN: no quantile (the mean stands in), as Triton's summary.
    idle = MetricsSnapshot.parse(text(30, 9_000.0, 700_000.0, "NaN"), "m-cascade", 4.0)
    assert idle.quantiles == {} and idle.duration_us == 700_000.0
    # A model without the router's series keeps Triton's.
    plain = MetricsSnapshot.parse(text(1, 3_000.0, 1.0, "1").replace("m-cascade", "x")
                                  .replace('model="x",version', 'model="m",version'),
                                  "m", 0.0)
    assert plain.quantiles == {0.95: 300.0} and plain.duration_us == 3_000.0


def test_latency_queries_prefer_the_routers_own_series() -> None:
    from tritonscale.adapters.prometheus import PrometheusSignals

    p = PrometheusSignals("http://p:9090", window_s=30)
    sel = 'namespace="ml",model="bert-qa-cascade"'
    assert p.percentile_expr("ml", "bert-qa-cascade", 95.0) == (
        f'max(tritonscale_cascade_request_summary_us{{{sel},quantile="0.95"}} >= 0) / 1000'
        f' or (max(nv_inference_request_summary_us{{{sel},quantile="0.95"}} >= 0) / 1000'
        f' unless count(tritonscale_cascade_request_summary_us{{{sel},quantile="0.95"}}))')
    ok = f"sum(rate(nv_inference_request_success{{{sel}}}[30s])) / 1000"
    assert p.mean_latency_expr("ml", "bert-qa-cascade") == (
        f"sum(rate(tritonscale_cascade_request_duration_us{{{sel}}}[30s])) / {ok} or "
        f"sum(rate(nv_inference_request_duration_us{{{sel}}}[30s])) / {ok}")


def test_a_routers_own_pending_count_replaces_tritons() -> None:
    """The router holds its requests after its execute returned (Triton's pending count
    of the router is ~0 even while hundreds wait for its threads): both sources read
    the router's own gauge, and a model without it keeps Triton's."""
    from tritonscale.adapters.prometheus import PrometheusSignals
    from tritonscale.adapters.triton import MetricsSnapshot

    lab = 'model="m-cascade",version="1"'
    text = "\n".join([
        "# TYPE nv_inference_pending_request_count gauge",
        f"nv_inference_pending_request_count{{{lab}}} 0",
        "# TYPE tritonscale_cascade_pending_requests gauge",
        'tritonscale_cascade_pending_requests{model="m-cascade"} 737',
        "",
    ])
    assert MetricsSnapshot.parse(text, "m-cascade", 0.0).pending == 737.0
    plain = text.replace('{model="m-cascade"} 737', '{model="other"} 737')
    assert MetricsSnapshot.parse(plain, "m-cascade", 0.0).pending == 0.0

    p = PrometheusSignals("http://p:9090", window_s=30)
    sel = 'namespace="ml",model="bert-qa-cascade"'
    assert p.pending_expr("ml", "bert-qa-cascade") == (
        f"sum(tritonscale_cascade_pending_requests{{{sel}}}) or "
        f"sum(nv_inference_pending_request_count{{{sel}}})")

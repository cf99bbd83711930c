"""The Prometheus signal adapter against a real Prometheus scraping real tritonservers.

Order matters a little: the load test runs first on the fresh fleet so Triton's
latency summaries (a sliding ~60 s window) contain only its own requests and the
three warm-up requests per server.
"""

from __future__ import annotations

import math
import time

import pytest
from tests.harness.real.load import LoadResult, percentile, run_parallel, run_poisson_load
from tests.harness.real.support import (
    HOSTILE_MODEL,
    HOSTILE_NAMESPACE,
    MODEL,
    NAMESPACE,
    Fleet,
    wait_for,
)

from tritonscale.adapters.prometheus import LabelMapping, PrometheusSignals
from tritonscale.adapters.signals import GroupKey, to_observation
from tritonscale.adapters.triton import MetricsScraper

pytestmark = [pytest.mark.triton, pytest.mark.prometheus]

WINDOW_S = 15
LOAD_S = 22.0
RATES = {"fp16": 30.0, "int8": 15.0}

# Rate tolerance: both sides count the same completed requests, so Poisson noise
# cancels.  What remains is rate()'s extrapolation from the first/last scrape inside
# the window to its edges (up to ~1 s of traffic at each end, i.e. ~1/15 of the window
# in the worst case, but only the *fluctuation* of that second's count, a few %), and
# client-vs-server clock offset of a response (~1 ms).  8 % covers it with margin.
RATE_TOLERANCE = 0.08


# Latency: 10 % of the requests ask the model for 40 ms of extra compute, so the latency
# distribution is bimodal -- p50 around 10 ms, the mean around 15 ms, p95 inside the
# slow mode near 50 ms.  Triton measures from request arrival to response send; the
# client adds HTTP/JSON handling and GIL/CPU contention in this process (12 sender
# threads, 2 servers and Prometheus on 2 cores), so the client side is *higher*: by
# ~1-3 ms on an idle machine, by up to ~20 ms with the cores saturated by other work.
# Triton's summary quantiles also carry CKMS rank error (0.001 for p95).  So:
# server <= client + 1 ms, and server >= client - (4 ms + 30 %).  The lower bound still
# separates p95 (~50 ms) from p50 and the mean (10-15 ms), and catches unit errors.
SLOW_FRACTION = 0.10
SLOW_MS = 40.0


def assert_latency_close(
    server_ms: float, client_ms: float, what: str, relative: float = 0.30
) -> None:
    assert server_ms <= client_ms + 1.0, f"{what}: server {server_ms:.2f} > client {client_ms:.2f}"
    assert server_ms >= client_ms - (4.0 + relative * client_ms), (
        f"{what}: server {server_ms:.2f} far below client {client_ms:.2f}"
    )


def client_rate(result: LoadResult, at: float) -> float:
    return len(result.completed_between(at - WINDOW_S, at)) / WINDOW_S


def test_signals_match_client_measurements(fleet: Fleet) -> None:
    adapter = PrometheusSignals(fleet.prometheus.url, timeout_s=5, window_s=WINDOW_S)
    jobs = [(g.server.url, MODEL, RATES[g.variant], seed) for seed, g in enumerate(fleet.groups, 1)]
    loads = run_parallel(jobs, LOAD_S, slow_fraction=SLOW_FRACTION, slow_ms=SLOW_MS)
    results = dict(zip(("fp16", "int8"), loads, strict=True))
    for name, res in results.items():
        assert res.errors == 0, f"{name}: {res.errors} failed requests"
        # The generator roughly kept up (the comparison itself uses what was actually
        # sent and completed, so lateness only matters if it distorts the load badly).
        late = sorted(r.sent - r.scheduled for r in res.records)
        assert late[len(late) // 2] < 0.05, f"{name}: median send {late[len(late) // 2]:.3f}s late"
        assert late[-1] < 2.0, f"{name}: a send was {late[-1]:.3f}s late"

    # Evaluate inside the load period: the window [at-15, at] saw steady traffic.
    at = max(r.started for r in results.values()) + LOAD_S - 2.0
    wait_for(lambda: time.time() > at + 2, 10, "prometheus to scrape past the window")
    sig = adapter.signals(NAMESPACE, MODEL, 95, at=at)
    assert sig.ok, sig.error
    assert adapter.consecutive_failures == 0

    expected_total = sum(client_rate(r, at) for r in results.values())
    assert sig.request_rate is not None
    print(f"\nrate: prometheus {sig.request_rate:.3f}/s, client {expected_total:.3f}/s")
    assert sig.request_rate == pytest.approx(expected_total, rel=RATE_TOLERANCE)

    groups = {g.variant: GroupKey(g.variant, g.pool) for g in fleet.groups}
    assert set(sig.groups) == set(groups.values())
    for variant, key in groups.items():
        g = sig.groups[key]
        res = results[variant]
        assert g.ok, g.error
        want_rate = client_rate(res, at)
        p95 = percentile(res.latencies_ms(until=at), 95)
        p50 = percentile(res.latencies_ms(until=at), 50)
        server_p50 = adapter.latency_by_group(NAMESPACE, MODEL, 50, at=at).values[key].value
        assert server_p50 is not None
        print(
            f"{key}: rate {g.request_rate:.3f} vs client {want_rate:.3f}; "
            f"p95 {g.latency_ms:.2f} ms vs client {p95:.2f} ms; "
            f"p50 {server_p50:.2f} ms vs client {p50:.2f} ms; queue {g.queue_ms:.2f} ms"
        )
        assert g.request_rate == pytest.approx(want_rate, rel=RATE_TOLERANCE)
        assert g.latency_ms is not None and not g.latency_is_mean
        assert_latency_close(g.latency_ms, p95, f"{key} p95")
        # At the median (~10 ms) the client's own delay is a larger share: 50 %.
        assert_latency_close(server_p50, p50, f"{key} p50", relative=0.5)
        assert g.latency_ms > 2 * server_p50  # the bimodal shape is seen, p95 is not p50
        assert g.queue_ms is not None and 0 <= g.queue_ms < g.latency_ms
        assert g.pending_requests is not None and g.pending_requests >= 0

    # Whole-model latency is the max over pods: an upper bound of the fleet's p95.
    assert sig.latency_ms == pytest.approx(max(g.latency_ms or 0 for g in sig.groups.values()))

    # The single-signal methods agree with signals().
    rate = adapter.request_rate(NAMESPACE, MODEL, at=at)
    assert rate.value == pytest.approx(sig.request_rate)
    by_group = adapter.request_rate_by_group(NAMESPACE, MODEL, at=at)
    assert by_group.ok and set(by_group.values) == set(groups.values())
    assert adapter.pending_requests(NAMESPACE, MODEL, at=at).ok
    assert adapter.queue_time(NAMESPACE, MODEL, at=at).ok
    assert adapter.queue_time_by_group(NAMESPACE, MODEL, at=at).ok
    assert adapter.pending_requests_by_group(NAMESPACE, MODEL, at=at).ok
    lat_groups = adapter.latency_by_group(NAMESPACE, MODEL, 95, at=at)
    assert {k: r.value for k, r in lat_groups.values.items()} == {
        k: g.latency_ms for k, g in sig.groups.items()
    }

    # p97 is not among Triton's exported quantiles: the adapter falls back to the MEAN
    # over the window and says so.  Compared with the client's mean, same tolerance.
    mean = adapter.latency(NAMESPACE, MODEL, 97, at=at)
    window = [r for res in results.values() for r in res.completed_between(at - WINDOW_S, at)]
    client_mean = sum(r.latency_ms for r in window) / len(window)
    print(f"mean fallback: prometheus {mean.value:.2f} ms, client {client_mean:.2f} ms")
    assert mean.ok and mean.is_mean
    assert mean.value is not None
    assert_latency_close(mean.value, client_mean, "mean latency")
    sig97 = adapter.signals(NAMESPACE, MODEL, 97, at=at)
    assert sig97.latency_is_mean and all(g.latency_is_mean for g in sig97.groups.values())

    # Another label mapping over the same series gives the same breakdown.
    aliased = PrometheusSignals(
        fleet.prometheus.url,
        window_s=WINDOW_S,
        labels=LabelMapping(variant="variant", pool="pool", extra=(("job", "triton"),)),
    )
    alias_sig = aliased.signals(NAMESPACE, MODEL, 95, at=at)
    assert alias_sig.ok
    assert {k: g.request_rate for k, g in alias_sig.groups.items()} == {
        k: g.request_rate for k, g in sig.groups.items()
    }

    obs = to_observation(sig)
    assert obs.ok and obs.rps == sig.request_rate
    assert set(obs.per_placement_rps) == {(k.variant, k.pool) for k in groups.values()}


def test_direct_scrape_rate_matches_client(fleet: Fleet) -> None:
    """No Prometheus: two scrapes of the metrics port, counter deltas -> rate."""
    g = fleet.int8
    scraper = MetricsScraper(g.server.metrics_url, MODEL, timeout_s=2)
    first = scraper.signals(95)
    assert not first.ok and "two" in first.error
    t0 = time.time()
    res = run_poisson_load(g.server.url, MODEL, rate=20.0, duration_s=6.0, seed=7)
    second = scraper.signals(95)
    t1 = time.time()
    assert second.ok, second.error
    # Every request of the load completed between the two scrapes, nothing else ran.
    want = len(res.ok_records) / (t1 - t0)
    print(f"\ndirect scrape: rate {second.request_rate:.3f}/s vs client {want:.3f}/s")
    # Elapsed time is measured around the scrape calls (ms apart): 3 % is ample.
    assert second.request_rate == pytest.approx(want, rel=0.03)
    assert second.latency_ms is not None and second.queue_ms is not None
    assert second.pending_requests == 0
    assert scraper.consecutive_failures == 0


def test_hostile_label_values_cannot_inject(fleet: Fleet) -> None:
    adapter = PrometheusSignals(fleet.prometheus.url, timeout_s=5, window_s=WINDOW_S)
    # The hostile names exist as real label values (job "hostile"); escaped, they
    # match exactly those series -- proof the quoting round-trips byte for byte.
    wait_for(
        lambda: adapter.request_rate(HOSTILE_NAMESPACE, HOSTILE_MODEL).ok,
        15,
        "the hostile job's series",
    )
    sig = adapter.signals(HOSTILE_NAMESPACE, HOSTILE_MODEL, 95)
    assert sig.request_rate is not None
    assert set(sig.groups) == {GroupKey(fleet.fp16.variant, fleet.fp16.pool)}
    # Names built to break out of the matcher match nothing: unknown, never vector(1).
    for ns, model in [
        (NAMESPACE, 'sleepy"}or vector(1)#'),
        (NAMESPACE, 'sleepy"} or vector(1) or {a="'),
        ('prod"} or vector(1) #', MODEL),
        (NAMESPACE, "sleepy\\"),
    ]:
        reading = adapter.request_rate(ns, model)
        assert reading.value is None and "no data" in reading.error, (ns, model, reading)
        assert not adapter.signals(ns, model, 95).ok
    assert adapter.consecutive_failures >= 1


def test_quantile_and_selector_formatting() -> None:
    from tritonscale.adapters.prometheus import promql_string, quantile_label

    assert [quantile_label(p) for p in (50, 90, 95, 99, 99.9)] == [
        "0.5",
        "0.9",
        "0.95",
        "0.99",
        "0.999",
    ]
    assert promql_string('a"}or vector(1)#') == '"a\\"}or vector(1)#"'
    assert promql_string("x\\\n") == '"x\\\\\\n"'
    with pytest.raises(ValueError):
        LabelMapping(variant='v"}')
    with pytest.raises(ValueError):
        LabelMapping(extra=(("__name__", "x"),))
    adapter = PrometheusSignals("http://127.0.0.1:9")
    for bad in (0, 100, -1, math.nan, math.inf):
        r = adapter.latency(NAMESPACE, MODEL, bad)
        assert r.value is None and "percentile" in r.error

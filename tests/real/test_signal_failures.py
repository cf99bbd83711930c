"""Failure modes of the signal sources: every one ends as "unknown", never an exception.

* a real Prometheus stopped in the middle of a test, then started again;
* a fake Prometheus answering garbage, errors, NaN/Inf, nothing, or too slowly;
* a real tritonserver stopped: readiness false, statistics and scrapes unknown.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.harness.real.servers import PrometheusServer, ScrapeTarget, wait_until_scraped
from tests.harness.real.support import MODEL, NAMESPACE, Fleet, Timing, TritonFactory, wait_for

from tritonscale.adapters.prometheus import PrometheusSignals
from tritonscale.adapters.signals import to_observation
from tritonscale.adapters.triton import MetricsScraper, TritonPod


@pytest.mark.triton
@pytest.mark.prometheus
def test_prometheus_stopped_mid_test(fleet: Fleet, real_log_dir: Path) -> None:
    g = fleet.fp16
    target = ScrapeTarget(
        f"127.0.0.1:{g.server.metrics_port}",
        {
            "namespace": NAMESPACE,
            "tritonscale_io_variant": g.variant,
            "tritonscale_io_pool": g.pool,
        },
    )
    prom = PrometheusServer(workdir=real_log_dir / "prometheus-stopped", targets=[target])
    prom.start()
    try:
        wait_until_scraped(prom, 1)
        adapter = PrometheusSignals(prom.url, timeout_s=2, window_s=5)
        # rate() needs two samples in its window: wait for them, then it is known.
        wait_for(lambda: adapter.signals(NAMESPACE, MODEL, 95).ok, 20, "a known rate")
        assert adapter.consecutive_failures == 0

        prom.stop()
        first = adapter.signals(NAMESPACE, MODEL, 95)
        assert not first.ok
        assert first.request_rate is None and first.latency_ms is None
        assert first.queue_ms is None and first.pending_requests is None
        assert first.error == "Prometheus: connection refused"
        assert adapter.consecutive_failures == 1
        assert adapter.request_rate(NAMESPACE, MODEL).value is None
        assert adapter.latency(NAMESPACE, MODEL, 95).value is None
        assert not adapter.request_rate_by_group(NAMESPACE, MODEL).ok
        assert adapter.consecutive_failures == 4
        obs = to_observation(first)
        assert not obs.ok and obs.error

        # Back on the same port and storage: the next poll succeeds, the count resets.
        prom.start()
        wait_for(lambda: adapter.signals(NAMESPACE, MODEL, 95).ok, 20, "recovery")
        assert adapter.consecutive_failures == 0
    finally:
        prom.stop()


def _vector(value: str) -> bytes:
    sample = {
        "metric": {"tritonscale_io_variant": "v", "tritonscale_io_pool": "p"},
        "value": [1, value],
    }
    body = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
    return json.dumps(body).encode()


# mode -> (status, content type, body, delay seconds)
GARBAGE: dict[str, tuple[int, str, bytes, float]] = {
    "html": (200, "text/html", b"<html><body>502 Bad Gateway</body></html>", 0.0),
    "truncated-json": (200, "application/json", b'{"status":"success","data":{"resu', 0.0),
    "result-not-a-list": (
        200,
        "application/json",
        b'{"status":"success","data":{"resultType":"vector","result":{"a":1}}}',
        0.0,
    ),
    "sample-without-value": (
        200,
        "application/json",
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}',
        0.0,
    ),
    "http-500": (500, "text/plain", b"internal error", 0.0),
    "query-error": (
        400,
        "application/json",
        b'{"status":"error","errorType":"bad_data","error":"parse error"}',
        0.0,
    ),
    "empty": (
        200,
        "application/json",
        b'{"status":"success","data":{"resultType":"vector","result":[]}}',
        0.0,
    ),
    "nan": (200, "application/json", _vector("NaN"), 0.0),
    "inf": (200, "application/json", _vector("+Inf"), 0.0),
    "not-a-number": (200, "application/json", _vector("fast"), 0.0),
    "slower-than-timeout": (200, "application/json", _vector("1"), 1.5),
}


@pytest.fixture
def fake_prometheus(request: pytest.FixtureRequest) -> Iterator[str]:
    status, ctype, body, delay = GARBAGE[request.param]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout): nothing to answer
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.prometheus
@pytest.mark.parametrize("fake_prometheus", sorted(GARBAGE), indirect=True)
def test_garbage_answers_are_unknown(fake_prometheus: str) -> None:
    adapter = PrometheusSignals(fake_prometheus, timeout_s=0.5, window_s=60)
    started = time.monotonic()
    reading = adapter.request_rate(NAMESPACE, MODEL)
    assert reading.value is None and not reading.ok and reading.error
    assert adapter.consecutive_failures == 1
    assert adapter.latency(NAMESPACE, MODEL, 95).value is None
    assert adapter.queue_time(NAMESPACE, MODEL).value is None
    assert adapter.pending_requests(NAMESPACE, MODEL).value is None
    groups = adapter.request_rate_by_group(NAMESPACE, MODEL)
    assert all(r.value is None for r in groups.values.values())
    sig = adapter.signals(NAMESPACE, MODEL, 95)
    assert not sig.ok and sig.request_rate is None and sig.error
    assert adapter.consecutive_failures == 6
    assert adapter.last_error
    # A timeout costs the timeout, not a retry storm: at most ~6 timed-out calls here.
    assert time.monotonic() - started < 6 * 0.5 + 5


@pytest.mark.triton
def test_triton_stopped(triton_factory: TritonFactory) -> None:
    server = triton_factory.start("stopped", {MODEL: Timing(base_ms=2.0, per_item_ms=0.5)})
    pod = TritonPod(server.url, timeout_s=1.0)
    scraper = MetricsScraper(server.metrics_url, MODEL, timeout_s=1.0)
    ready = pod.readiness(MODEL)
    assert ready.ok and ready.live and ready.ready and ready.model_ready
    assert not pod.readiness("no-such-model").model_ready
    assert pod.statistics(MODEL) is not None
    scraper.signals(95)  # first scrape: baseline
    assert scraper.signals(95).ok

    server.stop()
    down = pod.readiness(MODEL)
    assert not down.ok and not down.live and not down.ready and not down.model_ready
    assert down.error
    assert pod.statistics(MODEL) is None and pod.last_error
    gone = scraper.signals(95)
    assert not gone.ok and gone.request_rate is None and "scrape" in gone.error
    assert scraper.consecutive_failures == 1
    assert not scraper.signals(95).ok
    assert scraper.consecutive_failures == 2

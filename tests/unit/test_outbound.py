"""Requests to servers a ScaledModel names: no redirects, bounded, errors never quote.

A real local HTTP server plays the hostile (or merely internal) endpoint; the secret
it answers must never appear in any error text, and a redirect target must never be
contacted.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import urllib3.exceptions
from tests.harness.net import HUNG_HOST

from tritonscale.adapters import outbound
from tritonscale.adapters.prometheus import NOT_ALLOWED, PrometheusSignals, UrlAllowlist
from tritonscale.adapters.triton import MetricsScraper

SECRET = "AKIA-SECRET-TOKEN-0123456789"


@dataclass
class Hostile:
    url: str
    paths: list[str] = field(default_factory=list)
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    h = Hostile(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            h.paths.append(self.path)
            time.sleep(h.delay)
            try:
                self.send_response(h.status)
                for k, v in h.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(h.body)))
                self.end_headers()
                self.wfile.write(h.body)
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    h.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield h
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_an_error_and_its_target_is_never_requested(
    hostile: Hostile, status: int
) -> None:
    hostile.status = status
    hostile.headers = {"Location": f"{hostile.url}/latest/meta-data/{SECRET}"}
    hostile.body = SECRET.encode()
    with pytest.raises(outbound.OutboundError) as ei:
        outbound.get(outbound.NoRedirectSession(), f"{hostile.url}/api/v1/query",
                     peer="Prometheus", timeout_s=2)
    assert str(ei.value) == f"HTTP {status} from Prometheus (redirects are not followed)"
    assert hostile.paths == ["/api/v1/query"]


def test_a_plain_session_asking_for_redirects_still_gets_none(hostile: Hostile) -> None:
    hostile.status = 302
    hostile.headers = {"Location": f"{hostile.url}/elsewhere"}
    resp = outbound.NoRedirectSession().get(f"{hostile.url}/x", allow_redirects=True, timeout=2)
    assert resp.status_code == 302 and hostile.paths == ["/x"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
def test_error_status_never_quotes_the_body(hostile: Hostile, status: int) -> None:
    hostile.status, hostile.body = status, f'{{"error": "{SECRET}"}}'.encode()
    with pytest.raises(outbound.OutboundError) as ei:
        outbound.get(requests.Session(), hostile.url, peer="Prometheus", timeout_s=2)
    assert str(ei.value) == f"HTTP {status} from Prometheus"
    assert ei.value.status == status


def test_body_size_is_bounded(hostile: Hostile) -> None:
    hostile.body = b"x" * 5000
    with pytest.raises(outbound.OutboundError, match=r"^response too large$"):
        outbound.get(requests.Session(), hostile.url, peer="P", timeout_s=2, max_bytes=4096)
    assert outbound.get(requests.Session(), hostile.url, peer="P", timeout_s=2) == hostile.body


def test_timeout_and_refused_are_fixed_phrases(hostile: Hostile) -> None:
    hostile.delay = 1.0
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match=r"^timeout$"):
        outbound.get(requests.Session(), hostile.url, peer="P", timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    with pytest.raises(outbound.OutboundError, match=r"^connection refused$"):
        outbound.get(requests.Session(), f"http://127.0.0.1:{_closed_port()}/", peer="P",
                     timeout_s=2)


def _max_retry(reason: Exception) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "/x", reason)  # type: ignore[arg-type]


def _new_conn(cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as e:
            raise urllib3.exceptions.NewConnectionError(None, f"failed: {SECRET}") from e  # type: ignore[arg-type]
    except urllib3.exceptions.NewConnectionError as outer:
        return outer


@pytest.mark.parametrize(("exc", "text"), [
    (requests.ConnectionError(_max_retry(_new_conn(ConnectionRefusedError(111, SECRET)))),
     "connection refused"),
    (_max_retry(_new_conn(OSError(113, "No route to host"))), "connection failed"),
    (_max_retry(urllib3.exceptions.ConnectTimeoutError(None, SECRET)), "timeout"),
    (requests.ReadTimeout(SECRET), "timeout"),
    (urllib3.exceptions.ReadTimeoutError(None, "/", SECRET), "timeout"),  # type: ignore[arg-type]
    (socket.gaierror(-2, SECRET), "host name not resolved"),
    (requests.exceptions.SSLError(SECRET), "TLS error"),
    (requests.exceptions.ChunkedEncodingError(SECRET), "invalid response"),
    (ValueError(SECRET), "invalid response"),
    (RuntimeError(SECRET), "invalid response"),
])
def test_classify(exc: BaseException, text: str) -> None:
    assert outbound.classify(exc) == text


# -- Prometheus adapter ------------------------------------------------------------


def test_prometheus_error_status_and_garbage_never_reach_the_error(hostile: Hostile) -> None:
    adapter = PrometheusSignals(hostile.url, timeout_s=2)
    hostile.status, hostile.body = 403, SECRET.encode()
    sig = adapter.signals("ns", "m", 95)
    assert sig.error == "HTTP 403 from Prometheus" and adapter.last_error == sig.error
    hostile.status = 200
    for body in (SECRET, '{"status":"success","data":{"result":["' + SECRET + '"]}}',
                 '{"status":"success","data":{"result":[{"metric":"' + SECRET + '"}]}}'):
        hostile.body = body.encode()
        sig = adapter.signals("ns", "m", 95)
        assert sig.error == "Prometheus: invalid response", body
        assert SECRET not in adapter.last_error


def test_prometheus_redirect_not_followed(hostile: Hostile) -> None:
    hostile.status, hostile.body = 302, SECRET.encode()
    hostile.headers = {"Location": f"{hostile.url}/stolen"}
    sig = PrometheusSignals(hostile.url, timeout_s=2).signals("ns", "m", 95)
    assert sig.error == "HTTP 302 from Prometheus (redirects are not followed)"
    assert all(p.startswith("/api/v1/query?") for p in hostile.paths), hostile.paths
    assert len(hostile.paths) == 1  # a failed query stops the poll


def test_prometheus_not_allowed_sends_nothing(hostile: Hostile) -> None:
    adapter = PrometheusSignals(hostile.url, timeout_s=2, allowed=False)
    sig = adapter.signals("ns", "m", 95)
    assert sig.error == NOT_ALLOWED and hostile.paths == []


def test_scraper_does_not_follow_redirects_or_quote_bad_text(hostile: Hostile) -> None:
    hostile.status, hostile.body = 302, SECRET.encode()
    hostile.headers = {"Location": f"{hostile.url}/stolen"}
    scraper = MetricsScraper(f"{hostile.url}/metrics", "m", timeout_s=2)
    assert scraper.scrape() is None
    assert scraper.last_error.endswith("HTTP 302 from Triton pod (redirects are not followed)")
    assert hostile.paths == ["/metrics"]
    hostile.status, hostile.body = 200, f"this is not {SECRET} exposition text {{".encode()
    assert scraper.scrape() is None
    assert scraper.last_error.endswith(": invalid metrics text") and SECRET not in (
        scraper.last_error)


# -- allowlist -----------------------------------------------------------------------


@pytest.mark.parametrize(("url", "ok"), [
    ("http://prom.monitoring.svc:9090", True),
    ("http://prom.monitoring.svc:9090/", True),
    ("http://PROM.monitoring.svc:9090", True),
    ("https://thanos.example:443/api/prom/v1", True),
    ("https://thanos.example/api/prom", True),
    ("https://thanos.example/api/prometheus", False),  # not segment-wise below
    ("https://thanos.example/api/prom/../../admin", False),
    ("https://thanos.example/api/prom/%2e%2e/admin", False),
    ("https://thanos.example/", False),
    ("http://prom.monitoring.svc:9091", False),
    ("https://prom.monitoring.svc:9090", False),
    ("http://prom.monitoring.svc:9090.evil.example", False),
    ("http://prom.monitoring.svc.evil.example:9090", False),
    ("http://169.254.169.254/latest/meta-data", False),
    ("http://prom.monitoring.svc:9090/#", False),
])
def test_allowlist(url: str, ok: bool) -> None:
    allow = UrlAllowlist.parse(
        ["http://prom.monitoring.svc:9090", " https://thanos.example/api/prom/ "])
    assert allow.allows(url) is ok


def test_allowlist_star_and_bad_entries() -> None:
    assert UrlAllowlist.parse(["*"]).allows("http://anything:1/x")
    assert not UrlAllowlist.parse(["*"]).allows("http://a/?q")  # still a base URL only
    assert not UrlAllowlist.parse([]).allows("http://anything")
    for bad in ("prom:9090", "http://u@p/", "http://p/?x"):
        with pytest.raises(ValueError, match="not a base URL"):
            UrlAllowlist.parse([bad])


def test_from_source_applies_the_allowlist() -> None:
    from tritonscale.core.spec import PrometheusSource

    allow = UrlAllowlist.parse(["http://prom:9090"])
    assert PrometheusSignals.from_source(PrometheusSource("http://prom:9090"),
                                         allowlist=allow).allowed
    assert not PrometheusSignals.from_source(PrometheusSource("http://169.254.169.254"),
                                             allowlist=allow).allowed
    assert PrometheusSignals.from_source(PrometheusSource("http://x:1")).allowed


def test_operator_caps_the_spec_timeout() -> None:
    from tritonscale.core.spec import PrometheusSource

    src = PrometheusSource("http://prom:9090", timeout_seconds=300)
    assert PrometheusSignals.from_source(src, max_timeout_s=10).timeout_s == 10
    assert PrometheusSignals.from_source(src).timeout_s == 300
    short = PrometheusSource("http://prom:9090", timeout_seconds=2)
    assert PrometheusSignals.from_source(short, max_timeout_s=10).timeout_s == 2


@pytest.mark.parametrize(("value", "error"), [
    ("NaN", "escalation rate is NaN or Inf"),   # 0/0: no requests in the window
    ("1.5", "escalation rate outside [0, 1]"),
    ("0.25", ""),
])
def test_escalation_rate_unknown_unless_a_fraction(hostile: Hostile, value: str,
                                                   error: str) -> None:
    """A cascade's escalation reading: anything but a fraction is unknown (the planner
    then holds its correction) and does not make the other signals unknown."""
    hostile.body = ('{"status":"success","data":{"result":[{"metric":{},"value":[0,"'
                    + value + '"]}]}}').encode()
    adapter = PrometheusSignals(hostile.url, timeout_s=2)
    reading = adapter.escalation("ns", "m-cascade")
    assert reading.error == error
    assert reading.value == (None if error else 0.25)
    sig = adapter.signals("ns", "m-cascade", 95, cascade=True)
    assert sig.escalated == reading.value and sig.escalation_error == error
    assert any("tritonscale_cascade_escalated_total" in p for p in hostile.paths)


# -- a resolver that never answers ------------------------------------------------------

# The resolver hangs for HUNG_S (the fixture's 30 s); a call bounded by its 1-s timeout
# returns far sooner even on a starved machine. (1 s, not less: the worker thread must
# reach the resolver before the deadline for the error to name the lookup.)
HUNG_S = 30.0
BOUNDED_S = 10.0


def test_a_hung_resolver_is_bounded_and_named(hung_resolver: threading.Event) -> None:
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match=r"^host name lookup timed out$"):
        outbound.get(requests.Session(), f"http://{HUNG_HOST}:9090/api/v1/query",
                     peer="Prometheus", timeout_s=1.0)
    assert time.monotonic() - started < BOUNDED_S < HUNG_S

    adapter = PrometheusSignals(f"http://{HUNG_HOST}:9090", timeout_s=1.0)
    started = time.monotonic()
    sig = adapter.signals("ns", "m", 95)
    # One query's timeout (signals() stops at the first transport failure), a query
    # failure like any outage: the planner holds and the breaker opens.
    assert time.monotonic() - started < BOUNDED_S
    assert sig.request_rate is None and sig.error == "Prometheus: host name lookup timed out"


def test_hung_lookups_cost_bounded_threads_and_never_delay_other_servers(
    hung_resolver: threading.Event, hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "MAX_RUNNING_PER_SERVER", 2)
    url = f"http://{HUNG_HOST}:9090/"

    def workers() -> int:  # outbound's own threads (the hostile server runs others)
        return sum(t.name.startswith("outbound ") for t in threading.enumerate())

    # An earlier test's workers (same server, released at its teardown) may still be
    # ending on a busy machine: they would hold this server's slots and be counted.
    deadline = time.monotonic() + 10
    while workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers() == 0
    for _ in range(2):
        # 3 s: the worker must reach the resolver before the deadline even on a
        # starved machine (sooner, the error is a plain "timeout").
        with pytest.raises(outbound.OutboundError, match=r"^host name lookup timed out$"):
            outbound.get(requests.Session(), url, peer="P", timeout_s=3.0)
    before = workers()
    assert before >= 2
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError,
                       match=r"^earlier requests to this server still hang$"):
        outbound.get(requests.Session(), url, peer="P", timeout_s=5)
    # At once: well inside the 5-s timeout it would otherwise wait (a loaded CI box
    # can stall a thread for a second; no timing finer than that is asserted).
    assert time.monotonic() - started < 2.5 and workers() == before
    hostile.body = b"fine"
    assert outbound.get(requests.Session(), hostile.url, peer="P", timeout_s=2) == b"fine"
    # The resolver answers at last: the threads end and the server is usable again.
    hung_resolver.set()
    deadline = time.monotonic() + 10
    while workers() > before - 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(outbound.OutboundError, match=r"^host name not resolved$"):
        outbound.get(requests.Session(), url, peer="P", timeout_s=2)


def test_an_answer_inside_the_deadline_is_returned_with_its_own_error(hostile: Hostile) -> None:
    hostile.status, hostile.body = 500, SECRET.encode()
    with pytest.raises(outbound.OutboundError) as info:
        outbound.get(requests.Session(), hostile.url, peer="P", timeout_s=2)
    assert info.value.text == "HTTP 500 from P" and info.value.status == 500
    assert info.value.__cause__ is None and info.value.__context__ is None

"""The cascade router's tier-2 lookup (data/router/model.py ``Tier2Address``): urllib
looks a host up with no timeout of its own, so the router looks the tier-2 Service up
with the call's deadline, keeps the address, and connects to it with the name in Host.

Loaded as test_router_window loads it (an empty stand-in for Triton's
``triton_python_backend_utils``, which the code under test does not use)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

# Far below the hung lookup's 30 s, far above any scheduling delay of a loaded box.
BOUNDED_S = 10.0


class _Lookup:
    """getaddrinfo stand-in: answers ``address`` (or raises), or hangs until released."""

    def __init__(self, address: str | None = "10.0.0.7", hang: bool = False) -> None:
        self.address, self.hang = address, hang
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, host: str, port: int, *args: Any) -> list[Any]:
        self.calls += 1
        if self.hang:
            self.release.wait(30)
        if self.address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.address, port))]


def test_a_hung_lookup_is_bounded_and_runs_once(router: Any) -> None:
    lookup = _Lookup(hang=True)
    addr = router.Tier2Address("tier2.ns.svc", 8000, lookup=lookup)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(TimeoutError, match=r"looking up tier2\.ns\.svc took over 0\.2 s"):
            addr.get(0.2)
    assert time.monotonic() - started < BOUNDED_S
    assert lookup.calls <= 1  # one thread for a resolver that never answers
    lookup.hang = False
    lookup.release.set()
    assert addr.get(5.0) in ("10.0.0.7",)


def test_the_address_is_kept_then_refreshed_in_the_background(router: Any) -> None:
    lookup = _Lookup()
    addr = router.Tier2Address("tier2.ns.svc", 8000, ttl_s=3600.0, lookup=lookup)
    assert addr.get(5.0) == "10.0.0.7" and addr.get(5.0) == "10.0.0.7"
    assert lookup.calls == 1
    stale = router.Tier2Address("tier2.ns.svc", 8000, ttl_s=0.0, lookup=lookup)
    assert stale.get(5.0) == "10.0.0.7"
    lookup.address, lookup.hang = "10.0.0.9", True
    started = time.monotonic()
    assert stale.get(5.0) == "10.0.0.7"  # stale at once while the refresh hangs
    assert time.monotonic() - started < BOUNDED_S
    lookup.hang = False
    lookup.release.set()
    deadline = time.monotonic() + BOUNDED_S
    while stale.get(5.0) != "10.0.0.9" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stale.get(5.0) == "10.0.0.9"


def test_a_failed_lookup_keeps_the_last_address_or_says_why(router: Any) -> None:
    lookup = _Lookup(address=None)
    addr = router.Tier2Address("tier2.ns.svc", 8000, ttl_s=0.0, lookup=lookup)
    with pytest.raises(OSError, match=r"tier2\.ns\.svc does not resolve: .*not known"):
        addr.get(5.0)
    lookup.address = "10.0.0.7"
    assert addr.get(5.0) == "10.0.0.7"
    lookup.address = None
    calls = lookup.calls
    assert addr.get(5.0) == "10.0.0.7"  # the refresh failed: the last address serves
    deadline = time.monotonic() + BOUNDED_S
    while lookup.calls == calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert addr.get(5.0) == "10.0.0.7"


@pytest.fixture
def tier2() -> Iterator[tuple[int, list[str]]]:
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name for the handler
            hosts.append(self.headers.get("Host", ""))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = body["inputs"][0]["shape"][0]
            out = {"outputs": [{"name": "LABEL", "datatype": "INT64", "shape": [rows, 1],
                                "data": [7] * rows}]}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hosts
    server.shutdown()
    server.server_close()


def _bare_router(router: Any, url: str, lookup: Any) -> Any:
    """A router with only what ``_tier2`` reads (``initialize`` needs Triton)."""
    model = router.TritonPythonModel.__new__(router.TritonPythonModel)
    model.tier2_url, model.tier2, model.outputs = url, "large", ["LABEL"]
    parts = router.urllib.parse.urlsplit(url)
    model._tier2_host, model._tier2_port = parts.hostname, parts.port
    model._tier2_address = (None if router._literal(parts.hostname)
                            else router.Tier2Address(parts.hostname, parts.port, lookup=lookup))
    return model


def test_tier2_is_called_at_the_looked_up_address_with_its_name_in_host(
    router: Any, tier2: tuple[int, list[str]]
) -> None:
    port, hosts = tier2
    lookup = _Lookup(address="127.0.0.1")
    model = _bare_router(router, f"http://sm-tier2.ns.svc:{port}", lookup)
    out = model._tier2({"INPUT": np.zeros((2, 4), dtype=np.float32)}, 5.0)
    assert out["LABEL"].tolist() == [[7], [7]]
    assert hosts == [f"sm-tier2.ns.svc:{port}"] and lookup.calls == 1
    literal = _bare_router(router, f"http://127.0.0.1:{port}", lookup)
    assert literal._tier2_address is None
    literal._tier2({"INPUT": np.zeros((1, 4), dtype=np.float32)}, 5.0)
    assert lookup.calls == 1 and hosts[-1] == f"127.0.0.1:{port}"


def test_a_hung_tier2_lookup_fails_the_call_within_its_timeout(router: Any) -> None:
    lookup = _Lookup(hang=True)
    model = _bare_router(router, "http://sm-tier2.ns.svc:8000", lookup)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        model._tier2({"INPUT": np.zeros((1, 4), dtype=np.float32)}, 0.3)
    assert time.monotonic() - started < BOUNDED_S
    lookup.release.set()

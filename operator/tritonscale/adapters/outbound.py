"""Outbound HTTP to servers a ScaledModel author names: bounded, no redirects, no echo.

A ScaledModel's author is not trusted (docs/security.md).  Whatever server their spec
points the operator at -- a Prometheus URL, a Triton pod's metrics port -- may be
hostile or may be an internal endpoint they want the operator to read for them.  So
every such request:

* never follows a redirect: a 3xx is an error (``HTTP 302 from Prometheus (redirects
  are not followed)``), and the redirect target is never contacted;
* has a hard deadline for the whole exchange -- name resolution, connect, headers
  and body -- not only per socket read, so neither a server dripping one byte at a
  time nor a hung DNS resolver can hold a caller (:func:`get` runs the exchange in a
  worker thread and stops waiting at the deadline: ``getaddrinfo`` has no timeout,
  and requests' ``timeout`` never covers it);
* reads at most ``max_bytes`` of body;
* fails with :class:`OutboundError`, whose text is one of a few fixed phrases
  (:func:`classify`): no byte of the response body, header or the exception's own
  text -- which for some errors quotes the body -- ever reaches status, conditions,
  events or logs through it.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from types import FrameType
from typing import Any

import requests
import urllib3.exceptions

from tritonscale.adapters.resolve import Slots

DEFAULT_MAX_BYTES = 8 * 1024 * 1024

# The fixed phrases of transport failures (``classify``).
TIMEOUT = "timeout"
REFUSED = "connection refused"
UNRESOLVED = "host name not resolved"
TLS = "TLS error"
CONNECT_FAILED = "connection failed"
INVALID = "invalid response"
TOO_LARGE = "response too large"
RESOLVE_TIMEOUT = "host name lookup timed out"
BUSY = "earlier requests to this server still hang"

# Worker threads still running (a hung resolver keeps one until it answers), per
# server and in all: past these limits a request fails at once with BUSY instead of
# starting another thread, so a server whose name never resolves costs a bounded
# number of threads and never delays requests to other servers.
MAX_RUNNING_PER_SERVER = 16
MAX_RUNNING = 256
# Time past ``timeout_s`` before the caller stops waiting: lets the exchange's own
# timeouts (which name the failure more exactly) fire first.
DEADLINE_GRACE_S = 0.25


class OutboundError(Exception):
    """A request to an untrusted server failed; ``str()`` is a short fixed text.

    ``status`` is the HTTP status when the server answered with a non-2xx one."""

    def __init__(self, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


def http_status_text(status: int, peer: str) -> str:
    """``HTTP 403 from Prometheus``; a 3xx says redirects are not followed."""
    text = f"HTTP {int(status)} from {peer}"
    if 300 <= status < 400:
        text += " (redirects are not followed)"
    return text


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo.extend([e.__cause__, e.__context__])
        reason = getattr(e, "reason", None)  # urllib3 MaxRetryError wraps its cause here
        if isinstance(reason, BaseException):
            todo.append(reason)
        for arg in getattr(e, "args", ()):
            if isinstance(arg, BaseException):
                todo.append(arg)
    return out


def classify(exc: BaseException) -> str:
    """A fixed phrase for a transport failure (never the exception's own text)."""
    if isinstance(exc, OutboundError):
        return exc.text
    chain = _chain(exc)
    kinds = tuple(type(e) for e in chain)

    def has(*types: type[BaseException]) -> bool:
        return any(issubclass(k, types) for k in kinds)

    if has(ConnectionRefusedError):
        return REFUSED
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return UNRESOLVED
    if has(ssl.SSLError, requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return TLS
    # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake:
    # only a real timeout in the chain makes a connect failure a timeout.
    connect_timeout = has(urllib3.exceptions.ConnectTimeoutError) and not has(
        urllib3.exceptions.NewConnectionError)
    if connect_timeout or has(requests.Timeout, TimeoutError,
                              urllib3.exceptions.ReadTimeoutError):
        return TIMEOUT
    if has(requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
           urllib3.exceptions.ProtocolError, UnicodeError, ValueError):
        return INVALID
    if has(requests.ConnectionError, ConnectionError, urllib3.exceptions.HTTPError, OSError):
        return CONNECT_FAILED
    return INVALID


class NoRedirectSession(requests.Session):
    """A ``requests.Session`` that never follows redirects, whatever a caller asks.

    (Not ``max_redirects = 0``: with redirects off, requests still prepares the next
    request and would raise TooManyRedirects instead of returning the 3xx.)"""

    def request(self, method: str, url: str, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)


def _server(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return url


# Worker threads per server (a hung resolver keeps one until it answers).
_running = Slots()


def _resolving(frame: FrameType | None) -> bool:
    """Is this stack inside ``socket.getaddrinfo`` (a name lookup)?"""
    while frame is not None:
        if frame.f_code.co_name == "getaddrinfo" and frame.f_globals.get("__name__") == "socket":
            return True
        frame = frame.f_back
    return False


def get(
    session: requests.Session,
    url: str,
    *,
    peer: str,
    timeout_s: float,
    params: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """GET ``url``; the body of a 2xx answer, else :class:`OutboundError`.

    Returns or raises within ``timeout_s`` (+ ``DEADLINE_GRACE_S``) whatever the
    server or the resolver do: past it the error is ``host name lookup timed out``
    when the exchange is still resolving the server's name, else ``timeout``; the
    abandoned exchange finishes (or stays blocked in the resolver) in its own thread.
    The body is bounded by ``max_bytes``; redirects are errors."""
    server = _server(url)
    if not _running.acquire(server, MAX_RUNNING_PER_SERVER, MAX_RUNNING):
        raise OutboundError(BUSY)
    done = threading.Event()
    result: list[bytes] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_exchange(session, url, peer=peer, timeout_s=timeout_s,
                                    params=params, max_bytes=max_bytes))
        except BaseException as exc:  # handed to the caller (or dropped if it left)
            failure.append(exc)
        finally:
            _running.release(server)
            done.set()

    worker = threading.Thread(target=work, name=f"outbound {peer}", daemon=True)
    worker.start()
    if not done.wait(timeout_s + DEADLINE_GRACE_S):
        frame = sys._current_frames().get(worker.ident or -1)
        raise OutboundError(RESOLVE_TIMEOUT if _resolving(frame) else TIMEOUT)
    if failure:
        exc = failure[0]
        if isinstance(exc, OutboundError):
            raise OutboundError(exc.text, exc.status) from None
        raise OutboundError(classify(exc)) from None
    return result[0]


def _exchange(
    session: requests.Session,
    url: str,
    *,
    peer: str,
    timeout_s: float,
    params: Mapping[str, str] | None,
    max_bytes: int,
) -> bytes:
    """The exchange itself (blocking; each socket operation bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    try:
        resp = session.get(url, params=dict(params or {}), timeout=timeout_s,
                           allow_redirects=False, stream=True)
    except Exception as exc:  # requests/urllib3 raise many types for one failure
        raise OutboundError(classify(exc)) from None
    try:
        if not 200 <= resp.status_code < 300:
            raise OutboundError(http_status_text(resp.status_code, peer), resp.status_code)
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise OutboundError(TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > max_bytes:
                    raise OutboundError(TOO_LARGE)
                if time.monotonic() > deadline:
                    raise OutboundError(TIMEOUT)
                chunks.append(chunk)
        except OutboundError:
            raise
        except Exception as exc:
            raise OutboundError(classify(exc)) from None
        return b"".join(chunks)
    finally:
        resp.close()

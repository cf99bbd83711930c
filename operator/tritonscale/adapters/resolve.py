"""Host name lookups with a deadline, for every client the operator runs.

``socket.getaddrinfo`` has no timeout, and no HTTP client's ``timeout`` covers it:
when the DNS server drops queries, glibc's resolver holds the calling thread for
minutes.  :func:`addresses` runs the lookup in a worker thread and stops waiting at
the deadline (the abandoned lookup finishes, or stays blocked, in its own thread);
:class:`Slots` bounds how many such threads a name that never resolves may keep.

Users: :mod:`tritonscale.adapters.outbound` (Prometheus, Triton metrics: the whole
exchange runs in a worker), the Kubernetes client (:func:`bounded_pools`: urllib3
connections that look their host up through :func:`addresses`, then connect to the
address -- TLS still checks the certificate against the host name) and ``tritonscale
profile`` (:func:`pinned`: the Triton server's address, looked up once).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from typing import Any

import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

# Lookup threads still running per host and in all: past these, a lookup fails at
# once (LookupTimeout) instead of starting another thread.
MAX_PENDING_PER_HOST = 4
MAX_PENDING = 64
# The deadline when the connection has none (urllib3's "no timeout" sentinel).
DEFAULT_LOOKUP_TIMEOUT_S = 5.0


class LookupTimeout(OSError):
    """The resolver did not answer within the deadline (or earlier lookups still hang)."""


class Slots:
    """Count of running worker threads per key (a server, a host name), bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per: dict[str, int] = {}
        self._total = 0

    def acquire(self, key: str, per_key: int, total: int) -> bool:
        with self._lock:
            if self._total >= total or self._per.get(key, 0) >= per_key:
                return False
            self._per[key] = self._per.get(key, 0) + 1
            self._total += 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._per.get(key, 1) - 1
            if left > 0:
                self._per[key] = left
            else:
                self._per.pop(key, None)


_pending = Slots()


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def addresses(host: str, port: int, timeout_s: float) -> list[str]:
    """The addresses of ``host`` (resolver order, no duplicates) within ``timeout_s``.

    An IP literal is returned as is (no lookup).  Raises ``socket.gaierror`` when the
    resolver answers "no such name", :class:`LookupTimeout` past the deadline."""
    if _literal(host):
        return [host]
    key = host.lower()
    if not _pending.acquire(key, MAX_PENDING_PER_HOST, MAX_PENDING):
        raise LookupTimeout(f"earlier lookups of {host} still hang")
    done = threading.Event()
    answer: list[list[Any]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller (or dropped if it left)
            failure.append(exc)
        finally:
            _pending.release(key)
            done.set()

    threading.Thread(target=work, name=f"lookup {host}", daemon=True).start()
    if not done.wait(timeout_s):
        raise LookupTimeout(f"looking up {host} took over {timeout_s:g} s")
    if failure:
        raise failure[0]
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in answer[0]:
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out


class HostLookupTimeout(urllib3.exceptions.NewConnectionError):
    """urllib3's error for a lookup past its deadline (a connection failure)."""


class _BoundedLookup(urllib3.connection.HTTPConnection):
    """Looks its host up through :func:`addresses` (the connect timeout is the
    deadline), then connects to each address in turn as urllib3 would."""

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        timeout = self.timeout if isinstance(self.timeout, int | float) and self.timeout > 0 \
            else DEFAULT_LOOKUP_TIMEOUT_S
        try:
            found = addresses(name, self.port, float(timeout))
        except LookupTimeout as e:
            raise HostLookupTimeout(self, f"host name lookup timed out: {e}") from e
        except socket.gaierror as e:
            raise urllib3.exceptions.NameResolutionError(self.host, self, e) from e
        failure: Exception | None = None
        for address in found:
            # ``host`` reads ``_dns_host``: restored before TLS picks the name to verify.
            self._dns_host = address
            try:
                return super()._new_conn()
            except urllib3.exceptions.ConnectTimeoutError as e:  # NewConnectionError too
                failure = e
            finally:
                self._dns_host = name
        assert failure is not None  # getaddrinfo never answers an empty list
        raise failure


class BoundedHTTPConnection(_BoundedLookup):
    pass


class BoundedHTTPSConnection(_BoundedLookup, urllib3.connection.HTTPSConnection):
    pass


class BoundedHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = BoundedHTTPConnection


class BoundedHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = BoundedHTTPSConnection


def bounded_pools(manager: urllib3.PoolManager) -> bool:
    """Make ``manager``'s future connections look hosts up with a deadline.

    Plain and HTTP(S)-proxy managers (the proxy's name is the one looked up); a SOCKS
    manager has its own connection classes and is left alone (False)."""
    if type(manager) not in (urllib3.PoolManager, urllib3.ProxyManager):
        return False
    manager.pool_classes_by_scheme = {
        "http": BoundedHTTPConnectionPool, "https": BoundedHTTPSConnectionPool,
    }
    return True


def pinned(host_port: str, timeout_s: float) -> str:
    """``host:port`` with the host looked up (within ``timeout_s``) and replaced by its
    first address: for clients with no deadline of their own on the lookup
    (tritonclient's geventhttpclient resolves each new connection unbounded).

    Raises ``ValueError`` naming the host when it does not resolve in time or at all."""
    parts = urllib.parse.urlsplit(f"//{host_port}")
    host, port = parts.hostname or "", parts.port
    if not host or port is None:
        raise ValueError(f"{host_port!r} is not host:port")
    try:
        address = addresses(host, port, timeout_s)[0]
    except LookupTimeout:
        raise ValueError(f"looking up {host} took over {timeout_s:g} s") from None
    except OSError as e:
        raise ValueError(f"{host} does not resolve ({e.strerror or e})") from None
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

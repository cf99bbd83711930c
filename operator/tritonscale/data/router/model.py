"""tritonscale's cascade router: a Triton Python-backend model in every tier-1 pod.

Each request is served on its own, so no request waits for another's tier-2 call:

* ``execute`` only hands the batch's requests to a thread pool and returns (``None``:
  each request is answered through its response sender, which the Python backend
  allows in the default, non-decoupled mode as long as every request gets exactly one
  final response). Clients keep the plain ``infer`` call (HTTP or gRPC); a decoupled
  model would need gRPC streaming.
* Stage 1 (``workers`` threads): call the tier-1 model in the same server through BLS,
  one BLS request per client request, so tier 1's own dynamic batcher batches them as
  it batches any client's. A request whose rows are all at or above the threshold is
  answered at once. The call is bounded: a request whose tier 1 does not answer
  within ``tier1_timeout_s`` from the hand-off, or by its deadline if that comes
  first, is answered with an error and counted in
  ``tritonscale_cascade_tier1_timeout_total``. Triton cannot cut a call it runs (the
  BLS request's ``timeout``, which the router sets to the same bound, acts only while
  the request waits in tier 1's queue, under a queue policy with
  ``allow_timeout_override``: measured on 2.51), so the call runs on a thread of its
  own and the stage-1 thread stops waiting for it; the request keeps its place in the
  router until the call returns, so a wedged tier 1 fills the router's bound (below)
  and no more.
* Stage 2 (another ``workers`` threads): a request with rows whose confidence
  (``confidence_output``) is below the threshold sends those rows to the tier-2 model
  over the KServe v2 HTTP/JSON protocol (standard library only: the stub environment
  and the stock Triton image carry numpy but not tritonclient); their tier-2 answers
  replace tier 1's. If tier 2 fails or does not answer within ``tier2_timeout_s``, or
  by the request's deadline if that comes first, the rows keep tier 1's answer and a
  fallback is counted (the cascade degrades to tier 1, it does not fail requests).
  The timeout counts from tier 1's answer, so a request that waited for a stage-2
  thread has less of it (none left: a fallback at once); the time left is also sent
  as the tier-2 request's ``timeout`` (tier 2 drops it in its queue past that under a
  queue policy allowing the override). A slow tier 2 holds stage-2 threads only,
  never the tier-1-only requests.
  The tier-2 Service's name is looked up with a deadline (the call's remaining
  timeout) and its address kept for ``LOOKUP_TTL_S`` (:class:`Tier2Address`):
  urllib looks a host up with no timeout of its own, so a resolver that drops
  queries would otherwise hold every stage-2 thread for minutes.
* A request whose client has gone is not computed: before its tier-1 call and before
  its tier-2 call (each when a thread takes it), a request that its client cancelled
  (``is_cancelled()``: gRPC cancellations, a client's timeout through gRPC) or whose
  deadline has passed is answered with an error instead and counted in
  ``tritonscale_cascade_abandoned_total{stage="tier1"|"tier2"}``. The deadline is the
  request's own timeout (Triton's ``timeout`` request parameter, in microseconds, e.g.
  tritonclient's ``infer(..., timeout=...)``; HTTP/JSON: ``"parameters": {"timeout":
  ...}``) counted from the router's hand-off; a request without one has none. Under
  overload the threads' queues hold requests for long, so without this the router
  would spend tier 1 (and tier 2) on answers nobody reads.
* An instance holds at most ``max_pending`` requests (in a thread or waiting for one,
  or answered at the tier-1 timeout while their call runs); ``execute`` answers any
  beyond at once with an error (code UNAVAILABLE: HTTP 503, as Triton answers beyond a
  model's ``max_queue_size``) and counts them in ``tritonscale_cascade_rejected_total``:
  overload cannot grow the router's memory.

Because ``execute`` returns before the requests are answered, Triton's own request
statistics for this model (``nv_inference_request_summary_us``, ``..._duration_us``)
end at the hand-off and do not hold the cascade's latency. The router measures each
request from the hand-off to its response and exports that itself:
``tritonscale_cascade_request_summary_us{quantile=...}`` (the quantiles Triton's
summary has, over a sliding minute, as Triton's: NaN when idle; kept as per-second
histograms, :class:`LatencyWindow`: fixed memory, each quantile within 0.5 %; the
quantiles of ALL the router's requests in the server, whichever instance answered
them: the instances share their windows through files in ``/dev/shm`` and one of
them sets the gauges, :class:`SharedWindows`) and
``tritonscale_cascade_request_duration_us`` (the sum, a counter). Counters of
inferences (rows): ``tritonscale_cascade_requests_total`` (tier 1 answered them through
the router: each is then answered, or dropped before its tier-2 call),
``tritonscale_cascade_escalated_total`` (of those, below the threshold),
``tritonscale_cascade_fallback_total``, ``tritonscale_cascade_abandoned_total``,
``tritonscale_cascade_tier1_timeout_total``, ``tritonscale_cascade_rejected_total``; and
the gauge ``tritonscale_cascade_pending_requests``: requests the router holds (handed
off, not yet answered, or answered at the tier-1 timeout while their call runs), in a
thread or waiting for one: what ``max_pending`` bounds. Triton's own
``nv_inference_pending_request_count`` of the router is ~0 (its execute returns at
once), so without it a backlog in the router's queues would show nowhere. All are
exported through Triton's custom metrics API, on the server's metrics port.

The threshold comes from ``threshold_file`` (a ConfigMap mounted as a directory: the
kubelet swaps the file in place), re-read whenever its modification time changes, so
it changes without a restart; a request parameter ``threshold`` overrides it for
that request.

Parameters (config.pbtxt ``parameters``): tier1_model, tier2_url (http://host:port),
tier2_model, confidence_output, threshold (initial), threshold_file (optional),
tier1_timeout_s (default 10), tier2_timeout_s (default 10), workers (per stage and
instance, default 256), max_pending (per instance, default 4 x workers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_DATATYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8",
    "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
    "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
}
_NUMPY = {v: k for k, v in _DATATYPES.items()}
# Triton's latency summary: these quantiles over a sliding window of about a minute.
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
SUMMARY_WINDOW_S = 60.0
SUMMARY_REFRESH_S = 0.5
# The window keeps counts, not samples: per second of the window, a histogram over
# logarithmic bins from 1 us to 1000 s, each 1 % wider than the one before (a value is
# read back as its bin's geometric middle: within 0.5 %). Its size is fixed whatever
# the rate (60 x 2,085 counts, 0.5 MB), where a list of samples held ~30 MB at 5,000
# answers per second.
BIN_RATIO = 1.01
BIN_MIN_US = 1.0
BIN_MAX_US = 1e9
# max_pending's default: requests an instance holds per thread of a stage (a request in
# each stage's thread, more waiting for one) before it answers more with an error.
MAX_PENDING_PER_WORKER = 4


class LatencyWindow:
    """Latencies over a sliding window of whole seconds, as per-second histograms.

    ``counts`` and ``stamp`` are this window's own arrays, or views of a file that the
    router's instances share (:class:`SharedWindows`)."""

    def __init__(self, seconds: float = SUMMARY_WINDOW_S, counts: Any = None,
                 stamp: Any = None) -> None:
        self.seconds = math.ceil(seconds)
        self._log_ratio = math.log(BIN_RATIO)
        self.bins = window_bins()
        self.counts = (np.zeros((self.seconds, self.bins), dtype=np.int32)
                       if counts is None else counts)
        # The second each row holds (-1: none).
        self.stamp = np.full(self.seconds, -1, dtype=np.int64) if stamp is None else stamp
        self.middle = BIN_MIN_US * BIN_RATIO ** (np.arange(self.bins) + 0.5)

    def add(self, now: float, value_us: float) -> None:
        sec = int(now)
        row = sec % self.seconds
        if self.stamp[row] != sec:
            # A reader in another process skips a row stamped -1, so it never counts
            # the second this row held before as the new one.
            self.stamp[row] = -1
            self.counts[row] = 0
            self.stamp[row] = sec
        ratio = max(value_us, BIN_MIN_US) / BIN_MIN_US
        self.counts[row, min(int(math.log(ratio) / self._log_ratio), self.bins - 1)] += 1

    def histogram(self, now: float) -> Any:
        """Counts per bin over the seconds within the window before ``now``."""
        live = self.stamp > int(now) - self.seconds
        return self.counts[live].sum(axis=0, dtype=np.int64)

    def quantiles(self, hist: Any, qs: tuple[float, ...]) -> list[float]:
        """``np.quantile`` (linear) of the binned values; NaN each when empty."""
        n = int(hist.sum())
        if n == 0:
            return [math.nan] * len(qs)
        cum = np.cumsum(hist)
        out = []
        for q in qs:
            h = q * (n - 1)
            lo, hi = (int(np.searchsorted(cum, k, "right")) for k in (math.floor(h),
                                                                        math.ceil(h)))
            a, b = float(self.middle[lo]), float(self.middle[hi])
            out.append(a + (h - math.floor(h)) * (b - a))
        return out


def window_bins() -> int:
    return math.ceil(math.log(BIN_MAX_US / BIN_MIN_US) / math.log(BIN_RATIO)) + 1


# Where the instances of one router share their windows: a directory per server process
# (the stubs' parent), model and version, in the pod's in-memory /dev/shm.
SHARED_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_SLOT = "slot-{}.window"
_WRITER = "writer.lock"


class SharedWindows:
    """The latency windows of all the instances of one router in one server.

    Each instance of a Python-backend model is a process of its own, and Triton's
    custom metrics API gives them ONE series per label set: an instance setting the
    quantile gauges from its own window overwrote the others' (the exported p50
    alternated between instances, an idle one wrote NaN). So each instance keeps its
    window in a file of its own (``slot-<k>.window``, memory-mapped, locked for the
    instance's life: a slot whose instance ended is taken by the next that starts,
    and its seconds age out as any), every instance reads all the slots, and one
    instance at a time, the holder of ``writer.lock``, sets the gauges from the sum
    of their histograms: the quantiles of the union of the router's requests, as one
    process's window would hold them. The others try for the lock at every refresh
    (the holder's end frees it)."""

    def __init__(self, directory: str, seconds: float = SUMMARY_WINDOW_S) -> None:
        self.directory = directory
        self.seconds = math.ceil(seconds)
        self.bins = window_bins()
        os.makedirs(directory, exist_ok=True)
        self._files: list[int] = []
        self._slot = ""
        self.writer = False
        self._writer_fd: int | None = None
        k = 0
        while True:
            path = os.path.join(directory, _SLOT.format(k))
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                k += 1
                continue
            try:  # the file an ending instance unlinked after this one opened it
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._files.append(fd)
        self._slot = path
        fresh = os.fstat(fd).st_size < self._size
        if fresh:
            os.ftruncate(fd, self._size)
        stamp, counts = self._map(path, writable=True)
        if fresh:
            stamp[:] = -1
        self.own = LatencyWindow(seconds, counts=counts, stamp=stamp)
        self._others: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.try_writer()

    @property
    def _size(self) -> int:
        return self.seconds * 8 + self.seconds * self.bins * 4

    def _map(self, path: str, writable: bool) -> tuple[Any, Any]:
        if writable:
            return (np.memmap(path, dtype=np.int64, mode="r+", shape=(self.seconds,)),
                    np.memmap(path, dtype=np.int32, mode="r+", offset=self.seconds * 8,
                              shape=(self.seconds, self.bins)))
        return (np.memmap(path, dtype=np.int64, mode="r", shape=(self.seconds,)),
                np.memmap(path, dtype=np.int32, mode="r", offset=self.seconds * 8,
                          shape=(self.seconds, self.bins)))

    def try_writer(self) -> bool:
        """Take ``writer.lock`` if no other instance holds it; True if this one does."""
        if self.writer:
            return True
        fd = os.open(os.path.join(self.directory, _WRITER), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._writer_fd, self.writer = fd, True
        self._files.append(fd)
        return True

    def histogram(self, now: float) -> Any:
        """The sum of every instance's histogram within the window before ``now``."""
        total = self.own.histogram(now)
        seen: set[tuple[int, int]] = set()
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".window") or entry.path == self._slot:
                continue
            try:
                st = entry.stat()
                key = (st.st_dev, st.st_ino)
                if key not in self._others:
                    if st.st_size < self._size:
                        continue  # its instance is still creating it
                    self._others[key] = self._map(entry.path, writable=False)
            except (OSError, ValueError):
                continue  # gone meanwhile
            seen.add(key)
            stamp, counts = self._others[key]
            live = np.asarray(stamp) > int(now) - self.seconds
            total = total + np.asarray(counts)[live].sum(axis=0, dtype=np.int64)
        for key in set(self._others) - seen:
            del self._others[key]
        return total

    def close(self) -> None:
        """Remove this instance's slot, free the writer lock; the last instance
        removes the directory (Triton loads a model's new instances before it ends
        the old ones, so none is starting in it then)."""
        with contextlib.suppress(OSError):
            os.unlink(self._slot)
        for fd in self._files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files = []
        self.writer = False
        with contextlib.suppress(OSError):
            if not any(e.name.endswith(".window") for e in os.scandir(self.directory)):
                os.unlink(os.path.join(self.directory, _WRITER))
                os.rmdir(self.directory)


def shared_directory(model: str, version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{version}")
    return os.path.join(SHARED_BASE, f"tritonscale-router-{os.getppid()}-{safe}")


# How long a looked-up tier-2 address is used before it is looked up again (a
# Service's ClusterIP lives as long as the Service; the refresh runs in the
# background while the old address keeps serving).
LOOKUP_TTL_S = 30.0


class Tier2Address:
    """The tier-2 host's address, looked up with a deadline and kept for a while.

    :meth:`get` answers the cached address at once while it is fresh, and a stale
    one while a refresh runs; with none yet it waits for the lookup at most
    ``timeout`` seconds (``TimeoutError`` past it). One lookup runs at a time: a
    resolver that never answers keeps one thread, not one per request. A failed
    lookup keeps the last address (``OSError`` only when there is none)."""

    def __init__(self, host: str, port: int, ttl_s: float = LOOKUP_TTL_S,
                 lookup: Any = None) -> None:
        self.host, self.port, self.ttl_s = host, port, ttl_s
        self._lookup = lookup or socket.getaddrinfo
        self._lock = threading.Lock()
        self._address: str | None = None
        self._error = ""
        self._at = -math.inf
        self._pending: threading.Event | None = None

    def get(self, timeout: float) -> str:
        with self._lock:
            fresh = time.monotonic() - self._at < self.ttl_s
            if self._address is not None and fresh:
                return self._address
            if self._pending is None:
                self._pending = threading.Event()
                threading.Thread(target=self._run, args=(self._pending,), daemon=True,
                                 name=f"lookup {self.host}").start()
            if self._address is not None:
                return self._address  # stale while the refresh runs
            pending = self._pending
        if not pending.wait(max(0.0, timeout)):
            raise TimeoutError(f"looking up {self.host} took over {timeout:.3g} s")
        with self._lock:
            if self._address is None:
                raise OSError(f"{self.host} does not resolve: {self._error}")
            return self._address

    def _run(self, done: threading.Event) -> None:
        address, error = None, ""
        try:
            infos = self._lookup(self.host, self.port, 0, socket.SOCK_STREAM)
            address = str(infos[0][4][0])
        except Exception as exc:  # any failure: keep the last address
            error = str(exc)
        with self._lock:
            if address is not None:
                self._address, self._at = address, time.monotonic()
            else:
                self._error = error
            self._pending = None
        done.set()


def _literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


class _Held:
    """One request the router holds: from its hand-off until it is answered and its
    tier-1 call, if one runs, has returned (``refs`` counts those two holders)."""

    __slots__ = ("deadline", "inputs", "refs", "sender", "start", "threshold")

    def __init__(self, sender: Any, inputs: dict[str, Any], threshold: float, start: float,
                 deadline: float | None) -> None:
        self.sender, self.inputs, self.threshold = sender, inputs, threshold
        self.start, self.deadline = start, deadline
        self.refs = 1

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 1


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params: dict[str, str] = {
            k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.name = args.get("model_name", config.get("name", "router"))
        self.tier1 = params["tier1_model"]
        self.tier2_url = params["tier2_url"].rstrip("/")
        parts = urllib.parse.urlsplit(self.tier2_url)
        self._tier2_host = parts.hostname or ""
        self._tier2_port = parts.port or 80
        self._tier2_address = (None if _literal(self._tier2_host)
                               else Tier2Address(self._tier2_host, self._tier2_port))
        self.tier2 = params["tier2_model"]
        self.conf_name = params.get("confidence_output", "CONFIDENCE")
        self.threshold = float(params.get("threshold", "0.5"))
        self.threshold_file = params.get("threshold_file", "")
        self.tier1_timeout = float(params.get("tier1_timeout_s", "10"))
        self.timeout = float(params.get("tier2_timeout_s", "10"))
        workers = int(params.get("workers", "256"))
        self.max_pending = int(params.get("max_pending", str(MAX_PENDING_PER_WORKER * workers)))
        if min(self.tier1_timeout, self.timeout) <= 0 or min(workers, self.max_pending) < 1:
            raise ValueError("tier1_timeout_s and tier2_timeout_s must be > 0, workers and "
                             "max_pending >= 1")
        self._pending = 0  # this instance's requests held (the gauge sums the instances)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self._mtime: int | None = None
        self._families: list[Any] = []
        labels = {"model": self.name}
        self.m_requests = self._metric(
            "tritonscale_cascade_requests_total",
            "Inferences tier 1 answered through the cascade router", labels)
        self.m_escalated = self._metric(
            "tritonscale_cascade_escalated_total",
            "Inferences escalated to the last tier (confidence below the threshold)", labels)
        self.m_fallback = self._metric(
            "tritonscale_cascade_fallback_total",
            "Escalated inferences answered by tier 1 because tier 2 failed", labels)
        abandoned = self._family(
            "tritonscale_cascade_abandoned_total",
            "Inferences the cascade router dropped, without calling the stage's tier, "
            "because their client had cancelled or their deadline had passed when a "
            "thread took them")
        self.m_abandoned = {stage: abandoned.Metric(labels={**labels, "stage": stage})
                            for stage in ("tier1", "tier2")}
        self.m_tier1_timeout = self._metric(
            "tritonscale_cascade_tier1_timeout_total",
            "Inferences answered with an error because tier 1 did not answer within "
            "tier1_timeout_s or the request's deadline, whichever came first", labels)
        self.m_rejected = self._metric(
            "tritonscale_cascade_rejected_total",
            "Inferences answered at once with an error (unavailable) because the router "
            "instance held max_pending requests", labels)
        self.m_pending = self._family(
            "tritonscale_cascade_pending_requests",
            "Requests the cascade router holds (handed off by its execute, not yet "
            "answered, or answered at the tier-1 timeout while their tier-1 call still "
            "runs): in a thread or waiting for one", gauge=True).Metric(labels=labels)
        self.m_duration = self._metric(
            "tritonscale_cascade_request_duration_us",
            "Cumulative end-to-end time of the requests the router answered, in microseconds",
            labels)
        summary = self._family(
            "tritonscale_cascade_request_summary_us",
            "End-to-end latency of the requests the router answered over a sliding "
            "minute, in microseconds (NaN when idle)", gauge=True)
        self.m_summary = {q: summary.Metric(labels={**labels, "quantile": f"{q:g}"})
                          for q in QUANTILES}
        self._lock = threading.Lock()
        self._shared: SharedWindows | None = None
        try:
            self._shared = SharedWindows(shared_directory(
                self.name, str(args.get("model_version", "1"))))
            self._window = self._shared.own
        except (OSError, ValueError) as exc:
            # No shared files: this instance's window alone, and it sets the gauges
            # only while it has answers in it, so an idle one never writes its NaN
            # over a busy one's quantiles.
            self._window = LatencyWindow()
            _log_warn(f"cascade router: latency windows not shared ({exc}); each "
                      "instance exports its own quantiles while it has answers")
        self._stop = threading.Event()
        self._stage1 = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tier1")
        self._stage2 = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tier2")
        # The tier-1 calls themselves, so a stage-1 thread can stop waiting for one. A
        # held request has at most one running and is held until it returns, so there
        # are never more than max_pending: this pool never queues.
        self._calls = ThreadPoolExecutor(max_workers=self.max_pending,
                                         thread_name_prefix="tier1-call")
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._reload()
        self._refresh(first=True)
        self._refresher.start()

    def _family(self, name: str, description: str, gauge: bool = False) -> Any:
        # A MetricFamily must outlive its Metric objects: keep it.
        kind = pb_utils.MetricFamily.GAUGE if gauge else pb_utils.MetricFamily.COUNTER
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self._families.append(family)
        return family

    def _metric(self, name: str, description: str, labels: dict[str, str]) -> Any:
        return self._family(name, description).Metric(labels=labels)

    # ------------------------------------------------------------------ threshold
    def _reload(self) -> None:
        """Re-read the threshold file when it changed; keep the last value on error."""
        if not self.threshold_file:
            return
        try:
            mtime = os.stat(self.threshold_file).st_mtime_ns
            if mtime == self._mtime:
                return
            with open(self.threshold_file, encoding="utf-8") as fh:
                value = float(fh.read().strip())
        except (OSError, ValueError):
            return
        if 0.0 <= value <= 1.0:
            self.threshold = value
            self._mtime = mtime

    def _request_threshold(self, request: Any) -> float:
        try:
            params = json.loads(request.parameters() or "{}")
            value = float(params["threshold"])
        except (KeyError, TypeError, ValueError):
            return self.threshold
        return value if 0.0 <= value <= 1.0 else self.threshold

    # ------------------------------------------------------------------ latency summary
    def _refresh(self, first: bool = False) -> None:
        """Set the quantile gauges: the holder of the shared windows' writer lock,
        from the union of all the instances' answers (NaN when none has any)."""
        now = time.monotonic()
        if self._shared is not None:
            if not self._shared.try_writer():
                return
            hist = self._shared.histogram(now)
        else:
            with self._lock:
                hist = self._window.histogram(now)
            if not first and int(hist.sum()) == 0:
                return
        for q, value in zip(QUANTILES, self._window.quantiles(hist, QUANTILES), strict=True):
            self.m_summary[q].set(value)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(SUMMARY_REFRESH_S):
            # Never let the exporter die: the next refresh retries.
            with contextlib.suppress(Exception):
                self._refresh()

    # ------------------------------------------------------------------ serving
    def _tier2(self, inputs: dict[str, Any], timeout: float) -> dict[str, Any]:
        body = {"inputs": [
            {"name": n, "shape": list(a.shape), "datatype": _DATATYPES[str(a.dtype)],
             "data": a.ravel().tolist()} for n, a in inputs.items()],
            "outputs": [{"name": n} for n in self.outputs],
            # Tier 2 may drop it in its queue past this (a queue policy that allows
            # the override); the call below gives up then anyway.
            "parameters": {"timeout": max(1, int(timeout * 1e6))}}
        headers = {"Content-Type": "application/json"}
        base = self.tier2_url
        if self._tier2_address is not None:  # connect to the address, name in Host
            started = time.monotonic()
            address = self._tier2_address.get(timeout)
            timeout -= time.monotonic() - started
            if timeout <= 0:
                raise TimeoutError("the tier-2 lookup spent the timeout")
            host = f"[{address}]" if ":" in address else address
            base = f"http://{host}:{self._tier2_port}"
            headers["Host"] = f"{self._tier2_host}:{self._tier2_port}"
        req = urllib.request.Request(
            f"{base}/v2/models/{self.tier2}/infer",
            data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload: dict[str, Any] = json.loads(resp.read())
        out: dict[str, Any] = {}
        for o in payload["outputs"]:
            out[o["name"]] = np.asarray(o["data"], dtype=_NUMPY[o["datatype"]]).reshape(
                o["shape"])
        return out

    def _release(self, held: _Held) -> None:
        """One holder of ``held`` is done with it; the last frees its place."""
        with self._lock:
            held.refs -= 1
            if held.refs:
                return
            self._pending -= 1
            self.m_pending.increment(-1)

    def _answer(self, held: _Held, outs: dict[str, Any], escalated: int,
                fallback: int) -> None:
        tensors = [pb_utils.Tensor(k, v) for k, v in outs.items()]
        response = pb_utils.InferenceResponse(output_tensors=tensors)
        # Counted before the answer leaves: a client that reads the counters after its
        # answer sees its request in them.
        now = time.monotonic()
        took_us = (now - held.start) * 1e6
        with self._lock:
            self._window.add(now, took_us)
            self.m_requests.increment(held.rows)
            if escalated:
                self.m_escalated.increment(escalated)
            if fallback:
                self.m_fallback.increment(fallback)
            self.m_duration.increment(took_us)
        held.sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        self._release(held)  # after the send: a send that raises is failed (and released) once

    def _fail(self, held: _Held, message: str) -> None:
        self._release(held)
        _send_error(held.sender, message)

    @staticmethod
    def _gone(sender: Any, deadline: float | None) -> str:
        """Why the request's client no longer waits ("" if it does)."""
        if deadline is not None and time.monotonic() >= deadline:
            return "its deadline (the request's timeout) passed"
        try:
            if sender.is_cancelled():
                return "its client cancelled it"
        except Exception:  # a backend without cancellation: the deadline alone
            pass
        return ""

    def _drop(self, held: _Held, stage: str, why: str) -> None:
        with self._lock:
            self.m_abandoned[stage].increment(held.rows)
        self._fail(held, f"cascade router: not sent to {stage}: {why}")

    @staticmethod
    def _left(bound: float, deadline: float | None) -> tuple[float, str]:
        """Seconds left until ``bound`` or the request's deadline, whichever comes
        first, and which one that is."""
        now = time.monotonic()
        if deadline is not None and deadline < bound:
            return deadline - now, "the request's deadline"
        return bound - now, "the timeout"

    def _call_tier1(self, inputs: dict[str, Any], timeout_us: int) -> Any:
        # Triton applies the BLS request's timeout only while it waits in tier 1's
        # queue, and only under a queue policy with allow_timeout_override; a call
        # that tier 1 is computing is never cut: the caller bounds its own wait.
        bls = pb_utils.InferenceRequest(
            model_name=self.tier1, requested_output_names=self.outputs,
            inputs=[pb_utils.Tensor(n, a) for n, a in inputs.items()], timeout=timeout_us)
        return bls.exec()

    def _serve(self, held: _Held) -> None:
        """Stage 1: tier 1 through BLS; answer, or hand the request to stage 2."""
        try:
            why = self._gone(held.sender, held.deadline)
            if why:
                self._drop(held, "tier1", why)
                return
            # The tier-1 bound counts from the hand-off: waiting for a stage-1 thread
            # spends it too.
            left, which = self._left(held.start + self.tier1_timeout, held.deadline)
            if left <= 0 and which == "the request's deadline":
                # The deadline passed since _gone looked (a moment's race under load):
                # not sent, so counted as dropped before tier 1, not as a tier-1 timeout
                # (which counts calls tier 1 was sent and did not answer in time).
                self._drop(held, "tier1", "its deadline (the request's timeout) passed")
                return
            resp = None
            if left > 0:
                with self._lock:
                    held.refs += 1  # the call holds the request until it returns
                try:
                    call = self._calls.submit(self._call_tier1, held.inputs,
                                              max(1, int(left * 1e6)))
                except BaseException:
                    self._release(held)
                    raise
                call.add_done_callback(lambda _call: self._release(held))
                with contextlib.suppress(FuturesTimeout):
                    resp = call.result(timeout=left)
            if resp is None:
                with self._lock:
                    self.m_tier1_timeout.increment(held.rows)
                bound = (f"{self.tier1_timeout:g} s (tier1_timeout_s)"
                         if which == "the timeout" else which)
                self._fail(held, f"cascade router: tier 1 ({self.tier1}) did not answer "
                                 f"within {bound}")
                return
            if resp.has_error():
                self._fail(held, f"tier 1 ({self.tier1}): {resp.error().message()}")
                return
            outs = {n: pb_utils.get_output_tensor_by_name(resp, n).as_numpy().copy()
                    for n in self.outputs}
            conf = outs[self.conf_name].reshape(len(outs[self.conf_name]), -1)[:, 0]
            esc = conf < held.threshold
            if np.any(esc):
                self._stage2.submit(self._escalate, held, outs, esc, time.monotonic())
            else:
                self._answer(held, outs, 0, 0)
        except Exception as exc:  # answer every request exactly once, even on a bug
            self._fail(held, f"cascade router: {exc}")

    def _drop_escalated(self, held: _Held, esc: Any, n_esc: int, why: str) -> None:
        with self._lock:  # tier 1 answered and routed it: counted as such
            self.m_requests.increment(len(esc))
            self.m_escalated.increment(n_esc)
        self._drop(held, "tier2", why)

    def _escalate(self, held: _Held, outs: dict[str, Any], esc: Any,
                  tier1_done: float) -> None:
        """Stage 2: the escalated rows to tier 2 (tier 1's answer kept on failure)."""
        try:
            n_esc = int(esc.sum())
            why = self._gone(held.sender, held.deadline)
            if why:
                self._drop_escalated(held, esc, n_esc, why)
                return
            fallback = 0
            try:
                # The timeout counts from tier 1's answer, not from when a stage-2
                # thread took the request: waiting for a thread spends it too. A
                # request's deadline that comes sooner bounds the call instead.
                left, which = self._left(tier1_done + self.timeout, held.deadline)
                if left <= 0 and which == "the request's deadline":
                    # Passed since _gone looked (a moment's race under load): not
                    # sent, so dropped before tier 2 as the check would have.
                    self._drop_escalated(held, esc, n_esc,
                                         "its deadline (the request's timeout) passed")
                    return
                if left <= 0:
                    raise TimeoutError("no stage-2 thread before the tier-2 timeout")
                answers = self._tier2({n: a[esc] for n, a in held.inputs.items()}, left)
                for n in self.outputs:
                    if n in answers:
                        outs[n][esc] = answers[n].astype(outs[n].dtype).reshape(
                            outs[n][esc].shape)
            except Exception:  # any tier-2 failure or timeout: keep tier 1's answer
                fallback = n_esc
            self._answer(held, outs, n_esc, fallback)
        except Exception as exc:
            self._fail(held, f"cascade router: {exc}")

    @staticmethod
    def _deadline(request: Any, start: float) -> float | None:
        """The request's timeout (microseconds; 0: none) as a deadline from ``start``."""
        try:
            us = int(request.timeout())
        except Exception:  # a backend without request timeouts
            return None
        return start + us / 1e6 if us > 0 else None

    def _admit(self) -> bool:
        """Take a place for one more request, if this instance holds fewer than
        ``max_pending``."""
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
            self.m_pending.increment(1)
            return True

    def execute(self, requests: list[Any]) -> None:
        self._reload()
        start = time.monotonic()
        for r in requests:
            sender = r.get_response_sender()
            if not self._admit():
                # Beyond its bound the router holds nothing more: answered at once,
                # as Triton answers beyond a model's max_queue_size.
                rows = len(pb_utils.get_input_tensor_by_name(r, self.inputs[0]).as_numpy())
                with self._lock:
                    self.m_rejected.increment(rows)
                _send_error(sender, f"cascade router: exceeds its maximum of "
                                    f"{self.max_pending} held requests (max_pending)",
                            unavailable=True)
                continue
            try:
                # Copied here: the request's tensors need not outlive execute.
                inputs = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy().copy()
                          for n in self.inputs}
                held = _Held(sender, inputs, self._request_threshold(r), start,
                             self._deadline(r, start))
                self._stage1.submit(self._serve, held)
            except Exception as exc:
                with self._lock:
                    self._pending -= 1
                    self.m_pending.increment(-1)
                _send_error(sender, f"cascade router: {exc}")
        return None

    def finalize(self) -> None:
        self._stop.set()
        if self._shared is not None:
            self._shared.close()
        self._stage1.shutdown(wait=True)
        self._stage2.shutdown(wait=True)
        self._calls.shutdown(wait=False)  # a wedged tier-1 call must not hold the unload


def _log_warn(message: str) -> None:
    with contextlib.suppress(Exception):  # a stand-in without Logger
        pb_utils.Logger.log_warn(message)


def _send_error(sender: Any, message: str, unavailable: bool = False) -> None:
    err = (pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE) if unavailable
           else pb_utils.TritonError(message))
    sender.send(pb_utils.InferenceResponse(error=err),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

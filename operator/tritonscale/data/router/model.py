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
  answered at once.
* Stage 2 (another ``workers`` threads): a request with rows whose confidence
  (``confidence_output``) is below the threshold sends those rows to the tier-2 model
  over the KServe v2 HTTP/JSON protocol (standard library only: the stub environment
  and the stock Triton image carry numpy but not tritonclient); their tier-2 answers
  replace tier 1's. If tier 2 fails or does not answer within ``tier2_timeout_s``, the
  rows keep tier 1's answer and a fallback is counted (the cascade degrades to tier 1,
  it does not fail requests). The timeout counts from tier 1's answer, so a request
  that waited for a stage-2 thread has less of it (none left: a fallback at once). A
  slow tier 2 holds stage-2 threads only, never the tier-1-only requests.
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

Because ``execute`` returns before the requests are answered, Triton's own request
statistics for this model (``nv_inference_request_summary_us``, ``..._duration_us``)
end at the hand-off and do not hold the cascade's latency. The router measures each
request from the hand-off to its response and exports that itself:
``tritonscale_cascade_request_summary_us{quantile=...}`` (the quantiles Triton's
summary has, over a sliding minute, as Triton's: NaN when idle; kept as per-second
histograms, :class:`LatencyWindow`: fixed memory, each quantile within 0.5 %) and
``tritonscale_cascade_request_duration_us`` (the sum, a counter). Counters of
inferences (rows): ``tritonscale_cascade_requests_total`` (tier 1 answered them through
the router: each is then answered, or dropped before its tier-2 call),
``tritonscale_cascade_escalated_total`` (of those, below the threshold),
``tritonscale_cascade_fallback_total``, ``tritonscale_cascade_abandoned_total``; and
the gauge ``tritonscale_cascade_pending_requests``: requests the router holds (handed
off, not yet answered), in a thread or waiting for one. Triton's own
``nv_inference_pending_request_count`` of the router is ~0 (its execute returns at
once), so without it a backlog in the router's queues would show nowhere. All are
exported through Triton's custom metrics API, on the server's metrics port.

The threshold comes from ``threshold_file`` (a ConfigMap mounted as a directory: the
kubelet swaps the file in place), re-read whenever its modification time changes, so
it changes without a restart; a request parameter ``threshold`` overrides it for
that request.

Parameters (config.pbtxt ``parameters``): tier1_model, tier2_url (http://host:port),
tier2_model, confidence_output, threshold (initial), threshold_file (optional),
tier2_timeout_s (default 10), workers (per stage and instance, default 256).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
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


class LatencyWindow:
    """Latencies over a sliding window of whole seconds, as per-second histograms."""

    def __init__(self, seconds: float = SUMMARY_WINDOW_S) -> None:
        self.seconds = math.ceil(seconds)
        self._log_ratio = math.log(BIN_RATIO)
        self.bins = math.ceil(math.log(BIN_MAX_US / BIN_MIN_US) / self._log_ratio) + 1
        self.counts = np.zeros((self.seconds, self.bins), dtype=np.int32)
        self.stamp = np.full(self.seconds, -1, dtype=np.int64)  # the second a row holds
        self.middle = BIN_MIN_US * BIN_RATIO ** (np.arange(self.bins) + 0.5)

    def add(self, now: float, value_us: float) -> None:
        sec = int(now)
        row = sec % self.seconds
        if self.stamp[row] != sec:
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
        self.timeout = float(params.get("tier2_timeout_s", "10"))
        workers = int(params.get("workers", "256"))
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
        self.m_pending = self._family(
            "tritonscale_cascade_pending_requests",
            "Requests the cascade router holds (handed off by its execute, not yet "
            "answered): in a thread or waiting for one", gauge=True).Metric(labels=labels)
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
        self._window = LatencyWindow()
        self._stop = threading.Event()
        self._stage1 = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tier1")
        self._stage2 = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tier2")
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._reload()
        self._refresh()
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
    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            hist = self._window.histogram(now)
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
            "outputs": [{"name": n} for n in self.outputs]}
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

    def _answer(self, sender: Any, outs: dict[str, Any], rows: int, escalated: int,
                fallback: int, start: float) -> None:
        tensors = [pb_utils.Tensor(k, v) for k, v in outs.items()]
        response = pb_utils.InferenceResponse(output_tensors=tensors)
        # Counted before the answer leaves: a client that reads the counters after its
        # answer sees its request in them.
        now = time.monotonic()
        took_us = (now - start) * 1e6
        with self._lock:
            self._window.add(now, took_us)
            self.m_requests.increment(rows)
            if escalated:
                self.m_escalated.increment(escalated)
            if fallback:
                self.m_fallback.increment(fallback)
            self.m_duration.increment(took_us)
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        with self._lock:  # after the send: a send that raises is failed (and uncounted) once
            self.m_pending.increment(-1)

    def _fail(self, sender: Any, message: str) -> None:
        with self._lock:
            self.m_pending.increment(-1)
        err = pb_utils.TritonError(message)
        sender.send(pb_utils.InferenceResponse(error=err),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

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

    def _drop(self, sender: Any, stage: str, rows: int, why: str) -> None:
        with self._lock:
            self.m_abandoned[stage].increment(rows)
        self._fail(sender, f"cascade router: not sent to {stage}: {why}")

    def _serve(self, sender: Any, inputs: dict[str, Any], thr: float, start: float,
               deadline: float | None) -> None:
        """Stage 1: tier 1 through BLS; answer, or hand the request to stage 2."""
        try:
            why = self._gone(sender, deadline)
            if why:
                rows = len(next(iter(inputs.values()))) if inputs else 1
                self._drop(sender, "tier1", rows, why)
                return
            bls = pb_utils.InferenceRequest(
                model_name=self.tier1, requested_output_names=self.outputs,
                inputs=[pb_utils.Tensor(n, a) for n, a in inputs.items()])
            resp = bls.exec()
            if resp.has_error():
                self._fail(sender, f"tier 1 ({self.tier1}): {resp.error().message()}")
                return
            outs = {n: pb_utils.get_output_tensor_by_name(resp, n).as_numpy().copy()
                    for n in self.outputs}
            conf = outs[self.conf_name].reshape(len(outs[self.conf_name]), -1)[:, 0]
            esc = conf < thr
            if np.any(esc):
                self._stage2.submit(self._escalate, sender, inputs, outs, esc, start,
                                    time.monotonic(), deadline)
            else:
                self._answer(sender, outs, len(conf), 0, 0, start)
        except Exception as exc:  # answer every request exactly once, even on a bug
            self._fail(sender, f"cascade router: {exc}")

    def _escalate(self, sender: Any, inputs: dict[str, Any], outs: dict[str, Any],
                  esc: Any, start: float, tier1_done: float, deadline: float | None) -> None:
        """Stage 2: the escalated rows to tier 2 (tier 1's answer kept on failure)."""
        try:
            n_esc = int(esc.sum())
            why = self._gone(sender, deadline)
            if why:
                with self._lock:  # tier 1 answered and routed it: counted as such
                    self.m_requests.increment(len(esc))
                    self.m_escalated.increment(n_esc)
                self._drop(sender, "tier2", len(esc), why)
                return
            fallback = 0
            try:
                # The timeout counts from tier 1's answer, not from when a stage-2
                # thread took the request: waiting for a thread spends it too.
                left = self.timeout - (time.monotonic() - tier1_done)
                if left <= 0:
                    raise TimeoutError("no stage-2 thread before the tier-2 timeout")
                answers = self._tier2({n: a[esc] for n, a in inputs.items()}, left)
                for n in self.outputs:
                    if n in answers:
                        outs[n][esc] = answers[n].astype(outs[n].dtype).reshape(
                            outs[n][esc].shape)
            except Exception:  # any tier-2 failure or timeout: keep tier 1's answer
                fallback = n_esc
            self._answer(sender, outs, len(esc), n_esc, fallback, start)
        except Exception as exc:
            self._fail(sender, f"cascade router: {exc}")

    @staticmethod
    def _deadline(request: Any, start: float) -> float | None:
        """The request's timeout (microseconds; 0: none) as a deadline from ``start``."""
        try:
            us = int(request.timeout())
        except Exception:  # a backend without request timeouts
            return None
        return start + us / 1e6 if us > 0 else None

    def execute(self, requests: list[Any]) -> None:
        self._reload()
        start = time.monotonic()
        with self._lock:
            self.m_pending.increment(len(requests))
        for r in requests:
            # Copied here: the request's tensors need not outlive execute.
            inputs = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy().copy()
                      for n in self.inputs}
            self._stage1.submit(self._serve, r.get_response_sender(), inputs,
                                self._request_threshold(r), start, self._deadline(r, start))
        return None

    def finalize(self) -> None:
        self._stop.set()
        self._stage1.shutdown(wait=True)
        self._stage2.shutdown(wait=True)

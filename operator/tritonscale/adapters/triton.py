"""Talk to one Triton pod directly (``tritonclient[http]`` and its metrics port).

* :class:`TritonPod` -- server liveness/readiness, per-model readiness and the
  statistics extension (cumulative counts and queue/compute times, overall and per
  batch size) as typed values.
* :class:`MetricsScraper` -- a signal source for when no Prometheus is configured:
  scrapes the pod's metrics port (Prometheus text format), and derives the request rate
  and mean times from two scrapes' counter deltas.

Like the Prometheus source, nothing here raises for an unreachable or misbehaving pod:
readiness is ``False`` and values are ``None`` (unknown), with the reason in ``error``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tritonscale.adapters import outbound, resolve
from tritonscale.adapters.signals import (
    CASCADE_DURATION,
    CASCADE_ESCALATED,
    CASCADE_PENDING,
    CASCADE_REQUESTS,
    CASCADE_SUMMARY,
    ESCALATION_OUT_OF_RANGE,
    GroupKey,
    Signals,
    finite,
)

# A Triton pod's /metrics is a few hundred KB even with many models.
MAX_METRICS_BYTES = 16 * 1024 * 1024


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass(frozen=True)
class Readiness:
    """Health of one Triton pod as seen from the operator."""

    live: bool
    ready: bool
    model_ready: bool
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.live and self.ready and self.model_ready


@dataclass(frozen=True)
class Duration:
    """A cumulative (count, nanoseconds) pair from the statistics extension."""

    count: int = 0
    ns: int = 0

    @property
    def mean_ms(self) -> float | None:
        return self.ns / self.count / 1e6 if self.count else None

    def __sub__(self, other: Duration) -> Duration:
        return Duration(self.count - other.count, self.ns - other.ns)

    def __add__(self, other: Duration) -> Duration:
        return Duration(self.count + other.count, self.ns + other.ns)

    @classmethod
    def parse(cls, data: Any) -> Duration:
        if not isinstance(data, Mapping):
            return cls()
        return cls(int(data.get("count", 0) or 0), int(data.get("ns", 0) or 0))


@dataclass(frozen=True)
class BatchStatistics:
    """Executions of batches of exactly ``batch_size`` (one entry per size seen)."""

    batch_size: int
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()

    @property
    def count(self) -> int:
        return self.compute_infer.count

    @property
    def compute_ms(self) -> float | None:
        """Mean time of one batch in the backend: input + infer + output."""
        total = self.compute_input.ns + self.compute_infer.ns + self.compute_output.ns
        return total / self.count / 1e6 if self.count else None

    def __sub__(self, other: BatchStatistics) -> BatchStatistics:
        return BatchStatistics(
            self.batch_size,
            self.compute_input - other.compute_input,
            self.compute_infer - other.compute_infer,
            self.compute_output - other.compute_output,
        )

    def __add__(self, other: BatchStatistics) -> BatchStatistics:
        return BatchStatistics(
            self.batch_size,
            self.compute_input + other.compute_input,
            self.compute_infer + other.compute_infer,
            self.compute_output + other.compute_output,
        )


@dataclass(frozen=True)
class ModelStatistics:
    """Cumulative statistics of one model on one pod (all versions summed).

    Subtract an earlier snapshot (``later - earlier``) to get the activity in between.
    """

    model: str
    inference_count: int = 0  # items (a batch of n counts n)
    execution_count: int = 0  # backend executions (batches)
    success: Duration = Duration()  # end-to-end, per request
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    batches: tuple[BatchStatistics, ...] = ()

    @property
    def mean_queue_ms(self) -> float | None:
        return self.queue.mean_ms

    @property
    def mean_request_ms(self) -> float | None:
        return self.success.mean_ms

    def batch(self, size: int) -> BatchStatistics:
        for b in self.batches:
            if b.batch_size == size:
                return b
        return BatchStatistics(size)

    def __sub__(self, other: ModelStatistics) -> ModelStatistics:
        sizes = sorted({b.batch_size for b in self.batches} | {b.batch_size for b in other.batches})
        return ModelStatistics(
            model=self.model,
            inference_count=self.inference_count - other.inference_count,
            execution_count=self.execution_count - other.execution_count,
            success=self.success - other.success,
            fail=self.fail - other.fail,
            queue=self.queue - other.queue,
            compute_input=self.compute_input - other.compute_input,
            compute_infer=self.compute_infer - other.compute_infer,
            compute_output=self.compute_output - other.compute_output,
            batches=tuple(self.batch(s) - other.batch(s) for s in sizes),
        )

    @classmethod
    def parse(cls, model: str, payload: Any) -> ModelStatistics:
        """From the statistics extension's JSON (``GET /v2/models/<m>/stats``)."""
        entries = payload.get("model_stats", []) if isinstance(payload, Mapping) else []
        total = cls(model)
        for e in entries:
            if not isinstance(e, Mapping) or e.get("name", model) != model:
                continue
            st = e.get("inference_stats", {})
            by_size: dict[int, BatchStatistics] = {b.batch_size: b for b in total.batches}
            for b in e.get("batch_stats", []) or []:
                size = int(b.get("batch_size", 0))
                entry = BatchStatistics(
                    size,
                    Duration.parse(b.get("compute_input")),
                    Duration.parse(b.get("compute_infer")),
                    Duration.parse(b.get("compute_output")),
                )
                by_size[size] = by_size[size] + entry if size in by_size else entry
            total = cls(
                model=model,
                inference_count=total.inference_count + int(e.get("inference_count", 0) or 0),
                execution_count=total.execution_count + int(e.get("execution_count", 0) or 0),
                success=total.success + Duration.parse(st.get("success")),
                fail=total.fail + Duration.parse(st.get("fail")),
                queue=total.queue + Duration.parse(st.get("queue")),
                compute_input=total.compute_input + Duration.parse(st.get("compute_input")),
                compute_infer=total.compute_infer + Duration.parse(st.get("compute_infer")),
                compute_output=total.compute_output + Duration.parse(st.get("compute_output")),
                batches=tuple(by_size[s] for s in sorted(by_size)),
            )
        return total


class TritonPod:
    """Readiness and statistics of one Triton server (``url`` is ``host:port`` of HTTP).

    Calls never raise for network problems: readiness reads ``False`` and
    :meth:`statistics` returns ``None``, with the reason in :attr:`last_error`.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url.removeprefix("http://")
        self.timeout_s = timeout_s
        self.last_error = ""
        self._lock = threading.Lock()
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            import tritonclient.http as httpclient  # gevent-based: import on first use

            # geventhttpclient looks the host up with no deadline: connect to an address
            # looked up within the timeout (a name that does not resolve is an error).
            address = resolve.pinned(self.url, self.timeout_s)
            self._client = httpclient.InferenceServerClient(
                address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                client.close()

    def _call(self, fn: Callable[[Any], Any]) -> tuple[Any, str]:
        with self._lock:
            try:
                return fn(self._get_client()), ""
            except Exception as exc:  # tritonclient raises many types for one failure
                self._drop_client()
                self.last_error = _short(exc)
                return None, self.last_error

    def readiness(self, model: str, version: str = "") -> Readiness:
        """Server live, server ready and ``model`` ready (all ``False`` if unreachable)."""
        live, err = self._call(lambda c: bool(c.is_server_live()))
        if err:
            return Readiness(False, False, False, err)
        ready, err2 = self._call(lambda c: bool(c.is_server_ready()))
        model_ready, err3 = self._call(lambda c: bool(c.is_model_ready(model, version)))
        return Readiness(
            bool(live), bool(ready), bool(model_ready), "; ".join(e for e in (err2, err3) if e)
        )

    def statistics(self, model: str, version: str = "") -> ModelStatistics | None:
        """Cumulative statistics of ``model`` from the statistics extension, or ``None``."""
        payload, err = self._call(lambda c: c.get_inference_statistics(model, version))
        if err:
            return None
        try:
            return ModelStatistics.parse(model, payload)
        except (TypeError, ValueError, AttributeError) as exc:
            self.last_error = f"bad statistics from {self.url}: {_short(exc)}"
            return None

    def statistics_after(
        self,
        model: str,
        earlier: ModelStatistics,
        requests: int,
        *,
        version: str = "",
        settle_s: float = 1.0,
    ) -> ModelStatistics | None:
        """Statistics once ``requests`` more requests than ``earlier`` are recorded.

        Triton records a request's and its batch's statistics after the backend has
        sent the response, so a read right after a reply may not hold them yet (seen:
        the Python backend on a busy host). Polls until the requests (success or
        failure) and at least one more execution are in, for up to ``settle_s``, then
        returns the last snapshot, complete or not; ``None`` if statistics fail.
        """
        deadline = time.monotonic() + settle_s
        delay = 0.002
        while True:
            now = self.statistics(model, version)
            if now is None or time.monotonic() >= deadline:
                return now
            done = now.success.count + now.fail.count
            done -= earlier.success.count + earlier.fail.count
            ran = now.execution_count - earlier.execution_count
            if done >= requests and ran >= min(requests, 1):
                return now
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def model_config(self, model: str, version: str = "") -> Mapping[str, Any] | None:
        config, err = self._call(lambda c: c.get_model_config(model, version))
        return config if not err and isinstance(config, Mapping) else None

    def close(self) -> None:
        with self._lock:
            self._drop_client()


# -- direct scrape of the metrics port -----------------------------------------------

_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_request_duration_us": "duration_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_pending_request_count": "pending",
}
_SUMMARY = "nv_inference_request_summary_us"
# A cascade router's counters, on the tier-1 pods' metrics port beside Triton's.
_CASCADE = {CASCADE_REQUESTS: "cascade_requests", CASCADE_ESCALATED: "cascade_escalated"}
# A router that answered nothing between two scrapes: no signal, yet no fault either.
NO_CASCADE_REQUESTS = "no cascade requests in the window"


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape of a pod's metrics for one model (versions summed).

    ``taken_at`` is the scraper's clock (monotonic seconds).  ``quantiles`` maps a
    quantile (0.95) to the latency summary's value in microseconds, as exported. For a
    cascade's router, its own end-to-end summary, duration counter and pending gauge
    replace Triton's (which end when the router's execute hands the request off).
    """

    taken_at: float
    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0
    queue_us: float = 0.0
    pending: float = 0.0
    quantiles: Mapping[float, float] = field(default_factory=dict)
    found: bool = False
    # A cascade router's counters (None: not exported, so no escalation signal).
    cascade_requests: float | None = None
    cascade_escalated: float | None = None

    @classmethod
    def parse(cls, text: str, model: str, taken_at: float) -> MetricsSnapshot:
        """Parse Prometheus text format; raises ``ValueError`` on malformed text."""
        sums: dict[str, float] = dict.fromkeys(_COUNTERS.values(), 0.0)
        quantiles: dict[float, float] = {}
        cascade: dict[str, float] = {}
        own_quantiles: dict[float, float] = {}
        own_duration: float | None = None
        own_pending: float | None = None
        found = False
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("model") != model:
                    continue
                # The parser renames counter samples to <name>_total; Triton's lack it.
                name = family.name if family.type in ("counter", "gauge") else s.name
                if name in _COUNTERS:
                    found = True
                    value = finite(s.value)
                    if value is not None:
                        sums[_COUNTERS[name]] += value
                elif s.name in _CASCADE and family.type == "counter":
                    value = finite(s.value)
                    if value is not None and value >= 0:
                        key = _CASCADE[s.name]
                        cascade[key] = cascade.get(key, 0.0) + value
                elif name == CASCADE_PENDING and family.type == "gauge":
                    value = finite(s.value)
                    if value is not None:
                        own_pending = (own_pending or 0.0) + value
                elif name == CASCADE_DURATION and family.type == "counter":
                    value = finite(s.value)
                    if value is not None:
                        own_duration = (own_duration or 0.0) + value
                elif s.name == CASCADE_SUMMARY and "quantile" in s.labels:
                    q, value = finite(s.labels["quantile"]), finite(s.value)
                    if q is not None and value is not None:
                        own_quantiles[q] = max(value, own_quantiles.get(q, value))
                elif s.name == _SUMMARY and "quantile" in s.labels:
                    q, value = finite(s.labels["quantile"]), finite(s.value)
                    if q is not None and value is not None:
                        # Several versions: keep the max, as for several pods.
                        quantiles[q] = max(value, quantiles.get(q, value))
        both = len(cascade) == len(_CASCADE)  # one without the other is no signal
        if own_duration is not None:
            sums["duration_us"] = own_duration
            quantiles = own_quantiles  # an idle router's NaN: no quantile, as Triton's
        if own_pending is not None:
            sums["pending"] = own_pending  # the router holds its requests past execute
        return cls(taken_at=taken_at, quantiles=quantiles, found=found,
                   cascade_requests=cascade["cascade_requests"] if both else None,
                   cascade_escalated=cascade["cascade_escalated"] if both else None,
                   **sums)


def signals_between(earlier: MetricsSnapshot, later: MetricsSnapshot, percentile: float) -> Signals:
    """Signals of the interval between two scrapes of the same pod and model.

    Rate and mean latency come from counter deltas; the percentile from the later
    scrape's summary quantile when exported (Triton's summary covers a sliding window
    of about a minute), else the mean, flagged ``latency_is_mean``.
    """
    if not (earlier.found and later.found):
        return Signals.unknown(percentile, "model not found in metrics")
    elapsed = later.taken_at - earlier.taken_at
    if elapsed <= 0:
        return Signals.unknown(percentile, "scrapes are not in time order")
    d_success = later.success - earlier.success
    d_failure = later.failure - earlier.failure
    d_duration = later.duration_us - earlier.duration_us
    d_queue = later.queue_us - earlier.queue_us
    if min(d_success, d_failure, d_duration, d_queue) < 0:
        return Signals.unknown(percentile, "counter reset between scrapes (restart?)")
    rate = (d_success + d_failure) / elapsed
    mean_ms = d_duration / d_success / 1000 if d_success > 0 else None
    queue_ms = d_queue / d_success / 1000 if d_success > 0 else None
    q = round(percentile / 100, 6)
    exported = next((v for k, v in later.quantiles.items() if abs(k - q) < 1e-9), None)
    latency: float | None
    if exported is not None and d_success > 0:
        latency, is_mean = exported / 1000, False
    else:
        latency, is_mean = mean_ms, mean_ms is not None
    escalated, escalation_error, answered = _escalation_between(earlier, later)
    return Signals(
        percentile=percentile,
        request_rate=rate,
        latency_ms=latency,
        latency_is_mean=is_mean,
        queue_ms=queue_ms,
        pending_requests=later.pending,
        escalated=escalated,
        escalation_error=escalation_error,
        escalation_weight=answered / elapsed,
    )


def _escalation_between(earlier: MetricsSnapshot, later: MetricsSnapshot
                        ) -> tuple[float | None, str, float]:
    """A router's escalated fraction between two scrapes, why it is unknown, and how
    many requests it answered meanwhile (the weight when pods are combined)."""
    if (earlier.cascade_requests is None or later.cascade_requests is None
            or earlier.cascade_escalated is None or later.cascade_escalated is None):
        return None, "no cascade router counters", 0.0
    answered = later.cascade_requests - earlier.cascade_requests
    escalated = later.cascade_escalated - earlier.cascade_escalated
    if answered < 0 or escalated < 0:
        return None, "counter reset between scrapes (restart?)", 0.0
    if answered == 0:
        return None, NO_CASCADE_REQUESTS, 0.0
    if escalated > answered:
        return None, ESCALATION_OUT_OF_RANGE, 0.0
    return escalated / answered, "", answered


def _escalation_of(items: list[Signals]) -> tuple[float | None, str, float]:
    """Pods' escalated fractions combined, weighted by the requests each answered per
    second, with that total weight.
    Pods with no request in the window do not count; any other unknown makes it
    unknown (the correction then holds)."""
    counted = [s for s in items if s.escalation_error != NO_CASCADE_REQUESTS]
    if not counted:
        return None, NO_CASCADE_REQUESTS, 0.0
    bad = [s.escalation_error or "unknown" for s in counted if s.escalated is None]
    if bad:
        return None, "; ".join(dict.fromkeys(bad)), 0.0
    weight = sum(s.escalation_weight for s in counted)
    if weight <= 0:
        return None, NO_CASCADE_REQUESTS, 0.0
    esc = sum((s.escalated or 0.0) * s.escalation_weight for s in counted) / weight
    return esc, "", weight


def aggregate(parts: Iterable[Signals], percentile: float) -> Signals:
    """Combine several pods' (or groups') signals into one.

    Rates and pending requests add up; latency is the max (an upper bound of the
    combined percentile); queue time is the rate-weighted mean; a cascade router's
    escalated fraction is weighted by the requests each part answered.  Unknown if any
    part is.
    """
    items = list(parts)
    if not items:
        return Signals.unknown(percentile, "no pods")
    bad = [s.error or "unknown" for s in items if not s.ok]
    if bad:
        return Signals.unknown(percentile, "; ".join(dict.fromkeys(bad)))
    rate = sum(s.request_rate or 0.0 for s in items)
    pending = sum(s.pending_requests or 0.0 for s in items)
    lats = [s for s in items if s.latency_ms is not None]
    latency = max((s.latency_ms for s in lats if s.latency_ms is not None), default=None)
    weighted = [(s.queue_ms, s.request_rate or 0.0) for s in items if s.queue_ms is not None]
    weight = sum(w for _, w in weighted)
    queue = sum(q * w for q, w in weighted) / weight if weight > 0 else None
    escalated, escalation_error, escalation_weight = _escalation_of(items)
    return Signals(
        percentile=percentile,
        request_rate=rate,
        latency_ms=latency,
        latency_is_mean=any(s.latency_is_mean for s in lats),
        queue_ms=queue,
        pending_requests=pending,
        escalated=escalated,
        escalation_error=escalation_error,
        escalation_weight=escalation_weight,
    )


def aggregate_groups(pods: Mapping[GroupKey, Iterable[Signals]], percentile: float) -> Signals:
    """Whole-model signals with ``groups`` filled, from per-pod signals per group."""
    groups = {key: aggregate(items, percentile) for key, items in pods.items()}
    return replace(aggregate(groups.values(), percentile), groups=groups)


class MetricsScraper:
    """Signal source reading one pod's metrics port directly (no Prometheus).

    Each :meth:`signals` call scrapes once and compares with the previous scrape, so
    the first call (and the first after a failure) returns an unknown rate.  The
    interval between calls is the rate window.
    """

    def __init__(
        self,
        metrics_url: str,
        model: str,
        *,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self.metrics_url = metrics_url
        self.model = model
        self.timeout_s = timeout_s
        self._clock = clock
        # The pod runs an image the ScaledModel's author chose: no redirects, bounded
        # time and size, and errors that never quote its answer (adapters/outbound.py).
        self._session = session or outbound.NoRedirectSession()
        self._previous: MetricsSnapshot | None = None
        self.consecutive_failures = 0
        self.last_error = ""

    def scrape(self) -> MetricsSnapshot | None:
        """One scrape, or ``None`` (reason in :attr:`last_error`)."""
        try:
            body = outbound.get(self._session, self.metrics_url, peer="Triton pod",
                                timeout_s=self.timeout_s, max_bytes=MAX_METRICS_BYTES)
        except outbound.OutboundError as exc:
            self.last_error = f"scrape {self.metrics_url}: {exc.text}"
            return None
        try:
            return MetricsSnapshot.parse(body.decode("utf-8"), self.model, self._clock())
        except Exception:  # malformed exposition text: the parser's error quotes it
            self.last_error = f"scrape {self.metrics_url}: invalid metrics text"
            return None

    def signals(self, percentile: float) -> Signals:
        snap = self.scrape()
        if snap is None:
            self._previous = None
            result = Signals.unknown(percentile, self.last_error)
        elif self._previous is None:
            self._previous = snap
            result = Signals.unknown(percentile, "first scrape: need two for a rate")
        else:
            result = signals_between(self._previous, snap, percentile)
            self._previous = snap
        if result.ok:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.last_error = result.error
        return result

    def close(self) -> None:
        self._session.close()

"""Live signals for a ScaledModel from Prometheus's HTTP API.

Prometheus scrapes every Triton pod's metrics port.  Triton labels its series with
``model`` (the Triton model name) and ``version``; the scrape configuration adds the
pod's namespace and the pod labels the operator sets, ``tritonscale.io/variant`` and
``tritonscale.io/pool`` (the usual Kubernetes ``labelmap`` turns them into
``tritonscale_io_variant`` and ``tritonscale_io_pool``).  :class:`LabelMapping` says
which Prometheus labels hold each dimension; its defaults are those names, which are
also the defaults of ``spec.metrics.prometheus.labels``.

Queries (``W`` is the rate window, ``SEL`` the escaped label matchers):

* request rate: ``sum(rate({__name__=~"nv_inference_request_success|
  nv_inference_request_failure", SEL}[W]))`` -- arrivals, failed and rejected included,
  because a rejected request is demand too;
* latency at percentile ``p``: ``max(nv_inference_request_summary_us{SEL,
  quantile="p/100"} >= 0) / 1000`` when Triton runs with
  ``--metrics-config summary_latencies=true``.  A quantile of several pods cannot be
  aggregated exactly; the max over pods is an upper bound of the fleet's quantile (at
  that value every pod's CDF is >= p, hence so is the mixture's), so the SLO check is
  conservative.  ``>= 0`` drops the NaN an idle pod's summary reports.  Triton's
  summary covers a sliding window of about a minute, not ``W``. A cascade's router
  answers after its execute returned, so its own series stand in for Triton's:
  ``max(tritonscale_cascade_request_summary_us{...} >= 0) / 1000 or (`` the above
  ``unless count(tritonscale_cascade_request_summary_us{...}))``: Triton's summary of
  the router, which ends at its hand-off (~0), is never read where the router exports
  its own, even when that is NaN (an idle router: no percentile, then the mean). The
  router's series holds the quantiles of all its instances' requests (one instance
  exports those of their shared windows), so ``max`` is over pods only (likewise
  ``tritonscale_cascade_request_duration_us`` for the mean);
* otherwise the *mean* latency ``rate(nv_inference_request_duration_us[W]) /
  rate(nv_inference_request_success[W])``, flagged ``is_mean`` (a mean is not a
  percentile);
* queue time: mean ``rate(nv_inference_queue_duration_us[W]) /
  rate(nv_inference_request_success[W])``;
* pending requests: ``sum(nv_inference_pending_request_count{SEL})``; a cascade's
  router holds its requests after its execute returned, so its own gauge stands in:
  ``sum(tritonscale_cascade_pending_requests{SEL}) or`` the above;
* a cascade's escalation rate (:meth:`PrometheusSignals.escalation`):
  ``sum(rate(tritonscale_cascade_escalated_total{SEL}[W])) /
  sum(rate(tritonscale_cascade_requests_total{SEL}[W]))``, the counters the router
  model exports (labelled ``model=<router>``). No requests in the window is 0/0,
  NaN: unknown, and the planner holds its correction.

Every label value is quoted with :func:`promql_string`, so a namespace or model name
can never change the query's structure.  Nothing raises to the caller: timeouts,
connection errors, HTTP errors, garbage, empty results, NaN and Inf all yield an
unknown value (``None``) with an ``error`` text, and count as a failure in
:attr:`PrometheusSignals.consecutive_failures`.

The URL comes from a ScaledModel, whose author is not trusted (docs/security.md):
requests go through :mod:`tritonscale.adapters.outbound` (no redirects, bounded
time and size), error texts are fixed phrases (``HTTP 403 from Prometheus``,
``Prometheus: timeout``) that never quote the answer, and a URL outside the
operator's :class:`UrlAllowlist` is never contacted.  (``prometheus-api-client``
was dropped for this: it follows redirects and quotes response bodies in its
exceptions.)
"""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import requests

from tritonscale.adapters import outbound
from tritonscale.adapters.signals import (
    CASCADE_DURATION,
    CASCADE_ESCALATED,
    CASCADE_PENDING,
    CASCADE_REQUESTS,
    CASCADE_SUMMARY,
    ESCALATION_OUT_OF_RANGE,
    Breakdown,
    GroupKey,
    Reading,
    Signals,
    finite,
)
from tritonscale.core.render import quantile_label as quantile_label
from tritonscale.core.spec import PROMETHEUS_URL_PATTERN, PrometheusSource

_BASE_URL = re.compile(PROMETHEUS_URL_PATTERN)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # fullmatch: no trailing newline

REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_FAILURE = "nv_inference_request_failure"
REQUEST_DURATION = "nv_inference_request_duration_us"
REQUEST_SUMMARY = "nv_inference_request_summary_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
PENDING = "nv_inference_pending_request_count"


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal.

    PromQL unquotes strings with Go's rules; JSON's escapes (``\\"``, ``\\\\``, ``\\n``,
    ``\\uXXXX`` for control characters) are a subset of them, and ``ensure_ascii=False``
    keeps other characters literal (Go rejects JSON's surrogate-pair escapes).
    """
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class LabelMapping:
    """Which Prometheus labels hold each dimension of a ScaledModel's series.

    ``model`` holds the Triton model name (Triton's own label); ``extra`` are further
    exact matchers added to every query (e.g. ``(("job", "triton"),)``).
    """

    namespace: str = "namespace"
    model: str = "model"
    variant: str = "tritonscale_io_variant"
    pool: str = "tritonscale_io_pool"
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        names = [self.namespace, self.model, self.variant, self.pool, *(k for k, _ in self.extra)]
        for name in names:
            if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"not a Prometheus label name: {name!r}")
        if len({self.variant, self.pool}) != 2:
            raise ValueError("variant and pool must be different labels")

    @classmethod
    def from_source(cls, source: PrometheusSource) -> LabelMapping:
        return cls(
            namespace=source.namespace_label,
            model=source.model_label,
            variant=source.variant_label,
            pool=source.pool_label,
            extra=tuple(source.selector),
        )

    def selector(self, namespace: str, model: str) -> str:
        """The escaped label matchers (without braces) selecting one ScaledModel."""
        pairs = [(self.namespace, namespace), (self.model, model), *self.extra]
        return ",".join(f"{k}={promql_string(v)}" for k, v in pairs)


NOT_ALLOWED = (
    "Prometheus: spec.metrics.prometheus.url is not on the operator's list of allowed "
    "Prometheus URLs (--allow-prometheus-url / chart value prometheus.allowedUrls); "
    "no request was sent"
)


@dataclass(frozen=True)
class UrlAllowlist:
    """The Prometheus URLs ScaledModels may make the operator query (an operator setting).

    Each entry is a base URL; a ScaledModel's URL is allowed when it has the same
    scheme, host and port (default 80/443) as an entry and its path is the entry's
    path or below it, segment-wise (``http://p:9090/prom`` allows
    ``http://p:9090/prom/x``, not ``http://p:9090/prometheus`` nor
    ``http://p:9090.evil.example``).  Paths with ``.``/``..`` segments or percent
    escapes are never allowed.  ``*`` allows every URL (``allow_all``).
    """

    prefixes: tuple[str, ...] = ()
    allow_all: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> UrlAllowlist:
        """From flag/env entries; raises ``ValueError`` naming a bad entry."""
        prefixes: list[str] = []
        allow_all = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                allow_all = True
                continue
            if not _BASE_URL.fullmatch(entry) or _split(entry) is None:
                raise ValueError(f"not a base URL (http(s)://host[:port][/path]): {entry!r}")
            prefixes.append(entry)
        return cls(tuple(prefixes), allow_all)

    def allows(self, url: str) -> bool:
        if not _BASE_URL.fullmatch(url):
            return False
        if self.allow_all:
            return True
        want = _split(url)
        if want is None:
            return False
        for prefix in self.prefixes:
            have = _split(prefix)
            if have is None or have[:3] != want[:3]:
                continue
            base, path = have[3], want[3]
            if path == base or path.startswith(base + "/") or base == "":
                return True
        return False


def _split(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path without trailing /) or None if unusable."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or parts.username is not None or parts.query or parts.fragment:
        return None
    if port is None:
        port = 443 if scheme == "https" else 80
    path = parts.path.rstrip("/")
    segments = path.split("/")
    if "%" in path or "." in segments or ".." in segments:
        return None
    return scheme, host, port, path


class _QueryError(Exception):
    """The query got no usable answer (transport, HTTP or format error)."""


Sample = tuple[Mapping[str, str], float | None]


class PrometheusSignals:
    """Reads a ScaledModel's load and latency from Prometheus' HTTP API.

    ``window_s`` is the range of ``rate()``; it should span several scrape intervals.
    ``at`` (unix seconds) evaluates a query at a past instant instead of now.

    ``consecutive_failures`` counts calls in a row that produced an unknown value or
    failed; any call that produced its value resets it.  For :meth:`signals` a call
    fails when ``Signals.ok`` is false, so an idle model (rate 0, latency unknown) is
    not counted as a failing source.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        labels: LabelMapping | None = None,
        window_s: int = 60,
        session: requests.Session | None = None,
        allowed: bool = True,
        max_bytes: int = outbound.DEFAULT_MAX_BYTES,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if window_s < 1:
            raise ValueError("window_s must be >= 1")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.labels = labels or LabelMapping()
        self.window_s = int(window_s)
        self.allowed = allowed
        self.max_bytes = max_bytes
        # No retries: one poll is one attempt; the caller's next tick is the retry.
        # Never a redirect (outbound.get refuses them whatever the session says).
        self._session = session or outbound.NoRedirectSession()
        self._lock = threading.Lock()
        self._failures = 0
        self._last_error = ""

    @classmethod
    def from_source(
        cls,
        source: PrometheusSource,
        *,
        window_s: int = 60,
        allowlist: UrlAllowlist | None = None,
        max_timeout_s: float | None = None,
    ) -> PrometheusSignals:
        """A client for ``source``; ``allowlist`` (the operator's setting) decides
        whether it may send any request at all (``allowed``). ``max_timeout_s`` (an
        operator setting) caps the spec's ``timeoutSeconds``: a ScaledModel must not
        hold a worker for minutes with a server that never answers."""
        timeout = source.timeout_seconds
        if max_timeout_s is not None:
            timeout = min(timeout, max_timeout_s)
        return cls(
            source.url,
            timeout_s=timeout,
            labels=LabelMapping.from_source(source),
            window_s=window_s,
            allowed=allowlist is None or allowlist.allows(source.url),
        )

    # -- failure bookkeeping -------------------------------------------------------
    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def last_error(self) -> str:
        with self._lock:
            return self._last_error

    def _record(self, ok: bool, error: str = "") -> None:
        with self._lock:
            if ok:
                self._failures = 0
            else:
                self._failures += 1
                self._last_error = error or "unknown"

    def close(self) -> None:
        self._session.close()

    # -- raw querying --------------------------------------------------------------
    def _query(self, expr: str, at: float | None) -> list[Sample]:
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        if not self.allowed:
            raise _QueryError(NOT_ALLOWED)
        try:
            body = outbound.get(
                self._session, f"{self.url}/api/v1/query", peer="Prometheus",
                timeout_s=self.timeout_s, params=params, max_bytes=self.max_bytes,
            )
        except outbound.OutboundError as exc:
            raise _QueryError(_failure(exc.text)) from None
        try:
            doc = json.loads(body)
            if doc.get("status") != "success":
                raise ValueError("status is not success")
            raw = doc["data"]["result"]
        except Exception:  # bad JSON, missing keys, wrong types: all garbage
            raise _QueryError(_failure(outbound.INVALID)) from None
        if not isinstance(raw, list):
            raise _QueryError(_failure(outbound.INVALID))
        out: list[Sample] = []
        for item in raw:
            try:
                metric = item["metric"]
                value = item["value"][1]
            except (KeyError, IndexError, TypeError):
                raise _QueryError(_failure(outbound.INVALID)) from None
            if not isinstance(metric, dict):
                raise _QueryError(_failure(outbound.INVALID))
            out.append(({str(k): str(v) for k, v in metric.items()}, finite(value)))
        return out

    def _scalar(self, expr: str, at: float | None, what: str) -> Reading:
        try:
            samples = self._query(expr, at)
        except _QueryError as exc:
            return Reading(None, str(exc))
        if not samples:
            return Reading(None, f"no data for {what}")
        if len(samples) > 1:
            return Reading(None, f"{len(samples)} series for {what}, expected one")
        value = samples[0][1]
        if value is None:
            return Reading(None, f"{what} is NaN or Inf")
        return Reading(value)

    def _grouped(self, expr: str, at: float | None, what: str) -> Breakdown:
        try:
            samples = self._query(expr, at)
        except _QueryError as exc:
            return Breakdown({}, str(exc))
        values: dict[GroupKey, Reading] = {}
        for metric, value in samples:
            key = GroupKey(metric.get(self.labels.variant, ""), metric.get(self.labels.pool, ""))
            values[key] = Reading(value, "" if value is not None else f"{what} is NaN or Inf")
        return Breakdown(values)

    # -- expressions ---------------------------------------------------------------
    def _by(self, grouped: bool) -> str:
        return f" by ({self.labels.variant},{self.labels.pool})" if grouped else ""

    def rate_expr(self, namespace: str, model: str, *, grouped: bool = False) -> str:
        sel = self.labels.selector(namespace, model)
        names = f'__name__=~"{REQUEST_SUCCESS}|{REQUEST_FAILURE}"'
        return f"sum{self._by(grouped)}(rate({{{names},{sel}}}[{self.window_s}s]))"

    def percentile_expr(
        self, namespace: str, model: str, percentile: float, *, grouped: bool = False
    ) -> str:
        sel = self.labels.selector(namespace, model)
        q = promql_string(quantile_label(percentile))
        by = self._by(grouped)
        # A cascade router's own summary first (only a router exports it); Triton's
        # summary of the router ends at its hand-off (~0): never read where the
        # router exports its own, even an idle router's NaN.
        own = f"{CASCADE_SUMMARY}{{{sel},quantile={q}}}"
        return (f"max{by}({own} >= 0) / 1000 or "
                f"(max{by}({REQUEST_SUMMARY}{{{sel},quantile={q}}} >= 0) / 1000"
                f" unless count{by}({own}))")

    def _per_request_ms_expr(
        self, numerator: str, namespace: str, model: str, *, grouped: bool
    ) -> str:
        sel = self.labels.selector(namespace, model)
        w = f"[{self.window_s}s]"
        by = self._by(grouped)
        return (
            f"sum{by}(rate({numerator}{{{sel}}}{w})) / "
            f"sum{by}(rate({REQUEST_SUCCESS}{{{sel}}}{w})) / 1000"
        )

    def mean_latency_expr(self, namespace: str, model: str, *, grouped: bool = False) -> str:
        return (self._per_request_ms_expr(CASCADE_DURATION, namespace, model, grouped=grouped)
                + " or "
                + self._per_request_ms_expr(REQUEST_DURATION, namespace, model,
                                            grouped=grouped))

    def queue_expr(self, namespace: str, model: str, *, grouped: bool = False) -> str:
        return self._per_request_ms_expr(QUEUE_DURATION, namespace, model, grouped=grouped)

    def pending_expr(self, namespace: str, model: str, *, grouped: bool = False) -> str:
        sel = self.labels.selector(namespace, model)
        by = self._by(grouped)
        return f"sum{by}({CASCADE_PENDING}{{{sel}}}) or sum{by}({PENDING}{{{sel}}})"

    def escalation_expr(self, namespace: str, router: str) -> str:
        sel = self.labels.selector(namespace, router)
        w = f"[{self.window_s}s]"
        return (f"sum(rate({CASCADE_ESCALATED}{{{sel}}}{w})) / "
                f"sum(rate({CASCADE_REQUESTS}{{{sel}}}{w}))")

    def _escalation(self, namespace: str, router: str, at: float | None) -> Reading:
        r = self._scalar(self.escalation_expr(namespace, router), at, "escalation rate")
        if r.value is not None and not 0.0 <= r.value <= 1.0:
            return Reading(None, ESCALATION_OUT_OF_RANGE)
        return r

    # -- whole ScaledModel ---------------------------------------------------------
    def escalation(self, namespace: str, router: str, *, at: float | None = None) -> Reading:
        """A cascade's escalated fraction over the window, from the router's counters
        (``router``: the router model's name)."""
        return self._recorded(self._escalation(namespace, router, at))

    def _recorded(self, reading: Reading) -> Reading:
        self._record(reading.ok, reading.error)
        return reading

    def request_rate(self, namespace: str, model: str, *, at: float | None = None) -> Reading:
        """Arrivals per second (successful + failed) over the rate window."""
        expr = self.rate_expr(namespace, model)
        return self._recorded(self._scalar(expr, at, "request rate"))

    def latency(
        self, namespace: str, model: str, percentile: float, *, at: float | None = None
    ) -> Reading:
        """Server-side latency in ms at ``percentile`` (e.g. 95 or 99.9).

        From Triton's ``nv_inference_request_summary_us`` quantile when it is exported;
        otherwise the MEAN latency over the window -- not a percentile -- with
        ``Reading.is_mean`` set.
        """
        return self._recorded(self._latency(namespace, model, percentile, at))

    def _latency(self, namespace: str, model: str, percentile: float, at: float | None) -> Reading:
        if not _valid_percentile(percentile):
            return Reading(None, f"percentile must be in (0, 100); got {percentile!r}")
        exact = self._scalar(
            self.percentile_expr(namespace, model, percentile), at, f"p{percentile} latency"
        )
        if exact.ok or _is_transport(exact.error):
            return exact
        mean = self._scalar(self.mean_latency_expr(namespace, model), at, "mean latency")
        if mean.ok:
            return Reading(mean.value, "", is_mean=True)
        return Reading(None, f"{exact.error}; {mean.error}", is_mean=False)

    def queue_time(self, namespace: str, model: str, *, at: float | None = None) -> Reading:
        """Mean time (ms) a request waited in Triton's scheduler queue over the window."""
        return self._recorded(self._scalar(self.queue_expr(namespace, model), at, "queue time"))

    def pending_requests(self, namespace: str, model: str, *, at: float | None = None) -> Reading:
        """Requests queued or executing right now, summed over pods."""
        return self._recorded(
            self._scalar(self.pending_expr(namespace, model), at, "pending requests")
        )

    # -- per (variant, pool) -------------------------------------------------------
    def _recorded_breakdown(self, b: Breakdown) -> Breakdown:
        ok = b.ok and bool(b.values) and all(r.ok for r in b.values.values())
        self._record(ok, b.error or ("" if b.values else "no data"))
        return b

    def request_rate_by_group(
        self, namespace: str, model: str, *, at: float | None = None
    ) -> Breakdown:
        expr = self.rate_expr(namespace, model, grouped=True)
        return self._recorded_breakdown(self._grouped(expr, at, "request rate"))

    def latency_by_group(
        self, namespace: str, model: str, percentile: float, *, at: float | None = None
    ) -> Breakdown:
        """Per group like :meth:`latency`: the percentile where exported, else the mean."""
        return self._recorded_breakdown(self._latency_by_group(namespace, model, percentile, at))

    def _latency_by_group(
        self, namespace: str, model: str, percentile: float, at: float | None
    ) -> Breakdown:
        if not _valid_percentile(percentile):
            return Breakdown({}, f"percentile must be in (0, 100); got {percentile!r}")
        exact = self._grouped(
            self.percentile_expr(namespace, model, percentile, grouped=True), at, "latency"
        )
        if not exact.ok:
            return exact
        mean = self._grouped(self.mean_latency_expr(namespace, model, grouped=True), at, "latency")
        values = dict(exact.values)
        for key, reading in mean.values.items():
            if key not in values or not values[key].ok:
                values[key] = Reading(reading.value, "", is_mean=True) if reading.ok else reading
        return Breakdown(values, "" if values or not mean.error else mean.error)

    def queue_time_by_group(
        self, namespace: str, model: str, *, at: float | None = None
    ) -> Breakdown:
        expr = self.queue_expr(namespace, model, grouped=True)
        return self._recorded_breakdown(self._grouped(expr, at, "queue time"))

    def pending_requests_by_group(
        self, namespace: str, model: str, *, at: float | None = None
    ) -> Breakdown:
        expr = self.pending_expr(namespace, model, grouped=True)
        return self._recorded_breakdown(self._grouped(expr, at, "pending requests"))

    # -- one poll ------------------------------------------------------------------
    def signals(
        self,
        namespace: str,
        model: str,
        percentile: float,
        *,
        at: float | None = None,
        by_group: bool = True,
        cascade: bool = False,
    ) -> Signals:
        """All signals for one ScaledModel (and, with ``by_group``, per (variant, pool)).

        ``cascade``: ``model`` is a cascade's router; its escalation rate is read too
        (unknown leaves the other signals usable: only the correction holds).

        Counts as one call for :attr:`consecutive_failures`.  Stops at the first
        transport failure, so a dead Prometheus costs one timeout, not eight.
        """
        rate = self._scalar(self.rate_expr(namespace, model), at, "request rate")
        if _is_transport(rate.error):
            result = Signals.unknown(percentile, rate.error)
            self._record(False, result.error)
            return result
        lat = self._latency(namespace, model, percentile, at)
        queue = self._scalar(self.queue_expr(namespace, model), at, "queue time")
        pending = self._scalar(self.pending_expr(namespace, model), at, "pending requests")
        groups: dict[GroupKey, Signals] = {}
        group_error = ""
        if by_group:
            groups, group_error = self._group_signals(namespace, model, percentile, at)
        esc = self._escalation(namespace, model, at) if cascade else None
        errors = [r.error for r in (rate, pending) if r.error]
        if lat.error and rate.value != 0.0:
            errors.append(lat.error)
        if group_error:
            errors.append(group_error)
        transport = [e for e in (lat.error, queue.error, pending.error) if _is_transport(e)]
        result = Signals(
            percentile=percentile,
            request_rate=rate.value,
            latency_ms=lat.value,
            latency_is_mean=lat.is_mean,
            queue_ms=queue.value,
            pending_requests=pending.value,
            error="; ".join(dict.fromkeys(transport + errors)),
            groups=groups,
            escalated=esc.value if esc is not None else None,
            escalation_error=esc.error if esc is not None else "",
        )
        self._record(result.ok, result.error)
        return result

    def _group_signals(
        self, namespace: str, model: str, percentile: float, at: float | None
    ) -> tuple[dict[GroupKey, Signals], str]:
        parts: Sequence[Breakdown] = (
            self._grouped(self.rate_expr(namespace, model, grouped=True), at, "request rate"),
            self._latency_by_group(namespace, model, percentile, at),
            self._grouped(self.queue_expr(namespace, model, grouped=True), at, "queue time"),
            self._grouped(self.pending_expr(namespace, model, grouped=True), at, "pending"),
        )
        errors = [b.error for b in parts if b.error]
        if errors:
            return {}, "per-group: " + "; ".join(dict.fromkeys(errors))
        rate, lat, queue, pending = (b.values for b in parts)
        keys = sorted(set(rate) | set(pending))
        groups: dict[GroupKey, Signals] = {}
        for key in keys:
            missing = Reading(None, "no data")
            r, lr = rate.get(key, missing), lat.get(key, missing)
            q, p = queue.get(key, missing), pending.get(key, missing)
            errs = [x.error for x in (r, p) if x.error]
            if lr.error and r.value != 0.0:
                errs.append(lr.error)
            groups[key] = Signals(
                percentile=percentile,
                request_rate=r.value,
                latency_ms=lr.value,
                latency_is_mean=lr.is_mean,
                queue_ms=q.value,
                pending_requests=p.value,
                error="; ".join(errs),
            )
        return groups, ""


def _failure(kind: str) -> str:
    """A query failure's text: ``HTTP 403 from Prometheus`` or ``Prometheus: timeout``."""
    return kind if kind.startswith("HTTP ") else f"Prometheus: {kind}"


def is_query_failure(error: str) -> bool:
    """Did the query itself fail (transport, HTTP status, garbage, not allowed)?

    As opposed to an answer without usable data ("no data for ...")."""
    return error.startswith(("Prometheus: ", "HTTP "))


_is_transport = is_query_failure


def _valid_percentile(percentile: float) -> bool:
    if not isinstance(percentile, int | float) or isinstance(percentile, bool):
        return False
    return math.isfinite(percentile) and 0 < percentile < 100

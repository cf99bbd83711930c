"""The operator's own Prometheus metrics (``/metrics`` on ``--metrics-port``, 9090).

One :class:`OperatorMetrics` owns a dedicated :class:`CollectorRegistry` (never the
process-global default one), so tests can create as many as they like and the
exposition contains only what is documented here. Handlers call the small typed
API below with values from :mod:`tritonscale.core.types`; nothing here decides
anything.

Exported series (all prefixed ``tritonscale_``; latencies in seconds, following
Prometheus' base-unit convention; money in US dollars):

=========================================  =======  =============================================
name                                       type     labels
=========================================  =======  =============================================
``tritonscale_build_info``                 gauge    ``version``
``tritonscale_decisions_total``            counter  ``namespace, scaledmodel, reason``
``tritonscale_reconcile_duration_seconds`` histo    ``namespace``
``tritonscale_desired_replicas``           gauge    ``namespace, scaledmodel, variant, pool``
``tritonscale_ready_replicas``             gauge    ``namespace, scaledmodel, variant, pool``
``tritonscale_predicted_latency_seconds``  gauge    ``namespace, scaledmodel``
``tritonscale_observed_latency_seconds``   gauge    ``namespace, scaledmodel``
``tritonscale_latency_target_seconds``     gauge    ``namespace, scaledmodel``
``tritonscale_observed_requests_per_second`` gauge  ``namespace, scaledmodel``
``tritonscale_cost_per_hour_dollars``      gauge    ``namespace, scaledmodel``
``tritonscale_slo_feasible``               gauge    ``namespace, scaledmodel`` (1 or 0)
``tritonscale_signal_failures_total``      counter  ``namespace, scaledmodel, source``
``tritonscale_signal_consecutive_failures`` gauge   ``namespace, scaledmodel``
=========================================  =======  =============================================

Unknown values (``None``, NaN, Inf: see :func:`tritonscale.core.types.finite_or_none`)
are never exported as numbers: the series is removed, so a dashboard shows a gap
rather than a made-up value. :meth:`OperatorMetrics.forget` removes every series of
a deleted ScaledModel, so cardinality follows the live objects.

The reconcile histogram is labelled by namespace only: with 2,000 ScaledModels a
per-object histogram would be ~30,000 series for little insight.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from tritonscale import __version__
from tritonscale.core.types import Decision, Observation, PlacementState, finite_or_none

PREFIX = "tritonscale_"

# Reconcile steps are mostly sub-second; the tail (API retries, slow Prometheus)
# reaches tens of seconds.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_SM = ("namespace", "scaledmodel")
_PLACEMENT = ("namespace", "scaledmodel", "variant", "pool")

Key = tuple[str, str]


class OperatorMetrics:
    """Typed facade over the operator's metrics; thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge(
            "tritonscale_build_info",
            "Operator build information (always 1).",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self.decisions = Counter(
            "tritonscale_decisions",
            "Autoscaling decisions made, by the decision's machine-readable reason.",
            [*_SM, "reason"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "tritonscale_reconcile_duration_seconds",
            "Wall time of one reconcile step (signals, decision, apply).",
            ["namespace"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.desired_replicas = Gauge(
            "tritonscale_desired_replicas",
            "Replicas the operator wants for one (variant, node pool).",
            list(_PLACEMENT),
            registry=r,
        )
        self.ready_replicas = Gauge(
            "tritonscale_ready_replicas",
            "Ready Triton replicas for one (variant, node pool).",
            list(_PLACEMENT),
            registry=r,
        )
        self.predicted_latency = Gauge(
            "tritonscale_predicted_latency_seconds",
            "Latency at the SLO percentile the planner predicts for the chosen mix.",
            list(_SM),
            registry=r,
        )
        self.observed_latency = Gauge(
            "tritonscale_observed_latency_seconds",
            "Latency at the SLO percentile observed from the signal source.",
            list(_SM),
            registry=r,
        )
        self.latency_target = Gauge(
            "tritonscale_latency_target_seconds",
            "The ScaledModel's latency SLO target (spec.slo.latency.targetMs).",
            list(_SM),
            registry=r,
        )
        self.observed_rps = Gauge(
            "tritonscale_observed_requests_per_second",
            "Arrival rate observed for the whole ScaledModel.",
            list(_SM),
            registry=r,
        )
        self.cost_per_hour = Gauge(
            "tritonscale_cost_per_hour_dollars",
            "Cost per hour of the chosen mix (node pool prices x GPUs x replicas).",
            list(_SM),
            registry=r,
        )
        self.slo_feasible = Gauge(
            "tritonscale_slo_feasible",
            "1 if the last decision predicts the SLO holds, 0 if no mix could meet it.",
            list(_SM),
            registry=r,
        )
        self.signal_failures = Counter(
            "tritonscale_signal_failures",
            "Failed reads from a signal source (prometheus, triton, ...).",
            [*_SM, "source"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "tritonscale_signal_consecutive_failures",
            "Signal reads failed in a row since the last good observation.",
            list(_SM),
            registry=r,
        )
        self._lock = threading.Lock()
        # Label values seen per ScaledModel, so forget() and stale placements can
        # remove exactly their series.
        self._placements: dict[Key, set[tuple[str, str]]] = {}
        self._reasons: dict[Key, set[str]] = {}
        self._sources: dict[Key, set[str]] = {}
        self._consecutive: dict[Key, int] = {}
        self._server: Any = None

    # ------------------------------------------------------------------ API
    def observe_decision(
        self, namespace: str, name: str, decision: Decision, reconcile_seconds: float
    ) -> None:
        """Count the decision, time the reconcile, export predicted latency/cost."""
        key = (namespace, name)
        with self._lock:
            self._reasons.setdefault(key, set()).add(decision.reason)
            self.decisions.labels(namespace, name, decision.reason).inc()
            seconds = finite_or_none(reconcile_seconds)
            if seconds is not None and seconds >= 0:
                self.reconcile_duration.labels(namespace).observe(seconds)
            predicted = finite_or_none(decision.predicted_latency_ms)
            _set_or_remove(self.predicted_latency, key, _ms_to_s(predicted))
            _set_or_remove(self.cost_per_hour, key, finite_or_none(decision.cost_per_hour))
            self.slo_feasible.labels(*key).set(1 if decision.slo_feasible else 0)

    def observe_placements(
        self, namespace: str, name: str, placements: Sequence[PlacementState]
    ) -> None:
        """Export desired/ready replicas; (variant, pool) pairs no longer listed are removed."""
        key = (namespace, name)
        with self._lock:
            now = {(p.variant, p.pool) for p in placements}
            for variant, pool in self._placements.get(key, set()) - now:
                _remove(self.desired_replicas, (*key, variant, pool))
                _remove(self.ready_replicas, (*key, variant, pool))
            for p in placements:
                self.desired_replicas.labels(namespace, name, p.variant, p.pool).set(p.desired)
                self.ready_replicas.labels(namespace, name, p.variant, p.pool).set(p.ready)
            self._placements[key] = now

    def observe_signals(
        self, namespace: str, name: str, obs: Observation, target_ms: float
    ) -> None:
        """Export observed load and latency next to the target; a good read resets failures."""
        key = (namespace, name)
        with self._lock:
            target = finite_or_none(target_ms)
            _set_or_remove(self.latency_target, key, _ms_to_s(target))
            latency = finite_or_none(obs.latency_ms)
            _set_or_remove(self.observed_latency, key, _ms_to_s(latency))
            _set_or_remove(self.observed_rps, key, finite_or_none(obs.rps))
            if obs.ok:
                self._consecutive[key] = 0
                self.consecutive_failures.labels(*key).set(0)

    def signal_failure(self, namespace: str, name: str, source: str) -> None:
        """One failed read from ``source`` (e.g. ``prometheus``, ``triton``)."""
        key = (namespace, name)
        with self._lock:
            self._sources.setdefault(key, set()).add(source)
            self.signal_failures.labels(namespace, name, source).inc()
            self._consecutive[key] = self._consecutive.get(key, 0) + 1
            self.consecutive_failures.labels(*key).set(self._consecutive[key])

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted ScaledModel."""
        key = (namespace, name)
        with self._lock:
            for variant, pool in self._placements.pop(key, set()):
                _remove(self.desired_replicas, (*key, variant, pool))
                _remove(self.ready_replicas, (*key, variant, pool))
            for reason in self._reasons.pop(key, set()):
                _remove(self.decisions, (*key, reason))
            for source in self._sources.pop(key, set()):
                _remove(self.signal_failures, (*key, source))
            self._consecutive.pop(key, None)
            for gauge in (
                self.predicted_latency,
                self.observed_latency,
                self.latency_target,
                self.observed_rps,
                self.cost_per_hour,
                self.slo_feasible,
                self.consecutive_failures,
            ):
                _remove(gauge, key)

    # ------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` from a daemon thread (idempotent)."""
        if self._server is not None:
            return
        self._server = start_http_server(port, addr=addr, registry=self.registry)

    def shutdown(self) -> None:
        """Stop the HTTP server started by :meth:`serve` (tests; no-op otherwise)."""
        server = self._server
        self._server = None
        if isinstance(server, tuple):  # prometheus-client >= 0.20 returns (server, thread)
            server[0].shutdown()
            server[0].server_close()

    def metric_names(self) -> set[str]:
        """Every sample name this registry can export (``_total``, ``_bucket``... included)."""
        names: set[str] = set()
        for family in self.registry.collect():
            names.add(family.name)
            if family.type == "counter":
                names |= {family.name + "_total", family.name + "_created"}
            elif family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        return names


def _set_or_remove(gauge: Gauge, labels: Key, value: float | None) -> None:
    if value is None:
        _remove(gauge, labels)
    else:
        gauge.labels(*labels).set(value)


def _remove(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _ms_to_s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3

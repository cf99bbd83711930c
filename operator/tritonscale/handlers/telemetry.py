"""Feeds the operator's Prometheus metrics from reconcile outcomes.

A :class:`MetricsListener` is one of ``Reconciler.listeners``: the reconcile flow
knows nothing about metrics, and :class:`tritonscale.adapters.metrics.OperatorMetrics`
knows nothing about Kubernetes.
"""

from __future__ import annotations

from tritonscale.adapters.metrics import OperatorMetrics
from tritonscale.handlers.reconcile import Outcome


class MetricsListener:
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def __call__(self, out: Outcome) -> None:
        if not out.valid or out.failure or not out.namespace:
            return
        ns, name = out.namespace, out.name
        if out.decision is not None:
            self.metrics.observe_decision(ns, name, out.decision, out.duration_seconds)
        self.metrics.observe_placements(ns, name, out.placements)
        if out.observation is not None and out.spec is not None:
            self.metrics.observe_signals(
                ns, name, out.observation, out.spec.slo.latency.target_ms
            )
            source = out.spec.metrics.source
            if not out.observation.ok and source != "none":
                self.metrics.signal_failure(ns, name, source)

    def forget(self, namespace: str, name: str) -> None:
        self.metrics.forget(namespace, name)

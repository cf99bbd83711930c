"""The operator's signal source: routes each ScaledModel to the source its spec names.

``spec.metrics.source``:

- ``prometheus``: :class:`tritonscale.adapters.prometheus.PrometheusSignals`, one
  client per distinct Prometheus configuration (URL, timeout, label mapping);
- ``triton``: scrape every Ready Triton pod's metrics port directly
  (:class:`tritonscale.adapters.triton.MetricsScraper`, one per pod, kept between
  polls because a rate needs two scrapes);
- ``none``: load is never known; the planner holds the plan (manual mode).

A cascade's signals are its router's (``<model>-cascade``, on the tier-1 pods): its
requests are the demand and its latency the end-to-end one, tier 2 included. Its
escalation rate comes from Prometheus only; with direct scraping it stays unknown
and the planner holds its correction of the curve.

Never raises: any failure is an :class:`Observation` with ``rps=None`` and ``error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tritonscale.adapters.prometheus import PrometheusSignals, is_query_failure
from tritonscale.adapters.signals import GroupKey, Signals, to_observation
from tritonscale.adapters.triton import MetricsScraper, aggregate_groups
from tritonscale.core.api import LABEL_POOL, LABEL_VARIANT
from tritonscale.core.cascade_render import router_model
from tritonscale.core.spec import PrometheusSource, ScaledModelSpec
from tritonscale.core.types import Observation

log = logging.getLogger(__name__)

PodLister = Callable[[str, str], list[dict[str, Any]]]


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or not st.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or ()
    )


def served_model(spec: ScaledModelSpec) -> str:
    """The Triton model clients call: a cascade's router (its requests are the demand,
    its latency the end-to-end one), else ``spec.model.name``."""
    return router_model(spec) if spec.cascade is not None else spec.model.name


class SpecSignalSource:
    """A ``SignalSource`` choosing Prometheus, direct Triton scraping or none per spec."""

    def __init__(
        self,
        list_pods: PodLister | None = None,
        prometheus_factory: Callable[[PrometheusSource], Any] = PrometheusSignals.from_source,
        scraper_factory: Callable[[str, str], Any] = MetricsScraper,
        breaker_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        scrape_workers: int = 8,
    ) -> None:
        self._list_pods = list_pods
        self._prometheus_factory = prometheus_factory
        self._scraper_factory = scraper_factory
        # After a transport failure (Prometheus down or unreachable), answer "unknown"
        # without querying for this long: one dead server must not stall every
        # ScaledModel's reconcile for a timeout each.
        self.breaker_seconds = breaker_seconds
        self._clock = clock
        self._open_until: dict[PrometheusSource, tuple[float, str]] = {}
        self._pool = ThreadPoolExecutor(max_workers=scrape_workers,
                                        thread_name_prefix="triton-scrape")
        self._prom: dict[PrometheusSource, Any] = {}
        # (namespace, ScaledModel) -> pod uid -> MetricsScraper
        self._scrapers: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        source = spec.metrics.source
        try:
            if source == "prometheus" and spec.metrics.prometheus is not None:
                return self._prometheus(namespace, spec, spec.metrics.prometheus)
            if source == "triton":
                return self._triton(namespace, name, spec)
            return Observation(rps=None, error=f"spec.metrics.source is {source}: no signals")
        except Exception as e:  # a source never fails the reconcile
            # Logged in full; status gets a fixed text (an exception's message may
            # quote what an untrusted server answered).
            log.exception("signals of %s/%s from %s failed", namespace, name, source)
            return Observation(rps=None, error=f"{source}: internal error ({type(e).__name__})")

    def _prometheus(
        self, namespace: str, spec: ScaledModelSpec, cfg: PrometheusSource
    ) -> Observation:
        now = self._clock()
        with self._lock:
            until, why = self._open_until.get(cfg, (0.0, ""))
            if now < until:
                return Observation(rps=None, error=f"{why} (not retried for "
                                   f"{until - now:.0f} s)")
            client = self._prom.get(cfg)
            if client is None:
                client = self._prom[cfg] = self._prometheus_factory(cfg)
        pct = spec.slo.latency.percentile
        sig: Signals = (client.signals(namespace, served_model(spec), pct, cascade=True)
                        if spec.cascade is not None
                        else client.signals(namespace, spec.model.name, pct))
        if is_query_failure(sig.error):
            with self._lock:
                self._open_until[cfg] = (self._clock() + self.breaker_seconds, sig.error)
        return to_observation(sig)

    def _triton(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        if self._list_pods is None:
            return Observation(rps=None, error="triton: no pod lister configured")
        pct = spec.slo.latency.percentile
        port = spec.metrics.triton_metrics_port
        pods = [p for p in self._list_pods(namespace, name) if _pod_ready(p)]
        if spec.cascade is not None:  # the router answers on the tier-1 pods only
            tier1 = spec.cascade.first.variant
            pods = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(
                LABEL_VARIANT) == tier1]
        with self._lock:
            old = self._scrapers.get((namespace, name), {})
            live: dict[str, Any] = {}
            for pod in pods:
                meta = pod.get("metadata") or {}
                uid = str(meta.get("uid") or meta.get("name"))
                url = f"http://{pod['status']['podIP']}:{port}/metrics"
                live[uid] = old.get(uid) or self._scraper_factory(url, served_model(spec))
            self._scrapers[(namespace, name)] = live
            gone = [sc for uid, sc in old.items() if uid not in live]
        for sc in gone:
            close = getattr(sc, "close", None)
            if callable(close):
                close()
        keys: list[GroupKey] = []
        scrapers: list[Any] = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            keys.append(
                GroupKey(str(labels.get(LABEL_VARIANT, "")), str(labels.get(LABEL_POOL, "")))
            )
            scrapers.append(live[str(meta.get("uid") or meta.get("name"))])
        # Pods are scraped in parallel: a few unreachable ones cost one timeout, not n.
        results = list(self._pool.map(lambda sc: sc.signals(pct), scrapers))
        groups: dict[GroupKey, list[Signals]] = {}
        for key, sig in zip(keys, results, strict=True):
            groups.setdefault(key, []).append(sig)
        if not groups:
            return Observation(rps=None, error="triton: no Ready Triton pods to scrape")
        return to_observation(aggregate_groups(groups, pct))

    def forget(self, namespace: str, name: str) -> None:
        """The ScaledModel is gone: drop its scrapers."""
        with self._lock:
            gone = self._scrapers.pop((namespace, name), {})
        for sc in gone.values():
            close = getattr(sc, "close", None)
            if callable(close):
                close()

"""Which of a ScaledModel's pools are under a spot interruption notice, from the Nodes.

The rule and the taint keys are :mod:`tritonscale.core.interruption`'s. Here: the
API reads, bounded. Each pool's Nodes are listed by its nodeSelector (a cluster-scoped
``list nodes`` with the adapter's timeout), cached per selector for ``ttl_seconds``
and shared by every ScaledModel (2,000 models on five pools cost five calls per TTL,
not 10,000), keeping only the tainted ones. Only when a pool has a tainted Node are
the model's pods listed, to see whether one runs there. Once under notice, a pool
stays so for the model while those Nodes are still there and tainted: its replicas
moved away, the pool would otherwise look free at once and the plan move back onto
nodes about to go (or ordering new ones before they do). A failed read is logged and
cached as "no notice" for the TTL: the model is then handled as before (it learns of
the preemption when its replicas are gone), never failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core import interruption as ir
from tritonscale.core.spec import ScaledModelSpec

log = logging.getLogger(__name__)

NodeLister = Callable[[str], list[dict[str, Any]]]
PodLister = Callable[[str, str], list[dict[str, Any]]]
DEFAULT_TTL_SECONDS = 10.0


class NodeNotices:
    """``observe(namespace, name, spec)``: pool -> why, for pools under notice."""

    def __init__(self, list_nodes: NodeLister, list_pods: PodLister,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_seconds >= 0:
            raise ValueError("ttl_seconds must be >= 0")
        self._list_nodes = list_nodes
        self._list_pods = list_pods
        self.ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # selector -> (valid until, tainted node -> taint)
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        # (namespace, name) -> pool -> the tainted nodes that put it under notice.
        self._held: dict[tuple[str, str], dict[str, frozenset[str]]] = {}

    def _tainted(self, selector: str) -> dict[str, str]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(selector)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            found = ir.tainted_nodes(self._list_nodes(selector))
        except KubeAPIError as e:
            log.warning("listing nodes %r for interruption taints failed (no notice for %.0f s):"
                        " %s", selector or "(all)", self.ttl, e)
            found = {}
        with self._lock:
            self._cache[selector] = (now + self.ttl, found)
            if len(self._cache) > 4096:  # selectors of pools no longer in any spec
                for k in [k for k, (until, _) in self._cache.items() if until <= now]:
                    del self._cache[k]
        return found

    def invalidate(self, node_labels: Mapping[str, str]) -> int:
        """Drop the cached lists of every selector a node with ``node_labels`` matches
        (its taint just changed: the next read lists again). Returns how many."""
        with self._lock:
            stale = [sel for sel in self._cache if ir.selector_matches(sel, node_labels)]
            for sel in stale:
                del self._cache[sel]
        return len(stale)

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> dict[str, str]:
        tainted: dict[str, Mapping[str, str]] = {}
        for pool in spec.node_pools:
            bad = self._tainted(ir.node_selector(pool))
            if bad:
                tainted[pool.name] = bad
        key = (namespace, name)
        with self._lock:
            held = self._held.pop(key, {})
        if not tainted:
            return {}
        hosts: dict[str, set[str]] | None
        try:
            hosts = ir.pods_by_pool(self._list_pods(namespace, name))
        except KubeAPIError as e:
            log.warning("%s/%s: listing pods failed; any tainted node of a pool counts: %s",
                        namespace, name, e)
            hosts = None
        if hosts is not None:
            # Nodes that put a pool under notice before still count while tainted.
            for held_pool, nodes in held.items():
                hosts.setdefault(held_pool, set()).update(nodes)
        out = ir.noticed_pools(spec, tainted, hosts)
        keep = {
            pool: frozenset(n for n in tainted[pool]
                            if hosts is None or n in hosts.get(pool, set()))
            for pool in out
        }
        if keep:
            with self._lock:
                self._held[key] = keep
        return out

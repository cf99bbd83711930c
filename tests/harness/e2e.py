"""Helpers of the e2e suite: the chart release, example manifests, node pools that
match them, and a Deployment watcher. The operator process itself is
:class:`tests.harness.operator.OperatorProcess`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tests.harness.k8s import wait_for
from tests.harness.operator import OperatorProcess

from tritonscale.core.api import LABEL_SM

if TYPE_CHECKING:
    from tests.harness.k8s import Cluster, NodePool


@contextlib.contextmanager
def scratch_namespace(cluster: Cluster, base: str) -> Iterator[str]:
    """A new namespace ``<base>-<6 hex>`` for the ``with`` block, deleted after it."""
    name = cluster.create_namespace(f"{base}-{secrets.token_hex(3)}")
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


def apply(cluster: Cluster, manifest: dict[str, Any]) -> None:
    """``kubectl apply -f -`` of ``manifest``."""
    cluster.kubectl("apply", "-f", "-", input=to_yaml(manifest))

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------
# Shared helpers of the e2e tests: the chart release, example manifests, node pools
# that match them, and a Deployment watcher for make-before-break assertions.
# ---------------------------------------------------------------------------------

CHART_DIR = REPO_ROOT / "helm" / "tritonscale"
EXAMPLES_DIR = REPO_ROOT / "examples"
CRD_FILE = REPO_ROOT / "crds" / "scaledmodel.yaml"
RELEASE = "tritonscale"
RELEASE_NAMESPACE = "tritonscale-system"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "tritonscale.io/spot", "value": "true", "effect": "NoSchedule"}


@dataclass(frozen=True)
class ChartRelease:
    """The Helm release of the operator chart and its ServiceAccount."""

    name: str
    namespace: str
    service_account: str

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def install_chart(cluster: Cluster, timeout: str = "120s") -> ChartRelease:
    """``helm install`` the chart (CRDs, RBAC, ServiceAccount, operator Deployment).

    ``replicaCount=0``: the operator runs as a local process with the chart's
    ServiceAccount token instead (no container engine here; a pod KWOK "ran" would
    be a fake that does nothing).
    """
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART_DIR),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", "replicaCount=0",
        "--wait", "--timeout", timeout,
    )
    sas = cluster.get_json(
        "serviceaccounts", "-n", RELEASE_NAMESPACE,
        "-l", f"app.kubernetes.io/instance={RELEASE}",
    )["items"]
    if len(sas) != 1:
        raise RuntimeError(f"expected one ServiceAccount from the chart, found {len(sas)}")
    return ChartRelease(RELEASE, RELEASE_NAMESPACE, sas[0]["metadata"]["name"])


def load_example(
    filename: str = "resnet50.yaml", *, namespace: str, name: str | None = None
) -> dict[str, Any]:
    """An example ScaledModel for a test: its namespace set and ``metrics.source: none``
    (signals unknown, so the operator holds the planner's initial choice)."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / filename).read_text())
    manifest["metadata"]["namespace"] = namespace
    if name:
        manifest["metadata"]["name"] = name
    manifest["spec"].setdefault("metrics", {})["source"] = "none"
    return manifest


def pool_taints(pool: dict[str, Any]) -> list[dict[str, str]]:
    """Node taints a pool's tolerations are written for (GPU, plus spot for spot pools)."""
    taints = [dict(GPU_TAINT)]
    if pool.get("capacityType") == "spot":
        taints.append(dict(SPOT_TAINT))
    return taints


def add_example_pools(
    cluster: Cluster, manifest: dict[str, Any], *, gpus_per_node: int = 8, count: int = 1
) -> list[NodePool]:
    """KWOK nodes labelled with each pool's nodeSelector (as the example expects them)."""
    out = []
    for pool in manifest["spec"]["nodePools"]:
        out.append(
            cluster.add_node_pool(
                f"ex-{pool['name']}",
                labels=dict(pool.get("nodeSelector") or {}),
                taints=pool_taints(pool),
                gpus_per_node=gpus_per_node,
                count=count,
            )
        )
    return out


def isolate_pools(
    cluster: Cluster,
    manifest: dict[str, Any],
    prefix: str,
    *,
    pools: Sequence[str],
    with_nodes: Sequence[str] | None = None,
    startup_seconds: float | None = None,
    gpus_per_node: int = 4,
) -> dict[str, str]:
    """Keep only ``pools`` in the manifest and point each at nodes of its own.

    Each kept pool's nodeSelector becomes ``tritonscale.io/e2e-node-pool:
    <prefix>-<pool>`` (so a test may delete or taint its nodes without touching
    other tests); nodes are created for ``with_nodes`` (default: every kept pool).
    Returns pool name -> node pool name.
    """
    from tests.harness.k8s import NODE_POOL_LABEL

    kept = [p for p in manifest["spec"]["nodePools"] if p["name"] in pools]
    manifest["spec"]["nodePools"] = kept
    names = {}
    for pool in kept:
        node_pool = f"{prefix}-{pool['name']}"
        names[pool["name"]] = node_pool
        pool["nodeSelector"] = {NODE_POOL_LABEL: node_pool}
        if startup_seconds is not None:
            pool["startupSeconds"] = startup_seconds
        if with_nodes is None or pool["name"] in with_nodes:
            cluster.add_node_pool(
                node_pool, taints=pool_taints(pool), gpus_per_node=gpus_per_node
            )
    return names


def add_isolated_nodes(cluster: Cluster, manifest: dict[str, Any], pool: str,
                       node_pool: str, gpus_per_node: int = 4) -> NodePool:
    spec_pool = next(p for p in manifest["spec"]["nodePools"] if p["name"] == pool)
    return cluster.add_node_pool(node_pool, taints=pool_taints(spec_pool),
                                 gpus_per_node=gpus_per_node)


def short_prefix(namespace: str) -> str:
    """A short DNS-label prefix for node pool names from a test namespace."""
    return re.sub(r"[^a-z0-9]", "", namespace[-6:]) or "t"


def sm_deployments(cluster: Cluster, namespace: str, sm: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"{LABEL_SM}={sm}"
    )["items"]
    return items


def deployment_names(cluster: Cluster, namespace: str, sm: str) -> list[str]:
    return sorted(d["metadata"]["name"] for d in sm_deployments(cluster, namespace, sm))


def get_sm(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json("scaledmodel", name, "-n", namespace)
    return obj


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == ctype:
            return dict(c)
    return {}


def converged(cluster: Cluster, namespace: str, name: str,
              deployments: Sequence[str]) -> bool:
    """The ScaledModel's status is current and Ready, and exactly ``deployments``
    exist, each with all replicas ready."""
    sm = get_sm(cluster, namespace, name)
    st = sm.get("status") or {}
    if st.get("observedGeneration") != sm["metadata"]["generation"]:
        return False
    if condition(sm, "Ready").get("status") != "True":
        return False
    deps = sm_deployments(cluster, namespace, name)
    if sorted(d["metadata"]["name"] for d in deps) != sorted(deployments):
        return False
    return all(
        (d.get("status") or {}).get("readyReplicas", 0) == d["spec"]["replicas"] > 0
        for d in deps
    )


def wait_converged(cluster: Cluster, namespace: str, name: str, deployments: list[str],
                   op: OperatorProcess | None, timeout: float = 120) -> None:
    """Wait until :func:`converged`; the namespace's state (and ``op``'s log) on timeout."""
    wait_for(
        lambda: converged(cluster, namespace, name, deployments),
        timeout=timeout,
        interval=0.5,
        what=f"{namespace}/{name} converged to {deployments}",
        on_timeout=lambda: dump_state(cluster, namespace, op),
    )


def dump_state(cluster: Cluster, namespace: str, operator: OperatorProcess | None = None) -> str:
    """Deployments, pods, ScaledModels and events of a namespace, for timeout messages."""
    parts = []
    for what in ("scaledmodels,deployments,pods -o wide", "events --sort-by=.lastTimestamp"):
        res = cluster.kubectl("get", *what.split(), "-n", namespace, check=False)
        parts.append(f"$ kubectl get {what}\n{res.stdout}{res.stderr}")
    res = cluster.kubectl("get", "scaledmodels", "-n", namespace, "-o", "yaml", check=False)
    parts.append(f"$ kubectl get sm -o yaml\n{res.stdout[-6000:]}")
    if operator is not None:
        parts.append(f"--- operator log (tail)\n{operator.tail(80)}")
    return "\n".join(parts)


@dataclass
class DeploymentWatch:
    """Watches a ScaledModel's Deployments; keeps (time, name, replicas, ready, event)
    for every event and the total ready replicas after each one."""

    cluster: Cluster
    namespace: str
    sm: str
    events: list[tuple[float, str, int, int, str]] = field(default_factory=list)
    totals: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    _ready: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None
    _seen: set[str] = field(default_factory=set)

    def start(self) -> DeploymentWatch:
        from kubernetes import client

        apps = client.AppsV1Api(self.cluster.api_client())
        listed = apps.list_namespaced_deployment(
            self.namespace, label_selector=f"{LABEL_SM}={self.sm}"
        )
        for d in listed.items:
            self._record("LISTED", d)
        rv = listed.metadata.resource_version
        self._thread = threading.Thread(target=self._run, args=(apps, rv), daemon=True)
        self._thread.start()
        return self

    def _record(self, kind: str, d: Any) -> None:
        name = d.metadata.name
        ready = 0 if kind == "DELETED" else int(d.status.ready_replicas or 0)
        self._seen.add(name)
        self._ready[name] = ready
        if kind == "DELETED":
            self._ready.pop(name, None)
        now = time.monotonic()
        self.events.append((now, name, int(d.spec.replicas or 0), ready, kind))
        self.totals.append((now, sum(self._ready.values()), dict(self._ready)))

    def _run(self, apps: Any, rv: str) -> None:
        from kubernetes import watch

        try:
            while not self._stop.is_set():
                w = watch.Watch()
                for ev in w.stream(
                    apps.list_namespaced_deployment,
                    self.namespace,
                    label_selector=f"{LABEL_SM}={self.sm}",
                    resource_version=rv,
                    timeout_seconds=5,
                    allow_watch_bookmarks=False,
                ):
                    obj = ev["object"]
                    rv = obj.metadata.resource_version
                    self._record(str(ev["type"]), obj)
                    if self._stop.is_set():
                        w.stop()
                        break
        except BaseException as e:  # reported by stop()
            self._error = e

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._error is not None:
            raise RuntimeError(f"Deployment watch failed: {self._error!r}") from self._error

    def min_total_ready(self, after: float = 0.0) -> int:
        values = [t for (ts, t, _) in self.totals if ts >= after]
        return min(values) if values else 0

    def history(self) -> str:
        t0 = self.events[0][0] if self.events else 0.0
        return "\n".join(
            f"{ts - t0:7.2f}s {kind:8s} {name} replicas={n} ready={r}"
            for ts, name, n, r, kind in self.events
        )

    def names_seen(self) -> set[str]:
        return set(self._seen)


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)

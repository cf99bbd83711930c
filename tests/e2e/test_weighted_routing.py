"""Weighted routing (``spec.routing.mode: gateway``) on the real control plane.

The Gateway API CRDs come from the ``sigs.k8s.io/gateway-api`` Go module
(``hack/gateway-api-crds.sh``, cached outside the repository). The operator runs
with the chart's ServiceAccount, so the chart's RBAC for httproutes/grpcroutes is
what it has. One flow:

1. a gateway-mode ScaledModel before the Gateway API CRDs exist: Deployments are
   managed, status says ``Routed=False GatewayAPIMissing``;
2. the CRDs are installed: an HTTPRoute and a GRPCRoute appear, one backendRef per
   placement Service, weights = each placement's share of the capacity (checked
   against the perf model directly), parentRefs from the spec;
3. the mix changes (a pool's maxReplicas drops to 0): the weights and backendRefs
   follow; a new placement gets weight only once Ready, and the old placement's
   weight reaches 0 in an applied route before its Deployment is deleted.

Causal order between the route and the Deployments is read from etcd's
resourceVersions (one etcd: its revision is global and monotonic), not from the
wall clock.

The CRDs are removed afterwards, so other modules run without them.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.harness.e2e import (
    REPO_ROOT,
    condition,
    dump_state,
    get_sm,
    isolate_pools,
    load_example,
    sm_deployments,
    to_yaml,
)
from tests.harness.k8s import Cluster, wait_for
from tests.harness.operator import OperatorProcess, running

from tritonscale.core.perf import capacity
from tritonscale.core.spec import parse_manifest

pytestmark = pytest.mark.e2e

SM = "resnet50"
GROUP, VERSION = "gateway.networking.k8s.io", "v1"
CRD_FILES = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")
ROUTE_CRDS = [f"{p}.{GROUP}" for p in CRD_FILES]


def _crd_dir() -> Path:
    out = subprocess.run([str(REPO_ROOT / "hack" / "gateway-api-crds.sh")], check=True,
                         capture_output=True, text=True, timeout=900)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gateway_api(cluster: Cluster) -> Iterator[list[Path]]:
    """The Gateway API CRD files; removed from the cluster after the module."""
    d = _crd_dir()
    files = [d / f"{GROUP}_{name}.yaml" for name in CRD_FILES]
    assert all(f.is_file() for f in files), files
    try:
        yield files
    finally:
        cluster.kubectl("delete", "crd", "--ignore-not-found", "--wait=false", *ROUTE_CRDS,
                        check=False)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, operator_kubeconfig: Path) -> Iterator[OperatorProcess]:
    with running(OperatorProcess(operator_kubeconfig,
                                 cluster.log_dir / "operator-routing.log")) as op:
        yield op


@dataclass
class Watch:
    """Records (resourceVersion, type, name, payload) of the model's routes and
    Deployments from two watches; payload = weights per backend, or ready replicas."""

    cluster: Cluster
    namespace: str
    events: list[tuple[int, str, str, str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _errors: list[BaseException] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Watch:
        from kubernetes import client

        api = self.cluster.api_client()
        custom = client.CustomObjectsApi(api)
        apps = client.AppsV1Api(api)
        route_rv = custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "httproutes")["metadata"]["resourceVersion"]
        dep_rv = apps.list_namespaced_deployment(self.namespace).metadata.resource_version
        for target, args, rv in (
            (custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace,
                                                    "httproutes"), route_rv),
            (apps.list_namespaced_deployment, (self.namespace,), dep_rv),
        ):
            t = threading.Thread(target=self._run, args=(target, args, rv), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, fn: Any, args: tuple[Any, ...], rv: str) -> None:
        from kubernetes import watch

        try:
            while not self._stop.is_set():
                w = watch.Watch()
                for ev in w.stream(fn, *args, resource_version=rv, timeout_seconds=3):
                    obj = ev["object"]
                    if isinstance(obj, dict):
                        meta = obj["metadata"]
                        rv = meta["resourceVersion"]
                        refs = obj["spec"]["rules"][0]["backendRefs"]
                        payload: Any = {b["name"]: b["weight"] for b in refs}
                        kind, name = "HTTPRoute", meta["name"]
                    else:
                        rv = obj.metadata.resource_version
                        payload = int(obj.status.ready_replicas or 0)
                        kind, name = "Deployment", obj.metadata.name
                    with self._lock:
                        self.events.append((int(rv), f"{kind}/{ev['type']}", name, kind,
                                            payload))
                    if self._stop.is_set():
                        w.stop()
                        break
        except BaseException as e:  # reported by stop()
            self._errors.append(e)

    def stop(self) -> list[tuple[int, str, str, str, Any]]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        if self._errors:
            raise RuntimeError(f"watch failed: {self._errors[0]!r}") from self._errors[0]
        return sorted(self.events, key=lambda e: e[0])


def _route(cluster: Cluster, ns: str, kind: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind.lower(), SM, "-n", ns, "-o", "json", check=False)
    if res.returncode != 0:
        return None
    import json

    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _weights(route: dict[str, Any] | None) -> dict[str, int]:
    if route is None:
        return {}
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def _expected(manifest: dict[str, Any], deployments: list[dict[str, Any]]) -> dict[str, float]:
    """Each Deployment's share of the capacity, straight from the perf model."""
    spec = parse_manifest(manifest)[2]
    raw = {}
    for d in deployments:
        lab = d["metadata"]["labels"]
        v, p = spec.variant(lab["tritonscale.io/variant"]), spec.pool(lab["tritonscale.io/pool"])
        prof = v.profile_for(p.accelerator)
        assert prof is not None
        raw[d["metadata"]["name"]] = d["spec"]["replicas"] * capacity(prof, spec.slo.latency)
    total = sum(raw.values())
    return {k: 1000 * x / total for k, x in raw.items()}


def _ready_deps(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    deps = sm_deployments(cluster, ns, SM)
    return [d for d in deps
            if (d.get("status") or {}).get("readyReplicas", 0) == d["spec"]["replicas"] > 0]


def _weights_follow(cluster: Cluster, ns: str, manifest: dict[str, Any],
                    names: set[str]) -> bool:
    deps = sm_deployments(cluster, ns, SM)
    if {d["metadata"]["name"] for d in deps} != names or len(_ready_deps(cluster, ns)) != len(
            names):
        return False
    want = _expected(manifest, deps)
    for kind in ("HTTPRoute", "GRPCRoute"):
        got = _weights(_route(cluster, ns, kind))
        if set(got) != names or sum(got.values()) != 1000:
            return False
        if any(abs(got[n] - want[n]) > 1.0 for n in names):
            return False
    return True


def test_weights_follow_a_mix_change_make_before_break(
    cluster: Cluster, operator: OperatorProcess, gateway_api: list[Path]
) -> None:
    ns = cluster.create_namespace(f"routing-{secrets.token_hex(3)}")
    manifest = load_example("resnet50.yaml", namespace=ns, name=SM)
    spec = manifest["spec"]
    isolate_pools(cluster, manifest, ns[-6:], pools=["t4-spot", "l4-spot", "t4-ondemand"],
                  startup_seconds=1)
    spec["scaling"].update(minReplicas=3, intervalSeconds=2, spotProtection=False)
    pool = {p["name"]: p for p in spec["nodePools"]}
    first = pool["t4-spot"]  # the cheapest pool holds 2 of the 3 replicas, l4-spot 1
    first["maxReplicas"] = 2
    pool["l4-spot"]["maxReplicas"] = 1
    spec["routing"] = {
        "mode": "gateway", "protocols": ["http", "grpc"],
        "parentRefs": [{"name": "inference-gw", "namespace": "infra", "sectionName": "web"}],
    }
    path = cluster.workdir / f"{ns}-{SM}.yaml"
    path.write_text(to_yaml(manifest))

    def state() -> str:
        return dump_state(cluster, ns, operator)

    # 1. No Gateway API CRDs yet: Deployments are managed; status says why there is no route.
    cluster.kubectl("apply", "-f", str(path))
    wait_for(lambda: condition(get_sm(cluster, ns, SM), "Routed").get("reason")
             == "GatewayAPIMissing" and len(_ready_deps(cluster, ns)) == 2,
             timeout=120, interval=0.5, what="Routed=False GatewayAPIMissing",
             on_timeout=state)
    routed = condition(get_sm(cluster, ns, SM), "Routed")
    assert routed["status"] == "False" and "Gateway API CRDs" in routed["message"]
    svc = cluster.get_json("services", "-n", ns)["items"]
    deps = sm_deployments(cluster, ns, SM)
    names = {d["metadata"]["name"] for d in deps}
    assert {s["metadata"]["name"] for s in svc} == names | {SM}
    for s in svc:
        if s["metadata"]["name"] != SM:  # each placement Service selects only its pods
            dep = next(d for d in deps if d["metadata"]["name"] == s["metadata"]["name"])
            assert s["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    # 2. Install the CRDs: routes appear with capacity-share weights.
    for f in gateway_api:
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    cluster.wait_established(*ROUTE_CRDS)
    wait_for(lambda: _weights_follow(cluster, ns, manifest, names), timeout=120,
             interval=0.5, what="weighted routes for the initial mix", on_timeout=state)
    http = _route(cluster, ns, "HTTPRoute")
    assert http is not None
    assert http["spec"]["parentRefs"] == [{
        "group": GROUP, "kind": "Gateway", "name": "inference-gw", "namespace": "infra",
        "sectionName": "web"}]
    assert {b["port"] for b in http["spec"]["rules"][0]["backendRefs"]} == {8000}
    grpc = _route(cluster, ns, "GRPCRoute")
    assert grpc is not None and {b["port"] for b in grpc["spec"]["rules"][0]["backendRefs"]} \
        == {8001}
    assert http["metadata"]["ownerReferences"][0]["kind"] == "ScaledModel"
    wait_for(lambda: condition(get_sm(cluster, ns, SM), "Routed").get("status") == "True",
             timeout=30, what="Routed=True", on_timeout=state)
    first_w = _weights(http)
    assert len(set(first_w.values())) == 2, first_w  # unequal replicas, unequal weights

    # 3. The mix changes: the cheapest pool may hold no replica any more.
    watch = Watch(cluster, ns).start()
    old = {n for n in names if n.endswith(f"-{first['name']}")}
    assert len(old) == 1, names
    first["maxReplicas"] = 0  # its 2 replicas move to t4-ondemand (l4-spot is full)
    path.write_text(to_yaml(manifest))
    cluster.kubectl("apply", "-f", str(path))
    wait_for(lambda: bool(sm_deployments(cluster, ns, SM)) and not (
        {d["metadata"]["name"] for d in sm_deployments(cluster, ns, SM)} & old),
        timeout=120, interval=0.5, what="the old placement removed", on_timeout=state)
    final = {d["metadata"]["name"] for d in sm_deployments(cluster, ns, SM)}
    wait_for(lambda: _weights_follow(cluster, ns, manifest, final), timeout=120,
             interval=0.5, what="weights for the new mix", on_timeout=state)
    events = watch.stop()
    history = "\n".join(str(e) for e in events)

    (old_name,) = old
    routes = [(rv, w) for rv, _, _, kind, w in events if kind == "HTTPRoute"]
    assert routes, history
    assert all(sum(w.values()) > 0 for _, w in routes), history
    deleted = [rv for rv, t, n, _, _ in events if t == "Deployment/DELETED" and n == old_name]
    assert deleted, history
    before = [w for rv, w in routes if rv < deleted[0]]
    # A route giving it weight 0 was applied before the Deployment went, and no later
    # route gave it weight again (the pass that deletes it also drops its backendRef).
    zero = [i for i, w in enumerate(before) if w.get(old_name) == 0]
    assert zero, history
    assert all(not w.get(old_name) for w in before[zero[0]:]), history
    assert old_name not in before[-1] or before[-1][old_name] == 0, history
    # A placement never had weight before its Deployment had a Ready replica.
    for rv, w in routes:
        for name, weight in w.items():
            if weight > 0 and name in final - names:
                ready = [r for r, t, n, k, p in events
                         if k == "Deployment" and n == name and p > 0 and r < rv]
                assert ready, f"{name} weighted {weight} at rv {rv} before Ready\n{history}"
    assert final != names and (final - names), (names, final)
    cluster.delete_namespace(ns)

"""A cascade served by the operator on the real control plane (KWOK pools).

examples/bert-cascade.yaml with tier 1 (distil-int8) on a T4 pool that has nodes and
tier 2 (large-int8) on an L4 pool that has none yet. The operator runs with the
chart's ServiceAccount (its RBAC only); signals come from a real Prometheus scraping
the fleet emulator, which exports the router model's series (``<model>-cascade``:
the cascade's demand) for every Ready pod at a constant load.

1. The operator renders the cascade: tier-1 Deployment loading the router from the
   ``<sm>-router`` ConfigMap (config.pbtxt with the spec's tensors and the
   operator's own tier-2 URL), the ``<sm>`` Service over tier-1 pods only, the
   ``<sm>-tier2`` Service over tier-2 pods only, the threshold ConfigMap mounted as
   a directory.
2. Tier 2 cannot start (no L4 nodes): status plans threshold 0.9 but the router runs
   0.5, and the ConfigMap says 0.5 (make-before-break).
3. L4 nodes arrive: once tier 2 is Ready the ConfigMap moves to 0.9; it never said
   0.9 while tier 2 was not Ready, and the tier-1 pod template did not change.

And apart: a cascade's Services and ConfigMaps deleted by hand come back within
seconds (the Service watch; the next decision for the ConfigMaps), not at the 600-s
refresh.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.harness.e2e import (
    add_isolated_nodes,
    dump_state,
    get_sm,
    isolate_pools,
    load_example,
    sm_deployments,
    to_yaml,
)
from tests.harness.fleet.emulator import FleetEmulator, pod_lister
from tests.harness.fleet.prometheus import FileSDPrometheus
from tests.harness.k8s import Cluster, wait_for
from tests.harness.operator import OperatorProcess

from tritonscale.core.spec import parse_manifest

pytestmark = pytest.mark.e2e

SM = "bert-cascade"
ROUTER = "bert-qa-cascade"
LOAD_RPS = 200.0
TIER1, TIER2 = "distil-int8", "large-int8"


def _manifest(ns: str, prometheus_url: str) -> dict[str, Any]:
    m = load_example("bert-cascade.yaml", namespace=ns, name=SM)
    spec = m["spec"]
    for v in spec["variants"]:  # tier 1 runs on T4 only, tier 2 on L4 only
        keep = "T4" if v["name"] == TIER1 else "L4"
        v["profiles"] = [p for p in v["profiles"] if p["accelerator"] == keep]
    spec["scaling"].update(intervalSeconds=2, scaleDownStabilizationSeconds=30,
                           spotProtection=False)
    spec["scaling"].pop("safePlan", None)
    spec["metrics"] = {"source": "prometheus", "prometheus": {"url": prometheus_url}}
    return m


def _cm(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", "configmap", name, "-n", ns, "-o", "json", check=False)
    if res.returncode != 0:
        return None
    import json

    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _threshold(cluster: Cluster, ns: str) -> str | None:
    cm = _cm(cluster, ns, f"{SM}-threshold")
    return None if cm is None else str(cm["data"]["threshold"]).strip()


def _dep(cluster: Cluster, ns: str, variant: str) -> dict[str, Any] | None:
    for d in sm_deployments(cluster, ns, SM):
        if d["metadata"]["labels"]["tritonscale.io/variant"] == variant:
            return d
    return None


def _ready(d: dict[str, Any] | None) -> bool:
    return d is not None and (d.get("status") or {}).get("readyReplicas", 0) >= d["spec"][
        "replicas"] > 0


def _cascade_status(cluster: Cluster, ns: str) -> dict[str, Any]:
    last = (get_sm(cluster, ns, SM).get("status") or {}).get("lastDecision") or {}
    out: dict[str, Any] = (last.get("details") or {}).get("cascade") or {}
    return out


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[FileSDPrometheus, Path]]:
    sd_file = tmp_path / "targets.json"
    sd_file.write_text("[]")
    prom = FileSDPrometheus(workdir=tmp_path / "prometheus", targets=[], sd_file=sd_file)
    prom.start()
    try:
        yield prom, sd_file
    finally:
        prom.stop()


def test_cascade_is_rendered_and_its_threshold_moves_make_before_break(
    cluster: Cluster, operator_kubeconfig: Path, prometheus: tuple[FileSDPrometheus, Path],
    tmp_path: Path,
) -> None:
    prom, sd_file = prometheus
    ns = cluster.create_namespace(f"cascade-{secrets.token_hex(3)}")
    manifest = _manifest(ns, prom.url)
    pools = isolate_pools(cluster, manifest, ns[-6:], pools=["t4-spot", "l4-ondemand"],
                          with_nodes=["t4-spot"], startup_seconds=5)
    spec = parse_manifest(manifest)[2]
    # The emulator exports the router's series: what clients of a cascade call.
    emu_spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=ROUTER))
    emu = FleetEmulator(emu_spec, lambda t: LOAD_RPS, pod_lister(cluster.api_client(), ns, SM),
                        sd_file, SM, tick_s=0.25, window_s=15.0)
    operator = OperatorProcess(operator_kubeconfig, workdir=tmp_path / "operator",
                               namespaces=[ns], extra_args=["--prometheus-rate-window", "10"])

    def state() -> str:
        return dump_state(cluster, ns, operator)

    path = tmp_path / "sm.yaml"
    path.write_text(to_yaml(manifest))
    try:
        operator.start()
        emu.start()
        cluster.kubectl("apply", "-f", str(path))

        # 1. Rendered: both tiers, both Services, the router and threshold ConfigMaps.
        wait_for(lambda: _ready(_dep(cluster, ns, TIER1)) and _dep(cluster, ns, TIER2)
                 is not None and _threshold(cluster, ns) is not None, timeout=180,
                 interval=0.5, what="tier Deployments and the threshold ConfigMap",
                 on_timeout=state)
        tier1 = _dep(cluster, ns, TIER1)
        assert tier1 is not None
        pod = tier1["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert "--model-repository=/cascade/models" in args
        assert f"--load-model={ROUTER}" in args
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["cascade-threshold"]["configMap"]["name"] == f"{SM}-threshold"
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "cascade-threshold", "mountPath": "/cascade/threshold",
                "readOnly": True} in mounts
        assert not any("subPath" in m for m in mounts)
        tier2 = _dep(cluster, ns, TIER2)
        assert tier2 is not None
        assert not any("cascade" in a for a in tier2["spec"]["template"]["spec"][
            "containers"][0]["args"])
        router = _cm(cluster, ns, f"{SM}-router")
        assert router is not None
        cfg = router["data"]["config.pbtxt"]
        assert f'name: "{ROUTER}"' in cfg and 'name: "input_ids" data_type: TYPE_INT64' in cfg
        assert f'string_value: "http://{SM}-tier2.{ns}.svc:8000"' in cfg
        assert "TritonPythonModel" in router["data"]["model.py"]
        svcs = {s["metadata"]["name"]: s for s in cluster.get_json(
            "services", "-n", ns)["items"]}
        assert svcs[SM]["spec"]["selector"]["tritonscale.io/variant"] == TIER1
        assert svcs[f"{SM}-tier2"]["spec"]["selector"]["tritonscale.io/variant"] == TIER2
        for obj in (router, svcs[SM], svcs[f"{SM}-tier2"], _cm(cluster, ns, f"{SM}-threshold")):
            assert obj is not None
            assert obj["metadata"]["ownerReferences"][0]["kind"] == "ScaledModel"

        # 2. Tier 2 cannot start: the plan wants 0.9, the router keeps 0.5.
        wait_for(lambda: _cascade_status(cluster, ns).get("targetThreshold") == 0.9,
                 timeout=120, interval=0.5, what="a decision planning threshold 0.9",
                 on_timeout=state)
        held = _cascade_status(cluster, ns)
        assert held["threshold"] == 0.5, held
        assert not _ready(_dep(cluster, ns, TIER2))
        time.sleep(5)  # a few more decisions (intervalSeconds 2): still held
        assert _threshold(cluster, ns) == "0.5"
        assert _cascade_status(cluster, ns)["threshold"] == 0.5
        tier1 = _dep(cluster, ns, TIER1)
        assert tier1 is not None
        template, generation = tier1["spec"]["template"], tier1["metadata"]["generation"]

        # 3. L4 nodes arrive: the threshold moves only once tier 2 is Ready.
        add_isolated_nodes(cluster, manifest, "l4-ondemand", pools["l4-ondemand"])
        deadline = time.monotonic() + 180
        moved = False
        while time.monotonic() < deadline and not moved:
            thr = _threshold(cluster, ns)  # read first: Ready never regresses here
            t2 = _dep(cluster, ns, TIER2)
            if thr == "0.9":
                assert _ready(t2), f"threshold 0.9 published before tier 2 was Ready\n{state()}"
                moved = True
            time.sleep(0.3)
        assert moved, f"the threshold never moved to 0.9\n{state()}"
        wait_for(lambda: _cascade_status(cluster, ns).get("threshold") == 0.9, timeout=30,
                 interval=0.5, what="status shows threshold 0.9", on_timeout=state)
        tier1 = _dep(cluster, ns, TIER1)
        assert tier1 is not None
        assert tier1["spec"]["template"] == template  # no tier-1 pod restart
        assert tier1["metadata"]["generation"] == generation
        events = cluster.get_json("events", "-n", ns)["items"]
        assert any(e.get("reason") == "ThresholdChanged" and "0.5 -> 0.9" in e["message"]
                   for e in events), [e.get("reason") for e in events]
    finally:
        emu.stop()
        operator.stop()
        print(f"\n--- operator log (tail)\n{operator.tail(40)}")
        cluster.delete_namespace(ns, wait=False)
        for node_pool in pools.values():
            cluster.delete_node_pool(node_pool, wait=False)


def test_deleted_cascade_objects_come_back_promptly(
    cluster: Cluster, operator_kubeconfig: Path, tmp_path: Path,
) -> None:
    ns = cluster.create_namespace(f"cascade-gone-{secrets.token_hex(3)}")
    manifest = _manifest(ns, "http://127.0.0.1:9")
    manifest["spec"]["metrics"] = {"source": "none"}
    # Pools without nodes: nothing is scheduled, the objects are what is tested.
    pools = isolate_pools(cluster, manifest, ns[-6:], pools=["t4-spot", "l4-ondemand"],
                          with_nodes=[])
    operator = OperatorProcess(operator_kubeconfig, workdir=tmp_path / "operator",
                               namespaces=[ns])
    objects = [("service", SM), ("service", f"{SM}-tier2"),
               ("configmap", f"{SM}-router"), ("configmap", f"{SM}-threshold")]

    def uids() -> dict[tuple[str, str], str | None]:
        out: dict[tuple[str, str], str | None] = {}
        for kind, name in objects:
            res = cluster.kubectl("get", kind, name, "-n", ns, "-o",
                                  "jsonpath={.metadata.uid}", check=False)
            out[(kind, name)] = res.stdout.strip() if res.returncode == 0 else None
        return out

    def state() -> str:
        return dump_state(cluster, ns, operator)

    path = tmp_path / "sm.yaml"
    path.write_text(to_yaml(manifest))
    try:
        operator.start()
        cluster.kubectl("apply", "-f", str(path))
        wait_for(lambda: all(uids().values()), timeout=180, interval=0.5,
                 what="the cascade's Services and ConfigMaps", on_timeout=state)
        before = uids()
        for kind, name in objects:
            cluster.kubectl("delete", kind, name, "-n", ns)
        # intervalSeconds is 2; the refresh that used to bring them back is 600 s.
        wait_for(lambda: all(u is not None and u != before[k] for k, u in uids().items()),
                 timeout=60, interval=0.5, what="the deleted objects re-created",
                 on_timeout=state)
    finally:
        operator.stop()
        print(f"\n--- operator log (tail)\n{operator.tail(40)}")
        cluster.delete_namespace(ns, wait=False)
        for node_pool in pools.values():
            cluster.delete_node_pool(node_pool, wait=False)

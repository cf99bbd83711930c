"""The operator under failure: killed mid-transition, node pool lost, spot preempted.

Each test has its own namespace, its own KWOK node pools (the ScaledModel's pools
point at them by label, so a test may delete or taint them) and its own operator
process (cluster-wide, as the chart runs it, on the chart's ServiceAccount).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.harness.e2e import (
    LABEL_SM,
    DeploymentWatch,
    add_isolated_nodes,
    apply,
    deployment_names,
    dump_state,
    get_sm,
    isolate_pools,
    load_example,
    scratch_namespace,
    to_yaml,
    wait_converged,
)
from tests.harness.k8s import NODE_POOL_LABEL, Cluster, wait_for
from tests.harness.operator import OperatorProcess, Operators

pytestmark = pytest.mark.e2e

SM = "resnet50"
# Pools start fast here (KWOK pods are Ready at once), so a pool whose replicas stay
# unavailable for max(--pool-stall-seconds, 2 x startupSeconds) = 10 s is "down".
STARTUP_SECONDS = 5
STALL_SECONDS = 10
INTERVAL_SECONDS = 2  # spec.scaling.intervalSeconds: decide every 2 s




def _example(ns: str) -> dict[str, Any]:
    manifest = load_example(namespace=ns)
    manifest["spec"]["scaling"]["intervalSeconds"] = INTERVAL_SECONDS
    return manifest


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def ns(cluster: Cluster, chart_release: Any) -> Iterator[str]:
    with scratch_namespace(cluster, "res") as name:
        yield name


@pytest.fixture
def start_operator(
    cluster: Cluster, operator_kubeconfig: Path, ns: str, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    ops = Operators(cluster.log_dir, request.node.name)

    def start(*extra: str) -> OperatorProcess:
        return ops.start(operator_kubeconfig, *extra)

    yield start
    ops.stop_all()


def _wait_converged(cluster: Cluster, ns: str, deployments: list[str],
                    op: OperatorProcess | None, timeout: float = 120) -> None:
    wait_converged(cluster, ns, SM, deployments, op, timeout)




def _prefix(ns: str) -> str:
    return ns.split("-")[-1]


def _node_pool_of_pods(cluster: Cluster, ns: str) -> set[str]:
    pods = cluster.get_json("pods", "-n", ns, "-l", f"{LABEL_SM}={SM}")["items"]
    out = set()
    for p in pods:
        node = p["spec"].get("nodeName")
        if node and not p["metadata"].get("deletionTimestamp"):
            labels = cluster.get_json("node", node)["metadata"]["labels"]
            out.add(labels[NODE_POOL_LABEL])
    return out


def _assert_single_owned(cluster: Cluster, ns: str, names: list[str]) -> None:
    """Exactly ``names``: no duplicate, no orphan; each owned by the ScaledModel and
    backed by one ReplicaSet holding its pods."""
    uid = get_sm(cluster, ns, SM)["metadata"]["uid"]
    every = cluster.get_json("deployments", "-n", ns)["items"]
    assert sorted(d["metadata"]["name"] for d in every) == sorted(names)
    for d in every:
        refs = d["metadata"]["ownerReferences"]
        assert [(r["uid"], r.get("controller")) for r in refs] == [(uid, True)]
    rs = [r for r in cluster.get_json("replicasets", "-n", ns)["items"]
          if r["spec"].get("replicas", 0) > 0]
    assert len(rs) == len(names), [r["metadata"]["name"] for r in rs]


# -- 5. operator SIGKILLed mid-transition ------------------------------------------------


def test_operator_killed_mid_transition_converges_without_duplicates(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    manifest = _example(ns)
    pools = isolate_pools(cluster, manifest, _prefix(ns), pools=["t4-spot", "t4-ondemand"],
                          with_nodes=["t4-spot"], startup_seconds=STARTUP_SECONDS)
    op = start_operator()
    apply(cluster, manifest)
    _wait_converged(cluster, ns, [f"{SM}-int8-t4-spot"], op)

    # Remove t4-spot from the spec: int8 moves to t4-ondemand, whose nodes do not
    # exist yet, so the transition hangs half-way: new Deployment Pending, old kept.
    manifest["spec"]["nodePools"] = [p for p in manifest["spec"]["nodePools"]
                                     if p["name"] != "t4-spot"]
    apply(cluster, manifest)
    wait_for(lambda: deployment_names(cluster, ns, SM) == [f"{SM}-int8-t4-ondemand",
                                                           f"{SM}-int8-t4-spot"],
             timeout=60, what="replacement Deployment created beside the old one",
             on_timeout=lambda: dump_state(cluster, ns, op))
    op.kill()
    assert op.returncode == -9

    # Make-before-break held while the operator was dead: the old replica still serves.
    old = cluster.get_json("deployment", f"{SM}-int8-t4-spot", "-n", ns)
    assert old["spec"]["replicas"] == 1 and old["status"].get("readyReplicas") == 1

    # Capacity arrives; the operator restarts (same ServiceAccount, new process).
    add_isolated_nodes(cluster, manifest, "t4-ondemand", pools["t4-ondemand"])
    op.start()
    _wait_converged(cluster, ns, [f"{SM}-int8-t4-ondemand"], op)
    _assert_single_owned(cluster, ns, [f"{SM}-int8-t4-ondemand"])
    assert _node_pool_of_pods(cluster, ns) == {pools["t4-ondemand"]}
    sm = get_sm(cluster, ns, SM)
    assert sm["status"]["placements"] == [
        {"variant": "int8", "pool": "t4-ondemand", "desired": 1, "ready": 1,
         "deployment": f"{SM}-int8-t4-ondemand", "planned": True}
    ]
    # Another restart changes nothing (resume is idempotent).
    op.stop()
    op.start()
    _wait_converged(cluster, ns, [f"{SM}-int8-t4-ondemand"], op)
    _assert_single_owned(cluster, ns, [f"{SM}-int8-t4-ondemand"])
    assert "Traceback" not in op.log_text()


# -- 6. node pool loss and spot preemption ------------------------------------------------


def _replanned_away(cluster: Cluster, ns: str, op: OperatorProcess, lost: str,
                    now_on: str, node_pool: str) -> None:
    watch = DeploymentWatch(cluster, ns, SM).start()
    try:
        _wait_converged(cluster, ns, [f"{SM}-int8-{now_on}"], op, timeout=180)
    finally:
        watch.stop()
    sm = get_sm(cluster, ns, SM)
    assert lost in sm["status"]["unavailablePools"]
    assert sm["status"]["placement"] == f"int8@{now_on} x1"
    _assert_single_owned(cluster, ns, [f"{SM}-int8-{now_on}"])
    assert _node_pool_of_pods(cluster, ns) == {node_pool}
    events = cluster.get_json("events", "-n", ns, "--field-selector",
                              f"involvedObject.name={SM}")["items"]
    assert any(e["reason"] == "Replaced" and f"int8@{lost}" in e["message"]
               for e in events), [(e["reason"], e["message"]) for e in events]
    assert any(e["reason"] == "DeletedDeployment" and f"{SM}-int8-{lost}" in e["message"]
               for e in events), [e["message"] for e in events]
    assert f"{SM}-int8-{now_on}" in watch.names_seen()
    # The operator's /metrics tells the same story.
    samples = [(x.name, x.labels, x.value) for f in text_string_to_metric_families(op.metrics())
               for x in f.samples]
    sm_labels = {"namespace": ns, "scaledmodel": SM}
    assert any(n == "tritonscale_decisions_total" and lb.get("reason") == "Replaced"
               and sm_labels.items() <= lb.items() and v >= 1 for n, lb, v in samples)
    desired = {lb["pool"]: v for n, lb, v in samples
               if n == "tritonscale_desired_replicas" and sm_labels.items() <= lb.items()}
    assert desired == {now_on: 1}, desired  # the lost pool's series is gone
    op.check_alive()


def test_node_pool_loss_replans_onto_remaining_pools(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    manifest = _example(ns)
    pools = isolate_pools(cluster, manifest, _prefix(ns),
                          pools=["t4-ondemand", "a100-ondemand"],
                          startup_seconds=STARTUP_SECONDS)
    op = start_operator("--pool-stall-seconds", str(STALL_SECONDS))
    apply(cluster, manifest)
    _wait_converged(cluster, ns, [f"{SM}-int8-t4-ondemand"], op)
    assert _node_pool_of_pods(cluster, ns) == {pools["t4-ondemand"]}

    # The whole t4-ondemand pool disappears (its nodes deleted, as a zone outage or
    # a scaled-away node group would). Pod GC removes the pods bound to the deleted
    # nodes; their replacements cannot be scheduled anywhere.
    cluster.delete_node_pool(pools["t4-ondemand"])
    _replanned_away(cluster, ns, op, "t4-ondemand", "a100-ondemand", pools["a100-ondemand"])


def test_spot_preemption_replans_onto_remaining_pools(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    manifest = _example(ns)
    pools = isolate_pools(cluster, manifest, _prefix(ns), pools=["t4-spot", "t4-ondemand"],
                          startup_seconds=STARTUP_SECONDS)
    op = start_operator("--pool-stall-seconds", str(STALL_SECONDS))
    apply(cluster, manifest)
    _wait_converged(cluster, ns, [f"{SM}-int8-t4-spot"], op)

    # Spot reclaim: the provider taints the nodes NoExecute (pods are evicted at once
    # by the taint-eviction controller), then the nodes go away.
    spot = pools["t4-spot"]
    nodes = [n["metadata"]["name"] for n in
             cluster.get_json("nodes", "-l", f"{NODE_POOL_LABEL}={spot}")["items"]]
    cluster.kubectl("taint", "nodes", *nodes,
                    "e2e.tritonscale.io/spot-reclaimed=true:NoExecute")

    def evicted() -> bool:
        pods = cluster.get_json("pods", "-n", ns, "-l", f"{LABEL_SM}={SM}")["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return bool(live) and all(p["status"].get("phase") == "Pending" for p in live)

    wait_for(evicted, timeout=60, what="spot pods evicted and replacements Pending",
             on_timeout=lambda: dump_state(cluster, ns, op))
    cluster.delete_node_pool(spot)
    _replanned_away(cluster, ns, op, "t4-spot", "t4-ondemand", pools["t4-ondemand"])


# -- an upgrade across a change of Deployment naming -----------------------------------


def test_a_deployment_named_by_an_older_operator_is_managed_then_deleted(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    """Before "--" separated a hyphenated variant from its pool, variant int8-trt on
    t4-spot was Deployment resnet50-int8-trt-t4-spot (today: resnet50-int8-trt--t4-spot).
    After an upgrade the operator finds that Deployment (its labels and controller
    owner reference say whose it is): it keeps managing it instead of starting a second
    one, and deletes it, by its own name, when the placement leaves the plan."""
    from tritonscale.core.render import Owner, get_deployment
    from tritonscale.core.spec import parse_manifest
    from tritonscale.core.types import Placement

    legacy, today = f"{SM}-int8-trt-t4-spot", f"{SM}-int8-trt--t4-spot"
    manifest = _example(ns)
    fp16 = [v for v in manifest["spec"]["variants"] if v["name"] == "fp16"]
    manifest["spec"]["variants"] = [v for v in manifest["spec"]["variants"]
                                    if v["name"] == "int8"]
    manifest["spec"]["variants"][0]["name"] = "int8-trt"
    isolate_pools(cluster, manifest, _prefix(ns), pools=["t4-spot"],
                  startup_seconds=STARTUP_SECONDS)
    apply(cluster, manifest)
    uid = get_sm(cluster, ns, SM)["metadata"]["uid"]
    # What the older operator had applied: today's Deployment under the old name.
    old = get_deployment(Owner(name=SM, namespace=ns, uid=uid),
                         parse_manifest(manifest)[2], Placement("int8-trt", "t4-spot", 1))
    old["metadata"]["name"] = legacy
    cluster.kubectl("apply", "--server-side", "--field-manager=tritonscale", "-f", "-",
                    input=to_yaml(old))
    wait_for(lambda: (cluster.get_json("deployment", legacy, "-n", ns).get("status") or {})
             .get("readyReplicas") == 1, timeout=60, what="the old Deployment Ready")

    op = start_operator()
    _wait_converged(cluster, ns, [legacy], op)
    first = get_sm(cluster, ns, SM)["status"]["observed"]["time"]
    # Two more decisions (intervalSeconds 2): still the one Deployment, under its name.
    wait_for(lambda: get_sm(cluster, ns, SM)["status"]["observed"]["time"] > first,
             timeout=30, what="a later decision", on_timeout=lambda: dump_state(cluster, ns, op))
    _assert_single_owned(cluster, ns, [legacy])
    placements = get_sm(cluster, ns, SM)["status"]["placements"]
    assert [p["deployment"] for p in placements] == [legacy], placements
    assert today not in deployment_names(cluster, ns, SM)

    # The placement leaves the plan (fp16 replaces int8-trt): the old Deployment goes.
    manifest["spec"]["variants"] = fp16
    apply(cluster, manifest)
    _wait_converged(cluster, ns, [f"{SM}-fp16-t4-spot"], op, timeout=180)
    _assert_single_owned(cluster, ns, [f"{SM}-fp16-t4-spot"])
    events = cluster.get_json("events", "-n", ns, "--field-selector",
                              f"involvedObject.name={SM}")["items"]
    assert any(e["reason"] == "DeletedDeployment" and legacy in e["message"]
               for e in events), [e["message"] for e in events]
    assert "Traceback" not in op.log_text()

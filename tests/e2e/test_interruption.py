"""A spot interruption notice on a real kube-apiserver with KWOK nodes: the spot pool's
node is tainted as Karpenter taints a node it is about to reclaim; the operator (its
own process, on the chart's ServiceAccount: the chart's RBAC lets it read nodes)
orders the replacement on another pool at once, keeps the spot replica serving while
the replacement cannot start, and removes it only once the replacement is Ready. The
taint itself triggers the decision (the operator watches Nodes): with a 60-s
``intervalSeconds`` the replacement is ordered seconds after the taint, not at the
model's next interval slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    wait_converged,
)
from tests.harness.k8s import NODE_POOL_LABEL, Cluster, wait_for
from tests.harness.operator import OperatorProcess, Operators

pytestmark = pytest.mark.e2e

SM = "resnet50"
STARTUP_SECONDS = 5
INTERVAL_SECONDS = 2
TAINT = "karpenter.sh/disrupted"


@pytest.fixture
def ns(cluster: Cluster, chart_release: Any) -> Iterator[str]:
    with scratch_namespace(cluster, "itn") as name:
        yield name


@pytest.fixture
def start_operator(
    cluster: Cluster, operator_kubeconfig: Path, ns: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    ops = Operators(cluster.log_dir, request.node.name)

    def start(*extra: str) -> OperatorProcess:
        return ops.start(operator_kubeconfig, *extra)

    yield start
    ops.stop_all()


def _events(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={SM}")["items"]
    return items


def _decisions(op: OperatorProcess, ns: str) -> float:
    """The operator's decisions about the model so far (its /metrics)."""
    want = {"namespace": ns, "scaledmodel": SM}
    return sum(x.value for f in text_string_to_metric_families(op.metrics())
               for x in f.samples
               if x.name == "tritonscale_decisions_total" and want.items() <= x.labels.items())


def _pods_node_pools(cluster: Cluster, ns: str) -> set[str]:
    out = set()
    for p in cluster.get_json("pods", "-n", ns, "-l", f"{LABEL_SM}={SM}")["items"]:
        node = p["spec"].get("nodeName")
        if node and not p["metadata"].get("deletionTimestamp"):
            out.add(cluster.get_json("node", node)["metadata"]["labels"][NODE_POOL_LABEL])
    return out


SPOT_DEP, OD_DEP = f"{SM}-int8-t4-spot", f"{SM}-int8-t4-ondemand"


@dataclass
class OnSpot:
    """The model converged on its spot pool's one node; t4-ondemand has no nodes yet,
    so a replica ordered there cannot start until they come."""

    manifest: dict[str, Any]
    pools: dict[str, str]  # pool -> its isolated node-pool label value
    op: OperatorProcess


def _converged_on_spot(cluster: Cluster, ns: str,
                       start_operator: Callable[..., OperatorProcess],
                       interval_seconds: int) -> OnSpot:
    manifest = load_example(namespace=ns)
    manifest["spec"]["scaling"]["intervalSeconds"] = interval_seconds
    prefix = ns.split("-")[-1]
    pools = isolate_pools(cluster, manifest, prefix, pools=["t4-spot", "t4-ondemand"],
                          with_nodes=["t4-spot"], startup_seconds=STARTUP_SECONDS)
    op = start_operator()
    apply(cluster, manifest)
    wait_converged(cluster, ns, SM, [SPOT_DEP], op)
    return OnSpot(manifest, pools, op)


def _taint(cluster: Cluster, pool_label: str) -> list[str]:
    """The interruption warning: Karpenter taints the pool's nodes before draining
    them. Their names."""
    nodes = [n["metadata"]["name"] for n in
             cluster.get_json("nodes", "-l", f"{NODE_POOL_LABEL}={pool_label}")["items"]]
    cluster.kubectl("taint", "nodes", *nodes, f"{TAINT}:NoSchedule")
    return nodes


def test_tainted_spot_node_is_replaced_make_before_break(
    cluster: Cluster, ns: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    on = _converged_on_spot(cluster, ns, start_operator, INTERVAL_SECONDS)
    manifest, pools, op = on.manifest, on.pools, on.op
    assert get_sm(cluster, ns, SM)["status"].get("interruptionNotices") == []

    watch = DeploymentWatch(cluster, ns, SM).start()
    try:
        nodes = _taint(cluster, pools["t4-spot"])

        wait_for(lambda: deployment_names(cluster, ns, SM) == sorted([OD_DEP, SPOT_DEP]),
                 timeout=60, what="the replacement ordered beside the spot Deployment",
                 on_timeout=lambda: dump_state(cluster, ns, op))
        status = get_sm(cluster, ns, SM)["status"]
        (notice,) = status["interruptionNotices"]
        assert notice["pool"] == "t4-spot" and TAINT in notice["reason"], notice
        assert nodes[0] in notice["reason"]

        # Make-before-break: while the replacement cannot start, decisions go on and
        # the spot replica keeps serving.
        first = _decisions(op, ns)
        wait_for(lambda: _decisions(op, ns) >= first + 2, timeout=30,
                 what="two more decisions", on_timeout=lambda: dump_state(cluster, ns, op))
        old = cluster.get_json("deployment", SPOT_DEP, "-n", ns)
        assert old["spec"]["replicas"] == 1 and old["status"].get("readyReplicas") == 1
        assert deployment_names(cluster, ns, SM) == sorted([OD_DEP, SPOT_DEP])

        # Capacity for the replacement arrives: it becomes Ready, then the spot one goes.
        add_isolated_nodes(cluster, manifest, "t4-ondemand", pools["t4-ondemand"])
        wait_converged(cluster, ns, SM, [OD_DEP], op, timeout=180)
    finally:
        watch.stop()
    assert _pods_node_pools(cluster, ns) == {pools["t4-ondemand"]}
    # Never without a Ready replica, and the spot Deployment was deleted only after
    # the replacement was Ready.
    after = [tot for t, tot, _ in watch.totals]
    assert after and min(after) >= 1, watch.totals
    deleted = next(i for i, e in enumerate(watch.events)
                   if e[1] == SPOT_DEP and e[4] == "DELETED")
    ready_before = [e for e in watch.events[:deleted] if e[1] == OD_DEP and e[3] >= 1]
    assert ready_before, watch.events
    events = _events(cluster, ns)
    notices = [e for e in events if e["reason"] == "InterruptionNotice"]
    assert len(notices) == 1 and notices[0]["type"] == "Warning", notices
    assert "t4-spot" in notices[0]["message"] and TAINT in notices[0]["message"]
    assert any(e["reason"] == "DeletedDeployment" and SPOT_DEP in e["message"]
               for e in events), [e["message"] for e in events]
    assert "Traceback" not in op.log_text()
    op.check_alive()


LONG_INTERVAL_SECONDS = 60


def test_the_taint_triggers_the_decision_before_the_next_interval(
    cluster: Cluster, ns: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    """intervalSeconds 60. Right after one of the model's regular decisions the spot
    node is tainted: the next regular decision is 60 s away, yet the replacement
    Deployment is there within a few seconds (the Node watch nudges the model), and
    the spot one stays."""
    on = _converged_on_spot(cluster, ns, start_operator, LONG_INTERVAL_SECONDS)
    op = on.op
    # Wait for a regular decision (its slot), so the next one is a whole interval away.
    before = _decisions(op, ns)
    wait_for(lambda: _decisions(op, ns) > before, timeout=3 * LONG_INTERVAL_SECONDS,
             interval=0.2, what="a regular decision",
             on_timeout=lambda: dump_state(cluster, ns, op))
    decided_at = time.monotonic()
    regular = _decisions(op, ns)
    nodes = _taint(cluster, on.pools["t4-spot"])
    wait_for(lambda: OD_DEP in deployment_names(cluster, ns, SM),
             timeout=LONG_INTERVAL_SECONDS, interval=0.2,
             what="the replacement ordered at the taint",
             on_timeout=lambda: dump_state(cluster, ns, op))
    took = time.monotonic() - decided_at
    # Seconds after the taint (load-tolerant bound), well before the next slot (60 s
    # after the regular decision): the nudge's decision, not the interval's.
    assert took < LONG_INTERVAL_SECONDS / 2, took
    # The decision is counted once its reconcile ends (after the Deployment it
    # creates and the status patch): wait for it, then it must be the only one.
    wait_for(lambda: _decisions(op, ns) > regular, timeout=LONG_INTERVAL_SECONDS / 4,
             interval=0.2, what="the nudged decision counted",
             on_timeout=lambda: dump_state(cluster, ns, op))
    assert _decisions(op, ns) == regular + 1
    assert deployment_names(cluster, ns, SM) == sorted([OD_DEP, SPOT_DEP])
    (notice,) = get_sm(cluster, ns, SM)["status"]["interruptionNotices"]
    assert notice["pool"] == "t4-spot" and TAINT in notice["reason"], notice
    log_text = op.log_text()
    assert f"node {nodes[0]} tainted {TAINT}" in log_text
    assert "Traceback" not in log_text
    op.check_alive()

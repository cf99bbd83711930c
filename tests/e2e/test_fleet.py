"""The operator as a fleet: no finalizers (delete while it is down) and shards.

- A ScaledModel the operator reconciled carries no finalizer, so ``kubectl delete
  sm`` completes while the operator is stopped (garbage collection removes its
  Deployments), and so does deleting the CRD itself.
- Two shards, each an active and a standby replica (Kopf peering per shard): every
  ScaledModel is reconciled by exactly the shard its uid hashes to, and killing a
  shard's active replica hands its share to that shard's standby.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.harness.e2e import (
    CRD_FILE,
    apply,
    deployment_names,
    dump_state,
    get_sm,
    load_example,
    scratch_namespace,
    sm_deployments,
)
from tests.harness.k8s import Cluster, wait_for
from tests.harness.operator import OperatorProcess, Operators

from tritonscale.core.fleet import shard_of

pytestmark = pytest.mark.e2e

INTERVAL_SECONDS = 2
PEERING_LIFETIME = 8  # a killed replica's peering entry expires after this


@pytest.fixture
def ns(cluster: Cluster, chart_release: Any, example_pools: Any) -> Iterator[str]:
    with scratch_namespace(cluster, "fleet") as name:
        yield name


@pytest.fixture
def operators(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[
    Callable[..., OperatorProcess]
]:
    ops = Operators(cluster.log_dir, request.node.name[:40], lines=30)

    def start(kubeconfig: Path, tag: str, *extra: str, namespaces: tuple[str, ...] = ()
              ) -> OperatorProcess:
        return ops.start(kubeconfig, *extra, tag=tag, namespaces=namespaces)

    yield start
    ops.stop_all()


def _model(ns: str, name: str) -> dict[str, Any]:
    m = load_example(namespace=ns, name=name)
    m["spec"]["scaling"]["intervalSeconds"] = INTERVAL_SECONDS
    # One ScaledModel per Triton model name and namespace (they would count each
    # other's traffic; the operator refuses the second with ModelNameConflict).
    m["spec"]["model"]["name"] = f"resnet50-{name}"
    return m




def _reconciled(cluster: Cluster, ns: str, name: str) -> bool:
    sm = get_sm(cluster, ns, name)
    return bool(
        (sm.get("status") or {}).get("observedGeneration") == sm["metadata"]["generation"]
        and sm_deployments(cluster, ns, name)
    )


def test_no_finalizer_and_delete_while_operator_is_down(
    cluster: Cluster, operator_kubeconfig: Path, ns: str,
    operators: Callable[..., OperatorProcess],
) -> None:
    op = operators(operator_kubeconfig, "solo")
    apply(cluster, _model(ns, "solo"))
    wait_for(lambda: _reconciled(cluster, ns, "solo"), timeout=90, interval=0.5,
             what=f"{ns}/solo reconciled", on_timeout=lambda: dump_state(cluster, ns, op))
    sm = get_sm(cluster, ns, "solo")
    assert not sm["metadata"].get("finalizers"), sm["metadata"]
    # The tick loop keeps deciding (every 2 s) with no per-object timer.
    wait_for(lambda: _decisions(op, ns).get("solo", 0) >= 3, timeout=30, interval=0.5,
             what="tick decisions after the create",
             on_timeout=lambda: f"{_decisions(op, ns)}\n{dump_state(cluster, ns, op)}")
    assert deployment_names(cluster, ns, "solo")

    op.stop()
    res = cluster.kubectl("delete", "sm", "solo", "-n", ns, "--timeout=30s", check=False)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not sm_deployments(cluster, ns, "solo"), timeout=60, interval=0.5,
             what="garbage collection of the Deployments")


def test_crd_deletes_while_operator_is_down(
    cluster: Cluster, operator_kubeconfig: Path, ns: str,
    operators: Callable[..., OperatorProcess],
) -> None:
    op = operators(operator_kubeconfig, "crd")
    for name in ("a", "b"):
        apply(cluster, _model(ns, name))
    wait_for(lambda: all(_reconciled(cluster, ns, n) for n in ("a", "b")), timeout=90,
             interval=0.5, what="both reconciled",
             on_timeout=lambda: dump_state(cluster, ns, op))
    op.stop()
    try:
        res = cluster.kubectl("delete", "crd", "scaledmodels.tritonscale.io",
                              "--timeout=60s", check=False)
        assert res.returncode == 0, res.stderr
        gone = cluster.kubectl("get", "crd", "scaledmodels.tritonscale.io", check=False)
        assert gone.returncode != 0
    finally:  # the rest of the session needs the CRD
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        cluster.wait_established("scaledmodels.tritonscale.io")
    wait_for(lambda: not sm_deployments(cluster, ns, "a"), timeout=60, interval=0.5,
             what="garbage collection after the CRD went")


def _decisions(op: OperatorProcess, ns: str) -> dict[str, float]:
    """Decisions this operator made per ScaledModel of ``ns`` (from its /metrics)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(op.metrics()):
        if fam.name != "tritonscale_decisions":
            continue
        for s in fam.samples:
            if s.name.endswith("_total") and s.labels.get("namespace") == ns:
                name = s.labels["scaledmodel"]
                out[name] = out.get(name, 0.0) + s.value
    return out


def _decided(op: OperatorProcess, ns: str) -> set[str]:
    return {n for n, v in _decisions(op, ns).items() if v > 0}


def test_two_shards_split_the_models_and_standby_takes_over(
    cluster: Cluster, ns: str, operators: Callable[..., OperatorProcess],
) -> None:
    names = [f"m{i}" for i in range(8)]
    for name in names:
        apply(cluster, _model(ns, name))
    uids = {n: get_sm(cluster, ns, n)["metadata"]["uid"] for n in names}
    share = {n: shard_of(uids[n], 2) for n in names}
    assert set(share.values()) == {0, 1}, share  # 8 uids: both shards own some
    tag = secrets.token_hex(3)
    peering = [f"e2e-{tag}-shard-{i}" for i in (0, 1)]
    for p in peering:
        apply(cluster, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                         "metadata": {"name": p, "namespace": ns}})
    ops: dict[tuple[int, str], OperatorProcess] = {}
    for shard in (0, 1):
        for role, prio in (("active", "20"), ("standby", "10")):
            ops[(shard, role)] = operators(
                cluster.kubeconfig, f"s{shard}-{role}",
                "--shards=2", f"--shard={shard}", f"--peering={peering[shard]}",
                f"--priority={prio}", f"--peering-lifetime={PEERING_LIFETIME}",
                namespaces=(ns,),
            )

    def state() -> str:
        return dump_state(cluster, ns, ops[(0, "active")]) + "\n" + "\n".join(
            f"{k}: decided {_decided(op, ns)}" for k, op in ops.items() if op.alive())

    wait_for(lambda: all(_reconciled(cluster, ns, n) for n in names), timeout=120,
             interval=0.5, what="every model reconciled", on_timeout=state)
    # Ticks keep coming (interval 2 s); after a few, every model has been decided by
    # exactly its shard's active replica and by nobody else.
    wait_for(
        lambda: _decided(ops[(0, "active")], ns) | _decided(ops[(1, "active")], ns)
        == set(names),
        timeout=30, interval=0.5, what="decisions for every model", on_timeout=state)
    for shard in (0, 1):
        mine = {n for n in names if share[n] == shard}
        assert _decided(ops[(shard, "active")], ns) == mine
        assert _decided(ops[(shard, "standby")], ns) == set()
    for n in names:
        assert not get_sm(cluster, ns, n)["metadata"].get("finalizers")

    # Kill shard 0's active replica: its standby takes the share over (after the
    # peering lifetime), shard 1 is untouched.
    ops[(0, "active")].kill()
    mine0 = {n for n in names if share[n] == 0}
    victim = sorted(mine0)[0]
    edited = _model(ns, victim)
    edited["spec"]["scaling"]["minReplicas"] = 2
    apply(cluster, edited)
    standby = ops[(0, "standby")]
    wait_for(lambda: _decided(standby, ns) == mine0, timeout=PEERING_LIFETIME + 60,
             interval=0.5, what="shard 0's standby deciding for shard 0's models",
             on_timeout=state)
    # (metrics.source none: signals unknown, so the plan is held; the standby handled
    # the spec change when status.observedGeneration caught up with it.)
    wait_for(lambda: _reconciled(cluster, ns, victim), timeout=60, interval=0.5,
             what=f"{victim}'s spec change handled by the standby", on_timeout=state)
    assert _decided(ops[(1, "standby")], ns) == set()
    assert _decided(ops[(1, "active")], ns) == {n for n in names if share[n] == 1}

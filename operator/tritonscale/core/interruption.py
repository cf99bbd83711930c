"""Spot interruption notices read from Kubernetes Nodes (pure: plain dicts in, no I/O).

Clouds warn before they reclaim spot capacity (AWS EC2: a Spot Instance Interruption
Warning two minutes ahead; GCP spot/preemptible VMs and Azure spot VMs about 30 s).
In a cluster the warning shows on the Node: the component that drains it first taints
it. A pool is **under interruption notice** when a Node hosting one of the model's
Triton pods of that pool carries one of :data:`INTERRUPTION_TAINTS` (any effect,
any value). ``decide`` then plans off the pool and keeps its Ready replicas serving
until their replacement is Ready (core/autoscale.py, rule 1b).

The keys, from each project's source (not guessed):

* ``karpenter.sh/disrupted`` -- Karpenter v1 (``DisruptedTaintKey``, NoSchedule,
  kubernetes-sigs/karpenter ``pkg/apis/v1/taints.go``): put on a node it disrupts,
  before draining it; with its interruption queue that includes the spot
  interruption warning (and also consolidation, drift, expiry: the node is drained
  either way, so its pods need replacing either way).
* ``karpenter.sh/disruption`` -- the same before v1 (v1beta1 ``DisruptionTaintKey``,
  value ``disrupting``, ``pkg/apis/v1beta1/taints.go``).
* ``aws-node-termination-handler/spot-itn``,
  ``aws-node-termination-handler/asg-lifecycle-termination``,
  ``aws-node-termination-handler/scheduled-maintenance`` -- the AWS Node Termination
  Handler with ``taintNode: true`` (aws/aws-node-termination-handler
  ``pkg/node/node.go``: ``SpotInterruptionTaint`` and the others it cordons and drains
  for). Its ``rebalance-recommendation`` taint is left out: a recommendation, not a
  reclaim.
* ``cloud.google.com/impending-node-termination`` -- GCP's node termination handler
  (GoogleCloudPlatform/k8s-node-termination-handler, its ``--taint`` example) and the
  key kubernetes-mixin's alerts treat as a node going away.

Known limit: a tainted node makes the whole pool "under notice" for the model (the
planner places replicas per pool, not per node).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tritonscale.core.api import LABEL_POOL
from tritonscale.core.spec import NodePool, ScaledModelSpec

# Taint key -> who puts it there (shown in status and events).
INTERRUPTION_TAINTS: Mapping[str, str] = {
    "karpenter.sh/disrupted": "Karpenter",
    "karpenter.sh/disruption": "Karpenter (before v1)",
    "aws-node-termination-handler/spot-itn": "AWS Node Termination Handler",
    "aws-node-termination-handler/asg-lifecycle-termination": "AWS Node Termination Handler",
    "aws-node-termination-handler/scheduled-maintenance": "AWS Node Termination Handler",
    "cloud.google.com/impending-node-termination": "GCP node termination handler",
}


def interruption_taint(node: Mapping[str, Any]) -> str | None:
    """``key[=value]:effect`` of the first interruption taint ``node`` carries, or None."""
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    if not isinstance(taints, list):
        return None
    for t in taints:
        if not isinstance(t, Mapping):
            continue
        key = t.get("key")
        if isinstance(key, str) and key in INTERRUPTION_TAINTS:
            value = t.get("value")
            shown = f"{key}={value}" if isinstance(value, str) and value else key
            return f"{shown}:{t.get('effect') or ''}".rstrip(":")
    return None


def node_selector(pool: NodePool) -> str:
    """The pool's nodeSelector as a label selector (``""``: every node)."""
    return ",".join(f"{k}={v}" for k, v in pool.node_selector)


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a :func:`node_selector` string (``k=v,...``)."""
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def models_on_node(
    models: Iterable[Mapping[str, Any]], node_labels: Mapping[str, str]
) -> list[str]:
    """The uids of the ScaledModel bodies with a node pool whose ``nodeSelector`` the
    node's labels satisfy (its pods may run there; no selector: any node). Read from
    the raw spec, untrusted: a malformed pool or selector matches nothing."""
    out: list[str] = []
    for body in models:
        meta = body.get("metadata")
        spec = body.get("spec")
        uid = meta.get("uid") if isinstance(meta, Mapping) else None
        pools = spec.get("nodePools") if isinstance(spec, Mapping) else None
        if not isinstance(uid, str) or not uid or not isinstance(pools, list):
            continue
        for pool in pools:
            if not isinstance(pool, Mapping):
                continue
            sel = pool.get("nodeSelector")
            if sel is None:
                sel = {}
            if isinstance(sel, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) and node_labels.get(k) == v
                for k, v in sel.items()
            ):
                out.append(uid)
                break
    return out


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, Mapping) else ""


def tainted_nodes(nodes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Node name -> its interruption taint, for the nodes that carry one."""
    out: dict[str, str] = {}
    for n in nodes:
        taint = interruption_taint(n)
        name = _name(n)
        if taint is not None and name:
            out[name] = taint
    return out


def pods_by_pool(pods: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Pool (the pod's ``tritonscale.io/pool`` label) -> names of the nodes its pods run on."""
    out: dict[str, set[str]] = {}
    for p in pods:
        meta = p.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        pool = labels.get(LABEL_POOL) if isinstance(labels, Mapping) else None
        spec = p.get("spec")
        node = spec.get("nodeName") if isinstance(spec, Mapping) else None
        if isinstance(pool, str) and isinstance(node, str) and node:
            out.setdefault(pool, set()).add(node)
    return out


def noticed_pools(
    spec: ScaledModelSpec,
    tainted: Mapping[str, Mapping[str, str]],
    hosts: Mapping[str, set[str]] | None,
) -> dict[str, str]:
    """Pools under interruption notice, each with why (node and taint).

    ``tainted``: per pool, the nodes matching its nodeSelector that carry an
    interruption taint (node -> taint). ``hosts``: per pool, the nodes the model's
    pods of that pool run on; ``None`` when unknown (the pods could not be listed):
    then any tainted node of the pool counts (a notice missed costs a startup with
    nothing Ready; one taken wrongly, replicas moved early)."""
    out: dict[str, str] = {}
    for pool in spec.node_pools:
        bad = tainted.get(pool.name) or {}
        mine = sorted(n for n in bad if hosts is None or n in hosts.get(pool.name, set()))
        if not mine:
            continue
        node = mine[0]
        key = bad[node].split(":", 1)[0].split("=", 1)[0]
        more = f" and {len(mine) - 1} more" if len(mine) > 1 else ""
        out[pool.name] = (f"node {node}{more} tainted {bad[node]} by "
                          f"{INTERRUPTION_TAINTS.get(key, 'its drainer')}")
    return out


# What an off-cadence decision (one taken at a notice's instant, between two of the
# model's interval steps) must not learn: the forecast's Holt update (time-scaled,
# but its deviation is fed per update), the online correction's EWMA (one update per
# step, not per second: an extra step would weigh the same signals' window twice),
# the burst history's per-step rates (its rise quantile counts steps) and the count
# of consecutive failures (``failureThreshold`` counts steps).
LEARNT_STATE_KEYS = ("forecast", "correction", "burstHistory", "failures")


def replan_state(
    previous: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> dict[str, Any]:
    """The state an off-cadence (notice) decision leaves: ``new`` (its target, its
    stabilisation windows' entries -- windows in time --, its make-before-break
    bookkeeping) with what is learnt per step (:data:`LEARNT_STATE_KEYS`) as it was
    in ``previous``. So the notice only re-plans: the next interval step learns from
    the signals exactly as if the notice decision had not run. Without a previous
    state of the same version (first decision, or a layout change), ``new`` as is."""
    out = dict(new)
    if not isinstance(previous, Mapping) or previous.get("version") != new.get("version"):
        return out
    for key in LEARNT_STATE_KEYS:
        if key in previous:
            out[key] = previous[key]
        else:
            out.pop(key, None)
    return out

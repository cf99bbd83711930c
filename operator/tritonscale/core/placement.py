"""Interim placement rule and the Deployment changes a plan asks for (pure).

:func:`initial_placement` is the operator's stand-in until the planner's
``core.autoscale.decide`` lands: ``minReplicas`` of the cheapest variant that meets
the accuracy floor, on the cheapest node pool that has a profile for it (spilling
into the next cheapest pools when one pool's ``maxReplicas`` is too small).

:func:`changes` turns (plan, what exists) into what to apply, keep and delete.
The plan is applied as decided: make-before-break is the policy's job
(:func:`tritonscale.core.stabilize.transition`, inside ``decide``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tritonscale.core.pricing import cost_per_hour, replica_price_per_hour
from tritonscale.core.spec import NodePool, ScaledModelSpec, Variant
from tritonscale.core.types import Decision, Placement, PlacementState


def summary(placements: Iterable[Placement]) -> str:
    """``int8@t4-spot x3,fp16@a100 x1`` (largest first; empty string when none)."""
    items = sorted(
        (p for p in placements if p.replicas > 0), key=lambda p: (-p.replicas, p.variant, p.pool)
    )
    return ",".join(f"{p.variant}@{p.pool} x{p.replicas}" for p in items)


def _batch1_ms(variant: Variant, pool: NodePool) -> float:
    prof = variant.profile_for(pool.accelerator)
    return prof.batches[0].latency_ms if prof is not None and prof.batches else float("inf")


def initial_placement(
    spec: ScaledModelSpec, unavailable_pools: frozenset[str] = frozenset()
) -> Decision:
    """``minReplicas`` of the cheapest eligible (variant, pool) pair."""
    combos = [(v, p) for v, p, _ in spec.combos() if p.name not in unavailable_pools]
    want = spec.scaling.min_replicas
    if not combos:
        why = (
            "every node pool that can run an eligible variant is unavailable"
            if spec.combos()
            else "no variant meeting spec.slo.minAccuracy has a profile for any pool"
        )
        return Decision(
            placements=(),
            reason="NoFeasiblePlacement",
            message=f"Cannot place {spec.model.name}: {why}.",
            slo_feasible=False,
            binding_constraint="nodePools",
        )
    # Cheapest pool first; among equal prices the faster variant, then names.
    combos.sort(key=lambda vp: (replica_price_per_hour(vp[1]), _batch1_ms(*vp), vp[0].name,
                                vp[1].name))
    variant = combos[0][0]
    placements: list[Placement] = []
    left = want
    for v, p in combos:
        if left <= 0:
            break
        if v.name != variant.name or p.max_replicas <= 0:
            continue
        n = min(left, p.max_replicas)
        placements.append(Placement(v.name, p.name, n))
        left -= n
    cost = cost_per_hour(spec, placements)
    desc = summary(placements) or "no replicas"
    feasible = left <= 0
    binding = "" if feasible else "nodePools[].maxReplicas"
    reason = "InterimPlacement"
    message = (
        f"{desc}: minReplicas ({want}) of the cheapest variant meeting the accuracy floor "
        f"on the cheapest pool with a profile for it; ${cost:.2f}/h."
    )
    if not feasible:
        reason = "InsufficientCapacity"
        message += f" {left} replicas do not fit the pools' maxReplicas."
    max_cost = spec.slo.max_cost_per_hour
    if max_cost is not None and cost > max_cost:
        feasible = False
        binding = "slo.maxCostPerHour"
        reason = "OverBudget"
        message += f" Exceeds spec.slo.maxCostPerHour (${max_cost:.2f}/h)."
    return Decision(
        placements=tuple(sorted(placements)),
        reason=reason,
        message=message,
        cost_per_hour=cost,
        slo_feasible=feasible,
        binding_constraint=binding,
    )


@dataclass(frozen=True)
class Changes:
    """What the operator does to make the Deployments match a decided plan.

    ``apply``: the plan's placements to render and apply. ``keep``: placements of
    the plan whose variant or pool left the spec (the policy holds them as they run
    until their replacement is Ready): left untouched, they cannot be rendered.
    ``delete``: existing Deployments the plan no longer has. No policy here: the
    decision (:func:`tritonscale.core.autoscale.decide`) already applied
    make-before-break.
    """

    apply: tuple[Placement, ...]
    keep: tuple[Placement, ...]
    delete: tuple[tuple[str, str], ...]


def changes(
    spec: ScaledModelSpec, plan: Sequence[Placement], current: Sequence[PlacementState]
) -> Changes:
    known_v = {v.name for v in spec.variants}
    known_p = {p.name for p in spec.node_pools}
    exists = {c.key for c in current if c.desired > 0 or c.ready > 0}
    want = {p.key: p for p in plan if p.replicas > 0}
    apply: list[Placement] = []
    keep: list[Placement] = []
    for key, p in sorted(want.items()):
        if p.variant in known_v and p.pool in known_p:
            apply.append(p)
        elif key in exists:
            keep.append(p)
    delete = tuple(sorted(k for k in {c.key for c in current} if k not in want))
    return Changes(tuple(apply), tuple(keep), delete)

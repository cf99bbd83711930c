"""A mix change must pay for itself: switching cost against savings.

Pure code. When the planner's cheapest mix puts replicas on (variant, pool) pairs
that are not deployed now, the move has a price the planner's $/h does not see: the
new replicas are billed through their ``startupSeconds`` before they serve anything
(make-before-break keeps the old ones serving, and billed, meanwhile), and the load
may move again before the switch has paid for itself. :func:`gate` compares:

* **switching cost** = sum over the new pairs of replicas x price x the slowest new
  pool's ``startupSeconds``, times ``1 + SWITCH_RISK`` (the risk premium: the load
  can change before the switch pays back, as it does after a lull);
* **savings** = (cost of the cheapest mix on the pairs already deployed - cost of
  the new mix) x the stabilisation window ``scaleDownStabilizationSeconds`` (the
  time a plan is expected to hold before the next scale-down may revise it).

The switch goes ahead only if savings exceed the switching cost, or if it only
spreads the replicas over pools alike to the deployed ones (same price, capacity and
capacity type) at no more $/h: the planner shares replicas over such pools, and a
fleet moved onto one of them by a preemption spreads again once the pool is back,
so the next preemption takes one pool's share, not the whole fleet. Otherwise the
plan stays on the deployed pairs (scaling them as needed), and the decision's
message says what the switch would have saved and cost.

When the pairs already deployed cannot hold the load at all, a switch is needed,
but not necessarily the planner's: its cheapest mix per hour may start many new
replicas where adding one pair to the deployed ones starts few. The same rule
picks among them: for the planner's plan and the cheapest plan on the deployed
pairs plus each one other pair, the cost over the window plus what the replicas
it adds cost to start (:func:`starting_cost`: on new pairs or deployed ones
alike, since every one of them is billed through its startup); the lowest wins
(ties to the planner's). On the bundled fleet at x1500, with 8 L4-spot replicas
and a ramp asking for 8.8k requests/s, the planner's 6 L4-spot + 16 T4-spot
($5.72/h; 16 replicas added, $0.214 to start) lost to 10 L4-spot + 2 L4-on-demand
($5.78/h; 4 added, $0.163): the T4 replicas were billed 270 s, Ready after the
ramp's backlog was gone, and never needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tritonscale.core import planner as pl
from tritonscale.core.spec import ScaledModelSpec

Key = tuple[str, str]
SWITCH_RISK = 1.0


@dataclass(frozen=True)
class Gate:
    plan: pl.Plan
    # The planner's plan was replaced: its switch did not pay (plan kept on the
    # deployed pairs), or a cheaper switch holds the load (``note`` says which).
    held: bool
    note: str  # one clause for the message ("" when nothing was gated)
    switching_cost: float = 0.0
    savings: float = 0.0


def gate(
    spec: ScaledModelSpec,
    combos: Sequence[pl.Combo],
    request: pl.Request,
    plan: pl.Plan,
    deployed: Mapping[Key, int],
    respect_budget: bool = True,
) -> Gate:
    """Keep ``plan`` or fall back to the cheapest plan on the deployed pairs."""
    have = {k for k, n in deployed.items() if n > 0}
    new = {k: n for k, n in plan.counts if n > 0 and k not in have}
    if not have or not new:
        return Gate(plan, False, "")
    on_deployed = [c for c in combos if c.key in have]
    alt = pl.solve(on_deployed, request, respect_budget=respect_budget) if on_deployed else None
    window = spec.scaling.scale_down_stabilization_seconds
    if alt is None:
        return _needed(spec, combos, request, plan, deployed, window, respect_budget)
    cost = switching_cost(spec, combos, plan, have)
    savings = (alt.cost_per_hour - plan.cost_per_hour) * window / 3600.0
    if savings > cost or _spreads(combos, plan, alt, have):
        return Gate(plan, False, "", cost, savings)
    note = (
        f"kept the deployed pools: switching to {pl.describe(plan)} would save "
        f"${savings:.3f} over {window:g} s, less than its switching cost ${cost:.3f}"
    )
    return Gate(alt, True, note, cost, savings)


def _spreads(combos: Sequence[pl.Combo], plan: pl.Plan, alt: pl.Plan, have: set[Key]) -> bool:
    """``plan`` only spreads the deployed replicas over pools alike to theirs (same
    price, capacity and capacity type: the planner shares replicas over such pools,
    e.g. after one came back from a preemption) at no more $/h: it goes ahead,
    paying its startup, so the next preemption takes only one pool's share."""
    if plan.cost_per_hour > alt.cost_per_hour + 1e-9:
        return False
    by = {c.key: c for c in combos}

    def sig(k: Key) -> tuple[float, float, bool] | None:
        c = by.get(k)
        return None if c is None else pl.alike_key(c)

    deployed = {sig(k) for k in have}
    return all(sig(k) in deployed for k, n in plan.counts if n > 0 and k not in have)


def switching_cost(
    spec: ScaledModelSpec, combos: Sequence[pl.Combo], plan: pl.Plan, have: set[Key]
) -> float:
    """What moving to ``plan`` costs beyond its $/h: its replicas on pairs not in
    ``have`` billed through the slowest new pool's startup, x (1 + SWITCH_RISK)."""
    return _startup_bill(spec, combos,
                         {k: n for k, n in plan.counts if n > 0 and k not in have})


def starting_cost(
    spec: ScaledModelSpec, combos: Sequence[pl.Combo], plan: pl.Plan,
    deployed: Mapping[Key, int],
) -> float:
    """What the replicas ``plan`` adds to ``deployed`` (on any pair) cost before they
    serve: billed through the slowest of their pools' startups, x (1 + SWITCH_RISK)."""
    return _startup_bill(spec, combos, {k: n - deployed.get(k, 0) for k, n in plan.counts
                                        if n > deployed.get(k, 0)})


def _startup_bill(
    spec: ScaledModelSpec, combos: Sequence[pl.Combo], started: Mapping[Key, int]
) -> float:
    """``started`` replicas billed through the slowest of their pools' startups,
    x (1 + SWITCH_RISK)."""
    if not started:
        return 0.0
    prices = {c.key: c.price_per_hour for c in combos}
    startup = max(spec.pool(p).startup_seconds for (_, p) in started)
    return (sum(n * prices[k] for k, n in started.items()) * startup / 3600.0
            * (1.0 + SWITCH_RISK))


def _needed(
    spec: ScaledModelSpec,
    combos: Sequence[pl.Combo],
    request: pl.Request,
    plan: pl.Plan,
    deployed: Mapping[Key, int],
    window: float,
    respect_budget: bool,
) -> Gate:
    """The deployed pairs cannot hold the load: the cheapest switch over the window
    (its $/h x window + what its added replicas cost to start, on new pairs or
    deployed ones alike), the planner's plan or the deployed pairs plus one other."""
    have = {k for k, n in deployed.items() if n > 0}

    def score(p: pl.Plan) -> float:
        return p.cost_per_hour * window / 3600.0 + starting_cost(spec, combos, p, deployed)

    best, best_score = plan, score(plan)
    for key in sorted({c.key for c in combos} - have):
        sub = [c for c in combos if c.key in have or c.key == key]
        p = pl.solve(sub, request, respect_budget=respect_budget)
        if p is not None and score(p) < best_score - 1e-9:
            best, best_score = p, score(p)
    cost = starting_cost(spec, combos, best, deployed)
    if best is plan:
        return Gate(plan, False, "", cost, 0.0)
    saved = starting_cost(spec, combos, plan, deployed) - cost
    extra = (best.cost_per_hour - plan.cost_per_hour) * window / 3600.0
    note = (
        f"switched to {pl.describe(best)} instead of {pl.describe(plan)}: it costs "
        f"${extra:.3f} more over {window:g} s and ${saved:.3f} less to start"
    )
    return Gate(best, True, note, cost, -extra)

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

The switch goes ahead only if savings exceed the switching cost, or if the pairs
already deployed cannot hold the load at all (then it is needed, not a saving).
Otherwise the plan stays on the deployed pairs (scaling them as needed), and the
decision's message says what the switch would have saved and cost.
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
    held: bool  # the switch did not pay: plan kept on deployed pairs
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
    if alt is None:
        return Gate(plan, False, "")
    prices = {c.key: c.price_per_hour for c in combos}
    startup = max(spec.pool(p).startup_seconds for (_, p) in new)
    cost = sum(n * prices[k] for k, n in new.items()) * startup / 3600.0 * (1.0 + SWITCH_RISK)
    window = spec.scaling.scale_down_stabilization_seconds
    savings = (alt.cost_per_hour - plan.cost_per_hour) * window / 3600.0
    if savings > cost:
        return Gate(plan, False, "", cost, savings)
    note = (
        f"kept the deployed pools: switching to {pl.describe(plan)} would save "
        f"${savings:.3f} over {window:g} s, less than its switching cost ${cost:.3f}"
    )
    return Gate(alt, True, note, cost, savings)

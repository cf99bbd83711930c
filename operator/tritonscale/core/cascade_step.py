"""One autoscaling step for a cascade: :func:`tritonscale.core.autoscale.decide` hands
over here once signals, forecast, corrections and the planning load are known.

Pure code. The planner (:mod:`tritonscale.core.cascade`) picks the threshold and both
tiers' mixes; this step applies the transition (step limits, make-before-break of
replicas) and decides the threshold the router runs with:

* **Make-before-break for thresholds.** A threshold that escalates more is applied
  only once every tier-2 placement of the target mix has its replicas Ready; until
  then the previous threshold stays (reason ``Transitioning``). A threshold that
  escalates less is applied at once (tier 2 shrinks later, after the scale-down
  window).

State keys (inside ``decide``'s state): ``thr`` the threshold the router runs with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tritonscale.core import cascade as cc
from tritonscale.core import planner as pl
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.stabilize import as_state_mix, transition
from tritonscale.core.types import Decision, Observation, Placement

Key = tuple[str, str]


def request(spec: ScaledModelSpec, load: float, od_load: float, min_replicas: int,
            scale: float = 1.0) -> cc.CascadeRequest:
    return cc.CascadeRequest(
        load_rps=load,
        od_load_rps=od_load if spec.scaling.spot_protection else 0.0,
        min_replicas=min_replicas,
        max_replicas=spec.scaling.max_replicas,
        max_cost_per_hour=spec.slo.max_cost_per_hour,
        escalation_scale=scale,
    )


def explain(spec: ScaledModelSpec, out: cc.CascadeOutcome, applied: float,
            final: Mapping[Key, int], scale: float = 1.0) -> tuple[str, dict[str, Any]]:
    """The status message and ``details.cascade`` for an outcome."""
    cas = spec.cascade
    assert cas is not None
    ch = out.chosen
    slo = spec.slo.latency
    pt = cas.point(applied) or ch.point
    lat = "inf" if math.isinf(ch.latency_ms) else f"{ch.latency_ms:.1f}"
    msg = (
        f"cascade at threshold {ch.point.threshold:g} (escalating {ch.escalated:.1%}, "
        f"accuracy {ch.point.accuracy:.4f} vs floor {spec.slo.min_accuracy:g}): "
        f"{pl.describe(ch.tier1)} -> {pl.describe(ch.tier2)} at ${ch.cost_per_hour:.2f}/h "
        f"for {out.load_rps:.0f} rps: predicted p{slo.percentile:g} {lat} ms vs "
        f"{slo.target_ms:g} ms target; binding: {out.binding}"
    )
    if out.runner_up:
        msg += f"; runner-up {out.runner_up} at ${out.runner_up_cost or 0.0:.2f}/h"
    else:
        msg += "; no runner-up"
    if out.without_cascade_cost is not None:
        msg += f"; without the cascade ${out.without_cascade_cost:.2f}/h"
    if abs(applied - ch.point.threshold) > 1e-9:
        msg += (f"; router keeps threshold {applied:g} until tier 2 "
                f"({pl.describe(ch.tier2)}) is Ready")
    cur = dict(final)
    if cur != ch.counts:
        msg += "; this step: " + (" + ".join(
            f"{n}x {v}@{p}" for (v, p), n in sorted(cur.items()) if n > 0) or "0 replicas")
    details: dict[str, Any] = {
        "threshold": applied,
        "escalated": round(cc.escalated(pt, scale), 6),
        "accuracy": pt.accuracy,
        "targetThreshold": ch.point.threshold,
        "bindingConstraint": out.binding,
        "runnerUp": out.runner_up,
        "tiers": [
            {"variant": cas.first.variant, "loadRps": round(out.load_rps, 3),
             "placements": as_state_mix(dict(ch.tier1.counts))},
            {"variant": cas.last.variant, "loadRps": round(out.load_rps * ch.escalated, 3),
             "placements": as_state_mix(dict(ch.tier2.counts))},
        ],
    }
    if out.runner_up_cost is not None:
        details["runnerUpCostPerHour"] = round(out.runner_up_cost, 4)
    if out.without_cascade_cost is not None:
        details["withoutCascadeCostPerHour"] = round(out.without_cascade_cost, 4)
    return msg + ".", details


def tier2_ready(spec: ScaledModelSpec, target: Mapping[Key, int], obs: Observation) -> bool:
    """Every tier-2 placement of ``target`` has at least its replicas Ready."""
    cas = spec.cascade
    assert cas is not None
    ready = {p.key: p.ready for p in obs.current}
    return all(ready.get(k, 0) >= n for k, n in target.items()
               if k[0] == cas.last.variant and n > 0)


def applied_threshold(spec: ScaledModelSpec, st: Mapping[str, Any], chosen: cc.CascadePlan,
                      obs: Observation) -> float:
    """Make-before-break: raise escalation only once tier 2's target is Ready."""
    cas = spec.cascade
    assert cas is not None
    prev_raw = st.get("thr")
    prev = cas.point(float(prev_raw)) if isinstance(prev_raw, (int, float)) else None
    new = chosen.point
    if prev is None or new.escalated <= prev.escalated:
        return new.threshold
    if tier2_ready(spec, chosen.counts, obs):
        return new.threshold
    return prev.threshold


def step(
    spec: ScaledModelSpec,
    obs: Observation,
    st: dict[str, Any],
    load: float,
    od_load: float,
    min_replicas: int,
    base_details: Mapping[str, Any],
) -> Decision:
    """Plan, transition and explain one cascade step (``st`` is updated in place)."""
    sc = spec.scaling
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    out = cc.plan_cascade(spec, request(spec, load, od_load, min_replicas),
                          obs.unavailable_pools)
    target = out.chosen.counts
    st["p"] = as_state_mix(target)
    tr = transition(target, obs.current, sc)
    final = tr.desired
    applied = applied_threshold(spec, st, out.chosen, obs)
    st["thr"] = applied
    msg, cdet = explain(spec, out, applied, final)
    held_thr = abs(applied - out.chosen.point.threshold) > 1e-9
    if not out.chosen.feasible:
        reason = "Infeasible"
    elif not out.within_budget:
        reason = "OverBudget"
    elif tr.held_for_readiness or held_thr:
        reason = "Transitioning"
    elif sum(final.values()) > sum(cur.values()):
        reason = "ScaledUp"
    elif sum(final.values()) < sum(cur.values()):
        reason = "ScaledDown"
    elif final != cur:
        reason = "Transitioning"
    else:
        reason = "Held"
    lat = out.chosen.latency_ms
    return Decision(
        placements=tuple(Placement(v, p, n) for (v, p), n in sorted(final.items()) if n > 0),
        reason=reason,
        message=msg,
        predicted_latency_ms=None if math.isinf(lat) else round(lat, 3),
        cost_per_hour=cc._mk_plan(final, spec).cost_per_hour,
        slo_feasible=out.chosen.feasible,
        binding_constraint=out.binding,
        runner_up=out.runner_up,
        runner_up_cost_per_hour=out.runner_up_cost,
        state=st,
        details={**base_details, "target": as_state_mix(target),
                 "step_limited": tr.step_limited, "accuracy": cdet["accuracy"],
                 "cascade": cdet},
    )


def plan_once(spec: ScaledModelSpec, rps: float, min_replicas: int) -> Decision:
    """``tritonscale plan`` for a cascade: a steady load, no state."""
    load = max(0.0, rps) * (1.0 + spec.scaling.headroom)
    out = cc.plan_cascade(spec, request(spec, load, max(0.0, rps), min_replicas))
    mix = out.chosen.counts
    msg, cdet = explain(spec, out, out.chosen.point.threshold, mix)
    reason = ("Infeasible" if not out.chosen.feasible
              else "OverBudget" if not out.within_budget else "Planned")
    lat = out.chosen.latency_ms
    return Decision(
        placements=tuple(Placement(v, p, n) for (v, p), n in sorted(mix.items()) if n > 0),
        reason=reason,
        message=msg,
        predicted_latency_ms=None if math.isinf(lat) else round(lat, 3),
        cost_per_hour=out.chosen.cost_per_hour,
        slo_feasible=out.chosen.feasible,
        binding_constraint=out.binding,
        runner_up=out.runner_up,
        runner_up_cost_per_hour=out.runner_up_cost,
        details={"load_rps": load, "level": 0, "ladder": "normal",
                 "accuracy": cdet["accuracy"], "cascade": cdet},
    )

"""One autoscaling step for a cascade: :func:`tritonscale.core.autoscale.decide` hands
over here once signals, forecast, corrections and the planning load are known.

Pure code. The planner (:mod:`tritonscale.core.cascade`) picks the threshold and both
tiers' mixes; this step applies the transition (step limits, make-before-break of
replicas) and decides the threshold the router runs with:

* **Accuracy as a live lever** (:func:`applied_threshold`). The threshold the router
  runs with is judged on the *Ready* replicas at the *current* load: the planned one
  if they hold the SLO with it; under pressure (a burst while capacity boots, a pool
  lost, a budget-bound mix) the most escalating threshold within the floor they
  still hold, before the SLO breaks; with ``priority: accuracy``, slack is spent on
  a more escalating threshold they hold with a margin.
* **Make-before-break for thresholds.** Escalation never rises onto capacity that
  cannot hold it: a higher threshold waits until tier 2's new replicas are Ready
  (reason ``Transitioning``). Lowering escalation is applied at once (tier 2 shrinks
  later, after the scale-down window).
* **Online correction** (:func:`escalation_scale`): the observed escalation rate over
  what the curve predicts at the running threshold, smoothed and bounded, scales the
  whole curve's ``escalated``; a missing signal holds the scale.

State keys (inside ``decide``'s state): ``thr`` the threshold the router runs with,
``esc`` the escalation correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tritonscale.core import cascade as cc
from tritonscale.core import planner as pl
from tritonscale.core.cascade_spec import EscalationPoint
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.stabilize import as_state_mix, movement_reason, pool_limits, transition
from tritonscale.core.types import Decision, Observation, Placement, finite_or_none

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
        msg += (f"; router runs threshold {applied:g} (accuracy {pt.accuracy:.4f}) on the "
                f"Ready capacity until tier 2 ({pl.describe(ch.tier2)}) is Ready")
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


# Raising escalation needs the Ready mix to hold the SLO with this margin (no flapping).
RAISE_MARGIN = 0.85
# Online correction of escalated(threshold): EWMA weight and bounds of the scale.
ESC_WEIGHT = 0.3
ESC_BOUNDS = (0.25, 4.0)
ESC_MIN_RPS = 1.0


def escalation_scale(spec: ScaledModelSpec, st: Mapping[str, Any], obs: Observation,
                     rps: float) -> float:
    """The correction of the curve's ``escalated`` from the observed rate (held if unknown).

    The router ran the previous step's threshold (``thr``); the observed fraction over
    what the curve says there, smoothed, bounded, multiplies every point's
    ``escalated`` (the input mix drifts as a whole: harder inputs escalate more at
    every threshold).
    """
    cas = spec.cascade
    assert cas is not None
    raw = st.get("esc", 1.0)
    scale = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) \
        and math.isfinite(raw) and raw > 0 else 1.0
    seen = finite_or_none(obs.escalated)
    thr = st.get("thr")
    point = cas.point(float(thr)) if isinstance(thr, (int, float)) else None
    if seen is None or not 0.0 <= seen <= 1.0 or point is None or rps < ESC_MIN_RPS:
        return scale  # a missing escalation signal holds, like other missing signals
    if point.escalated <= 0:
        return scale
    ratio = min(max(seen / point.escalated, ESC_BOUNDS[0]), ESC_BOUNDS[1])
    scale = (1 - ESC_WEIGHT) * scale + ESC_WEIGHT * ratio
    return min(max(scale, ESC_BOUNDS[0]), ESC_BOUNDS[1])


def applied_threshold(spec: ScaledModelSpec, st: Mapping[str, Any], chosen: cc.CascadePlan,
                      obs: Observation, rps: float, scale: float) -> tuple[float, str]:
    """The threshold the router runs with now, and why (``planned``, ``slack``,
    ``pressure`` or ``makeBeforeBreak``).

    Judged on what is Ready at the current load: the planned threshold if the Ready
    mix holds the SLO with it; with ``priority: accuracy`` a more escalating one the
    Ready mix holds with margin (spending slack); under pressure (a burst while
    capacity boots, a pool lost, a budget-limited mix) the most escalating point
    within the floor that the Ready mix still holds, else the least escalating one.
    Escalation never rises onto capacity that cannot hold it: make-before-break.
    """
    cas = spec.cascade
    assert cas is not None
    floor = spec.slo.min_accuracy
    target = spec.slo.latency.target_ms
    allowed = sorted((p for p in cas.points if p.accuracy >= floor),
                     key=lambda p: p.escalated) or [chosen.point]
    prev_raw = st.get("thr")
    prev = cas.point(float(prev_raw)) if isinstance(prev_raw, (int, float)) else None
    ready = {p.key: p.ready for p in obs.current if p.ready > 0}

    def ok(pt: EscalationPoint) -> bool:
        raising = prev is not None and pt.escalated > prev.escalated
        limit = target * (RAISE_MARGIN if raising else 1.0)
        return cc.holds(spec, pt, scale, ready, rps, limit)

    want = chosen.point
    if spec.slo.priority == "accuracy":
        for pt in reversed(allowed):
            if pt.escalated <= want.escalated:
                break
            if ok(pt):
                return pt.threshold, "slack"
    if ok(want):
        return want.threshold, "planned"
    rising = prev is not None and want.escalated > prev.escalated

    def lower(pt: EscalationPoint) -> tuple[float, str]:
        waiting = rising and prev is not None and pt.escalated <= prev.escalated
        return pt.threshold, "makeBeforeBreak" if waiting else "pressure"

    for pt in reversed(allowed):
        if pt.escalated < want.escalated and ok(pt):
            return lower(pt)
    low = allowed[0]
    if rising and prev is not None and prev.escalated < low.escalated:
        return prev.threshold, "makeBeforeBreak"  # the floor rose: wait for tier 2
    return lower(low) if low.escalated < want.escalated else (low.threshold, "pressure")


def step(
    spec: ScaledModelSpec,
    obs: Observation,
    st: dict[str, Any],
    load: float,
    od_load: float,
    min_replicas: int,
    rps: float,
    base_details: Mapping[str, Any],
) -> Decision:
    """Plan, transition and explain one cascade step (``st`` is updated in place)."""
    sc = spec.scaling
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    scale = escalation_scale(spec, st, obs, rps)
    st["esc"] = round(scale, 4)
    out = cc.plan_cascade(spec, request(spec, load, od_load, min_replicas, scale),
                          obs.unavailable_pools)
    target = out.chosen.counts
    st["p"] = as_state_mix(target)
    tr = transition(target, obs.current, sc, pool_limits(spec), sc.max_replicas)
    final = tr.desired
    applied, why = applied_threshold(spec, st, out.chosen, obs, rps, scale)
    st["thr"] = applied
    msg, cdet = explain(spec, out, applied, final, scale)
    cdet["thresholdReason"] = why
    cdet["escalationScale"] = round(scale, 4)
    if obs.escalated is not None:
        cdet["observedEscalated"] = obs.escalated
    held_thr = why == "makeBeforeBreak"
    if not out.chosen.feasible:
        reason = "Infeasible"
    elif not out.within_budget:
        reason = "OverBudget"
    else:
        reason = movement_reason(tr.held_for_readiness or held_thr, final, cur)
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

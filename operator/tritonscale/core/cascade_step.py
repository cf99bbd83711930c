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
* **The floor as a budget** (:func:`served`, :func:`needed_accuracy`). The floor is
  kept on the accuracy *served*, over a rolling (exponentially weighted,
  :data:`ACCURACY_WINDOW_S`) window of the requests answered at each step's threshold.
  A surplus (the window above the floor) may be spent under pressure: when no point
  within the floor holds at the Ready capacity, the router may run a point below it,
  down to tier 1 alone (threshold 0: nothing escalates), for as long as the surplus
  covers one more interval of it (reason ``accuracyBudget``). A deficit is repaid:
  the planner then only considers points accurate enough to restore the window
  within :data:`REPAY_S` at the current rate (more escalation, planned with its
  tier-2 capacity).
* **Online correction** (:func:`escalation_scale`): the observed escalation rate over
  what the curve predicts at the running threshold, smoothed and bounded, scales the
  whole curve's ``escalated``; a missing signal holds the scale.

State keys (inside ``decide``'s state): ``thr`` the threshold the router runs with,
``esc`` the escalation correction, ``acc`` the accuracy window ``[time, requests,
accuracy]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonscale.core import cascade as cc
from tritonscale.core import planner as pl
from tritonscale.core.cascade_spec import EscalationPoint
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.stabilize import as_state_mix, movement_reason, pool_limits, transition
from tritonscale.core.types import Decision, Observation, Placement, finite_or_none

Key = tuple[str, str]


# Threshold 0 escalates nothing (a confidence is never below 0): tier 1 alone.
TIER1_ONLY = 0.0
# The floor is kept over this rolling window of requests (exponential weights).
ACCURACY_WINDOW_S = 3600.0
# A deficit is planned away within this long at the current rate.
REPAY_S = 900.0


def request(spec: ScaledModelSpec, load: float, od_load: float, min_replicas: int,
            scale: float = 1.0, thresholds: frozenset[float] | None = None
            ) -> cc.CascadeRequest:
    return cc.CascadeRequest(
        load_rps=load,
        od_load_rps=od_load if spec.scaling.spot_protection else 0.0,
        min_replicas=min_replicas,
        max_replicas=spec.scaling.max_replicas,
        max_cost_per_hour=spec.slo.max_cost_per_hour,
        escalation_scale=scale,
        thresholds=thresholds,
    )


def tier1_only(spec: ScaledModelSpec) -> EscalationPoint:
    """Threshold 0: the curve's own point there, else nothing escalates and the
    accuracy is tier 1's variant's."""
    cas = spec.cascade
    assert cas is not None
    own = cas.point(TIER1_ONLY)
    if own is not None:
        return own
    return EscalationPoint(TIER1_ONLY, 0.0, spec.variant(cas.first.variant).accuracy)


def point_of(spec: ScaledModelSpec, threshold: float | None) -> EscalationPoint | None:
    """The curve's point at ``threshold``, or tier 1 alone at threshold 0; else None."""
    cas = spec.cascade
    assert cas is not None
    if threshold is None or not math.isfinite(threshold):
        return None
    pt = cas.point(threshold)
    if pt is None and abs(threshold - TIER1_ONLY) < 1e-9:
        return tier1_only(spec)
    return pt


@dataclass(frozen=True)
class Served:
    """The accuracy served over the rolling window, as of ``t``."""

    t: float
    requests: float
    accuracy: float

    def surplus(self, floor: float) -> float:
        """Requests x accuracy above the floor (negative: a deficit)."""
        return self.requests * (self.accuracy - floor)

    def as_state(self) -> list[float]:
        return [round(self.t, 3), round(self.requests, 3), round(self.accuracy, 6)]


def served(spec: ScaledModelSpec, raw: Any, threshold: float | None, rps: float,
           now: float) -> Served:
    """The window updated with the requests since its last update, answered at the
    threshold the router ran (``threshold``, the previous step's); older requests
    weigh ``exp(-age / ACCURACY_WINDOW_S)``. An unknown threshold adds nothing."""
    prev: Served | None = None
    if isinstance(raw, (list, tuple)) and len(raw) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in raw):
        t, n, a = (float(x) for x in raw)
        if t <= now and n >= 0 and 0.0 <= a <= 1.0:
            prev = Served(t, n, a)
    if prev is None:
        return Served(now, 0.0, spec.slo.min_accuracy)
    dt = min(now - prev.t, ACCURACY_WINDOW_S)
    kept = prev.requests * math.exp(-dt / ACCURACY_WINDOW_S)
    pt = point_of(spec, threshold)
    new = max(0.0, rps) * dt if pt is not None else 0.0
    total = kept + new
    if total <= 0:
        return Served(now, 0.0, prev.accuracy)
    acc = (prev.accuracy * kept + (pt.accuracy * new if pt is not None else 0.0)) / total
    return Served(now, total, min(1.0, max(0.0, acc)))


def needed_accuracy(spec: ScaledModelSpec, win: Served, rps: float) -> float:
    """The least accuracy the plan may run: the floor, plus what repays a deficit of
    the window within :data:`REPAY_S` at ``rps`` (at most the curve's best)."""
    cas = spec.cascade
    assert cas is not None
    floor = spec.slo.min_accuracy
    best = max(p.accuracy for p in cas.points)
    deficit = -win.surplus(floor)
    if deficit <= 0:
        return floor
    return min(best, floor + deficit / (max(rps, 1.0) * REPAY_S))


def explain(spec: ScaledModelSpec, out: cc.CascadeOutcome, applied: float,
            final: Mapping[Key, int], scale: float = 1.0) -> tuple[str, dict[str, Any]]:
    """The status message and ``details.cascade`` for an outcome."""
    cas = spec.cascade
    assert cas is not None
    ch = out.chosen
    slo = spec.slo.latency
    pt = point_of(spec, applied) or ch.point
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
        if pt.accuracy < spec.slo.min_accuracy:
            msg += ", below the floor while the accuracy served over the window allows it"
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
                      obs: Observation, rps: float, scale: float,
                      need: float | None = None, surplus: float = 0.0) -> tuple[float, str]:
    """The threshold the router runs with now, and why (``planned``, ``slack``,
    ``pressure``, ``accuracyBudget`` or ``makeBeforeBreak``).

    Judged on what is Ready at the current load: the planned threshold if the Ready
    mix holds the SLO with it; with ``priority: accuracy`` a more escalating one the
    Ready mix holds with margin (spending slack); under pressure (a burst while
    capacity boots, a pool lost, a budget-limited mix) the most escalating point
    at or above ``need`` (the floor, or more while a deficit is repaid) that the
    Ready mix still holds; if none does, a point below it down to tier 1 alone, the
    most escalating one that holds (else the least escalating one), while the
    window's ``surplus`` covers one more interval of it; else the least escalating
    point at or above ``need``. Escalation never rises onto capacity that cannot
    hold it: make-before-break.
    """
    cas = spec.cascade
    assert cas is not None
    floor = spec.slo.min_accuracy
    need = floor if need is None else need
    target = spec.slo.latency.target_ms
    allowed = sorted((p for p in cas.points if p.accuracy >= need - 1e-12),
                     key=lambda p: p.escalated) or [chosen.point]
    prev_raw = st.get("thr")
    prev = point_of(spec, float(prev_raw)) if isinstance(prev_raw, (int, float)) else None
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
    # Below the floor's points, paid from the window's surplus for one more interval.
    step_requests = max(rps, 0.0) * spec.scaling.interval_seconds
    below = {p.threshold: p for p in (*cas.points, tier1_only(spec))
             if p.escalated < low.escalated
             and surplus + (p.accuracy - floor) * step_requests >= 0}
    shed = sorted(below.values(), key=lambda p: p.escalated, reverse=True)
    for pt in shed:
        if ok(pt):
            return pt.threshold, "accuracyBudget"
    if shed:
        return shed[-1].threshold, "accuracyBudget"
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
    now: float = 0.0,
) -> Decision:
    """Plan, transition and explain one cascade step (``st`` is updated in place)."""
    sc = spec.scaling
    cas = spec.cascade
    assert cas is not None
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    scale = escalation_scale(spec, st, obs, rps)
    st["esc"] = round(scale, 4)
    prev_thr = st.get("thr")
    win = served(spec, st.get("acc"), float(prev_thr) if isinstance(
        prev_thr, (int, float)) and not isinstance(prev_thr, bool) else None, rps, now)
    st["acc"] = win.as_state()
    need = needed_accuracy(spec, win, rps)
    floor = spec.slo.min_accuracy
    only = (frozenset(p.threshold for p in cas.points if p.accuracy >= need - 1e-12)
            if need > floor else None)
    out = cc.plan_cascade(spec, request(spec, load, od_load, min_replicas, scale, only),
                          obs.unavailable_pools)
    target = out.chosen.counts
    st["p"] = as_state_mix(target)
    tr = transition(target, obs.current, sc, pool_limits(spec), sc.max_replicas)
    final = tr.desired
    applied, why = applied_threshold(spec, st, out.chosen, obs, rps, scale, need,
                                     win.surplus(floor))
    st["thr"] = applied
    msg, cdet = explain(spec, out, applied, final, scale)
    cdet["thresholdReason"] = why
    cdet["escalationScale"] = round(scale, 4)
    cdet["accuracyServed"] = round(win.accuracy, 6)
    cdet["neededAccuracy"] = round(need, 6)
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

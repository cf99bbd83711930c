"""The autoscaling policy: one pure step, shared by the operator, ``plan`` and ``simulate``.

``decide(spec, obs, state, now) -> Decision`` runs, in order:

1. **Signals.** ``obs.rps`` unknown (None/NaN/Inf or ``obs.error``): hold the
   current desired replicas (never scale down) with reason ``HeldUnknownSignals``;
   after ``scaling.failureThreshold`` consecutive failures apply
   ``scaling.safePlan`` merged with the current replicas (per pair, the larger
   count: never below current) with reason ``SafePlan``. With nothing deployed and
   no previous plan, the initial plan is ``max(1, minReplicas)`` replicas of
   the cheapest combo (reason ``InitialPlan``). Replicas that cannot be held
   (their pool is unavailable or left the spec, their variant left the spec or is
   below ``minAccuracy``) move to the cheapest usable combos, same total (reason
   ``Replaced``).
2. **Forecast** (:mod:`.forecast`) over the time new capacity needs to become
   Ready: the slowest ``startupSeconds`` among the pools of the current mix (or
   of all available pools before there is one) plus one interval.
3. **Online correction**: when every replica is Ready and the observed latency
   percentile exceeds the target, a load multiplier ``c`` grows (up to 2x) so the
   planner adds capacity the perf model did not predict; it decays back to 1
   while observations stay below 80% of target.
4. **Bursts** (:mod:`.burst`): headroom from the load's recent volatility over
   the startup horizon (between ``headroom`` and ``maxHeadroom``), a backlog drain
   term (Triton's pending requests / queue time; added after the windows) and a
   KPA-like panic (no scale-down while a backlog or latency over target lasts).
   **Load stabilisation** (:func:`.stabilize.stabilize_load`): the planning load
   max(forecast, current, panic load) x (1 + headroom) x c goes through HPA-like
   windows.
5. **Planner** (:mod:`.planner`) with spot protection at the current load x c.
   When SLO and budget cannot both hold: ``priority: latency`` keeps the SLO and
   exceeds ``maxCostPerHour`` (reason ``OverBudget``); ``priority: cost`` walks the
   **degradation ladder** within budget, one rung per step down as needed:
   1 = drop the headroom, 2 = plan for the current load (no forecast), 3 = best
   effort: the most load the budget can hold with the fastest variants per
   dollar above the accuracy floor (reason ``Degraded``). It climbs back one rung
   only after the rung above has been feasible for ``recoverySeconds``
   continuously. With no plan meeting the SLO at all (pool limits): best effort,
   reason ``Infeasible``.
   A plan that moves replicas onto (variant, pool) pairs not deployed now must pay
   for itself (:mod:`.switching`): otherwise the plan stays on the deployed pairs.
6. **Transition** (:func:`.stabilize.transition`): step limits and make-before-break.

Reasons: ``InitialPlan``, ``ScaledUp``, ``ScaledDown``, ``Held``, ``Transitioning``,
``HeldUnknownSignals``, ``Replaced``, ``SafePlan``, ``Degraded``, ``OverBudget``, ``Infeasible``.

State (``Decision.state``; JSON-able, a few hundred bytes): ``v`` version,
``f`` forecast state, ``w`` load window ``[[t, rps], ...]``, ``L`` last stabilised
load, ``wo``/``Lo`` the same for the current load that spot protection must
hold, ``c`` correction multiplier, ``lvl`` ladder rung, ``rec`` time since the rung
above has been feasible (or None), ``fail`` consecutive signal failures, ``p``
last target mix ``[[variant, pool, replicas], ...]``, ``vh``/``pz`` the burst
rules' rate history and panic deadline (:mod:`.burst`), ``idle`` time since the
rate has been 0 (scale-to-zero through ``idleSeconds``), ``bc`` the last binding
constraint with the mix it was computed for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tritonscale.core import burst, cascade_step, switching
from tritonscale.core import cascade as cc
from tritonscale.core import forecast as fc
from tritonscale.core import planner as pl
from tritonscale.core.correction import corrected_spec, update_factors
from tritonscale.core.perf import predict_replica
from tritonscale.core.safeplan import admissible_safe_plan
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.stabilize import (
    as_state_mix,
    from_state_mix,
    stabilize_load,
    transition,
)
from tritonscale.core.types import Decision, Observation, Placement, finite_or_none

Key = tuple[str, str]
STATE_VERSION = 1
MAX_CORRECTION = 2.0
OD_WINDOW_SECONDS = 60.0
LADDER_RUNGS = ("normal", "no headroom", "current load", "best effort within budget")


@dataclass(frozen=True)
class _Planned:
    plan: pl.Plan
    combos: tuple[pl.Combo, ...]
    request: pl.Request
    feasible: bool  # meets the SLO at the request's load
    within_budget: bool
    level: int
    binding: str
    runner_up: pl.Plan | None = None
    searched: bool = False  # runner_up was searched for


def _request(
    spec: ScaledModelSpec, load: float, od_load: float, min_replicas: int
) -> pl.Request:
    return pl.Request(
        load_rps=load,
        od_load_rps=od_load if spec.scaling.spot_protection else 0.0,
        min_replicas=min_replicas,
        max_replicas=spec.scaling.max_replicas,
        max_cost_per_hour=spec.slo.max_cost_per_hour,
        weighted=spec.routing.weighted,
    )


def _plan_ladder(
    spec: ScaledModelSpec,
    combos: tuple[pl.Combo, ...],
    loads: tuple[float, float, float],
    od_load: float,
    min_level: int,
    min_replicas: int,
) -> _Planned:
    """Plan at the first ladder rung >= ``min_level`` that fits (see module doc)."""
    cost_first = spec.slo.priority == "cost"
    if not cost_first:
        req = _request(spec, loads[0], od_load, min_replicas)
        plan, ru = pl.solve_with_runner_up(combos, req)
        if plan is not None:
            return _Planned(plan, combos, req, True, True, 0, "", ru, True)
        plan = pl.solve(combos, req, respect_budget=False)
        if plan is not None:
            return _Planned(plan, combos, req, True, False, 0, "maxCostPerHour")
        best = pl.best_effort(combos, req, respect_budget=False) or pl.Plan((), 0.0, math.inf,
                                                                           math.inf)
        return _Planned(best, combos, req, False, _in_budget(spec, best), 0,
                        _limit_name(spec, best))
    for level in range(min_level, 3):
        req = _request(spec, loads[level], od_load, min_replicas)
        plan, ru = pl.solve_with_runner_up(combos, req)
        if plan is not None:
            return _Planned(plan, combos, req, True, True, level, "", ru, True)
    req = _request(spec, loads[2], od_load, min_replicas)
    best = pl.best_effort(combos, req, respect_budget=True) or pl.Plan((), 0.0, math.inf,
                                                                      math.inf)
    return _Planned(best, combos, req, best.supported_rps >= loads[2], True, 3, "maxCostPerHour")


def _in_budget(spec: ScaledModelSpec, plan: pl.Plan) -> bool:
    cap = spec.slo.max_cost_per_hour
    return cap is None or plan.cost_per_hour <= cap + 1e-9


def _limit_name(spec: ScaledModelSpec, plan: pl.Plan) -> str:
    """What stops a plan from holding the load: the global cap or the pools' caps."""
    if plan.total >= spec.scaling.max_replicas:
        return "maxReplicas"
    return "nodePools[*].maxReplicas"


def _feasible_level(
    spec: ScaledModelSpec, combos: tuple[pl.Combo, ...], loads: tuple[float, float, float],
    od_load: float, min_replicas: int,
) -> int:
    for level in range(3):
        if pl.solve(combos, _request(spec, loads[level], od_load, min_replicas)) is not None:
            return level
    return 3


def _explain(
    spec: ScaledModelSpec,
    planned: _Planned,
    final: Mapping[Key, int],
    load: float,
    st: dict[str, Any] | None = None,
) -> tuple[str, float, float | None, str, str]:
    """Message, predicted latency, runner-up cost and text, binding constraint.

    The binding constraint takes a few relaxed re-solves; with ``st`` it is
    reused while the target mix, rung and candidate set stay the same.
    """
    plan = planned.plan
    slo = spec.slo.latency
    lat = pl.predicted_latency_ms(plan, planned.combos, load, slo.percentile)
    if planned.searched:
        ru = planned.runner_up
    else:
        ru = pl.runner_up(planned.combos, planned.request, plan) if plan.total else None
    ru_text = pl.describe(ru) if ru is not None else ""
    ru_cost = ru.cost_per_hour if ru is not None else None
    binding = planned.binding
    if not binding:
        sig = f"{pl.describe(plan)}|{planned.level}|{len(planned.combos)}"
        cached = st.get("bc") if st is not None else None
        if isinstance(cached, list) and len(cached) == 2 and cached[0] == sig:
            binding = str(cached[1])
        else:
            binding = pl.binding_constraint(spec, planned.combos, planned.request, plan)
            if st is not None:
                st["bc"] = [sig, binding]
    lat_txt = "inf" if math.isinf(lat) else f"{lat:.1f}"
    msg = (
        f"{pl.describe(plan)} at ${plan.cost_per_hour:.2f}/h for {load:.0f} rps: predicted "
        f"p{slo.percentile:g} {lat_txt} ms vs {slo.target_ms:g} ms target; "
        f"binding: {binding}"
    )
    msg += f"; runner-up {ru_text} at ${ru_cost:.2f}/h" if ru is not None else "; no runner-up"
    if dict(final) != dict(plan.counts):
        msg += f"; this step: {_mix_text(final)}"
    return msg + ".", lat, ru_cost, ru_text, binding


def _mix_text(mix: Mapping[Key, int]) -> str:
    if not mix:
        return "0 replicas"
    return " + ".join(f"{n}x {v}@{p}" for (v, p), n in sorted(mix.items()) if n > 0)


def _cost(spec: ScaledModelSpec, mix: Mapping[Key, int]) -> float:
    total = 0.0
    for (_, p), n in mix.items():
        try:
            pool = spec.pool(p)
        except KeyError:
            continue
        total += pool.price_per_hour * max(pool.gpus_per_replica, 1) * n
    return total


def _placements(mix: Mapping[Key, int]) -> tuple[Placement, ...]:
    return tuple(Placement(v, p, n) for (v, p), n in sorted(mix.items()) if n > 0)


def horizon_seconds(
    spec: ScaledModelSpec,
    unavailable: frozenset[str] = frozenset(),
    pools_in_use: frozenset[str] = frozenset(),
) -> float:
    """How far ahead to forecast: the time new capacity takes to become Ready.

    Scale-up adds replicas to the pools of the current mix, so the horizon is
    their slowest ``startupSeconds`` plus one interval; with no mix yet (or
    only unknown pools), the slowest available pool's.
    """
    usable = [p for p in spec.node_pools if p.name not in unavailable]
    in_use = [p for p in usable if p.name in pools_in_use]
    starts = [p.startup_seconds for p in (in_use or usable)]
    return (max(starts) if starts else 0.0) + spec.scaling.interval_seconds


def plan_once(spec: ScaledModelSpec, rps: float) -> Decision:
    """Pure planning for a steady load of ``rps`` (no forecast, windows or state).

    Headroom applies; spot protection uses ``rps`` as the current load.
    """
    if spec.cascade is not None:
        return cascade_step.plan_once(spec, rps, min_replicas(spec, rps, None, 0.0))
    load = max(0.0, rps) * (1.0 + spec.scaling.headroom)
    combos = pl.candidates(spec)
    planned = _plan_ladder(
        spec, combos, (load, max(0.0, rps), max(0.0, rps)), max(0.0, rps), 0,
        min_replicas(spec, rps, None, 0.0),
    )
    mix = dict(planned.plan.counts)
    msg, lat, ru_cost, ru_text, binding = _explain(spec, planned, mix, load)
    reason = _outcome_reason(spec, planned) or "Planned"
    return Decision(
        placements=_placements(mix),
        reason=reason,
        message=msg,
        predicted_latency_ms=None if math.isinf(lat) else lat,
        cost_per_hour=planned.plan.cost_per_hour,
        slo_feasible=planned.feasible,
        binding_constraint=binding,
        runner_up=ru_text,
        runner_up_cost_per_hour=ru_cost,
        details={"load_rps": load, "level": planned.level, "ladder": LADDER_RUNGS[planned.level],
                 "accuracy": cc.served_accuracy(spec, mix)},
    )


def min_replicas(spec: ScaledModelSpec, rps: float, idle_since: float | None,
                 now: float) -> int:
    """Effective replica floor: ``minReplicas``, but 0 only through ``idleSeconds``.

    ``minReplicas: 0`` allows scale-to-zero only when ``idleSeconds`` > 0 and no
    request has arrived for that long; otherwise at least one replica stays.
    """
    sc = spec.scaling
    if sc.min_replicas > 0:
        return sc.min_replicas
    if (
        sc.idle_seconds > 0
        and rps <= 0
        and idle_since is not None
        and now - idle_since >= sc.idle_seconds
    ):
        return 0
    return 1


def _outcome_reason(spec: ScaledModelSpec, planned: _Planned) -> str | None:
    if planned.level > 0:
        return "Degraded"
    if not planned.feasible:
        return "Infeasible"
    if not planned.within_budget:
        return "OverBudget"
    return None


def decide(
    spec: ScaledModelSpec,
    obs: Observation,
    state: Mapping[str, Any] | None,
    now: float,
) -> Decision:
    """One autoscaling step (see the module docstring)."""
    st: dict[str, Any] = dict(state or {})
    st["v"] = STATE_VERSION
    sc = spec.scaling
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    ready_total = sum(p.ready for p in obs.current)
    desired_total = sum(p.desired for p in obs.current)
    rps = finite_or_none(obs.rps) if obs.error is None else None
    if rps is not None and rps < 0:
        rps = None

    if rps is None:
        return _unknown(spec, obs, st, cur, state is None)
    st["fail"] = 0

    # 2. Forecast.
    unavailable = frozenset(obs.unavailable_pools)
    fstate = fc.update(st.get("f"), rps, now)
    st["f"] = {k: round(v, 6) for k, v in fstate.items()}
    horizon = horizon_seconds(
        spec, unavailable, frozenset(p for _, p in from_state_mix(st.get("p")))
    )
    predicted = fc.forecast(fstate, horizon)

    # 3. Online correction from the observed percentile.
    corr = float(st.get("c", 1.0)) if isinstance(st.get("c", 1.0), (int, float)) else 1.0
    lat = finite_or_none(obs.latency_ms)
    target = spec.slo.latency.target_ms
    if lat is not None and desired_total > 0 and ready_total >= desired_total:
        if lat > target:
            corr = min(MAX_CORRECTION, corr * (1.0 + 0.5 * min(1.0, lat / target - 1.0)))
        elif lat < 0.8 * target:
            corr = max(1.0, corr * 0.98)
    st["c"] = round(corr, 4)

    # 3b. Per-(variant, pool) profile correction: observed latency of each
    # placement vs the uncorrected model at the load it received; bounded,
    # persisted in state ("cf"), applied to the profiles the planner sees.
    factors = update_factors(_factors(st.get("cf")), obs, _predictor(spec))
    if factors:
        st["cf"] = {k: round(v, 4) for k, v in factors.items()}
    else:
        st.pop("cf", None)
    spec = corrected_spec(spec, factors)

    # 3c. Bursts and cold starts (core/burst.py): volatility headroom, backlog
    # drain, panic.
    bst = burst.assess(spec, obs, rps, st, now, horizon,
                       _ready_capacity(spec, obs, unavailable))
    burst.store(st, bst)

    # 4. Load stabilisation.
    rec = max(predicted, rps, bst.panic_rps) * (1.0 + bst.headroom) * corr
    prev_l = st.get("L")
    load, window = stabilize_load(
        st.get("w"),
        float(prev_l) if isinstance(prev_l, (int, float)) else None,
        rec,
        now,
        sc.scale_up_stabilization_seconds,
        sc.scale_down_stabilization_seconds,
    )
    if bst.panic and isinstance(prev_l, (int, float)):
        load = max(load, float(prev_l))  # no scale-down while panicking
    st["w"] = [[t, round(v, 3)] for t, v in window]
    st["L"] = round(load, 3)

    # 5. Plan, with the degradation ladder when priority is cost.
    combos = pl.candidates(spec, unavailable)
    idle = st.get("idle")
    if rps > 0:
        idle = None
    elif not isinstance(idle, (int, float)):
        idle = now
    st["idle"] = idle
    min_eff = min_replicas(spec, rps, idle, now)
    scale = load / rec if rec > 0 else 1.0
    # The drain term comes after the windows: it leaves with the backlog.
    loads = (
        load + bst.drain_rps * corr,
        (max(predicted, rps, bst.panic_rps) * max(1.0, scale) + bst.drain_rps) * corr,
        (rps + bst.drain_rps) * corr,
    )
    # Spot protection holds the *current* load (replacing lost spot capacity takes
    # a startup anyway); a short window keeps the on-demand part from flapping.
    prev_od = st.get("Lo")
    od_load, od_window = stabilize_load(
        st.get("wo"),
        float(prev_od) if isinstance(prev_od, (int, float)) else None,
        rps * corr,
        now,
        sc.scale_up_stabilization_seconds,
        min(sc.scale_down_stabilization_seconds, OD_WINDOW_SECONDS),
    )
    st["wo"] = [[t, round(v, 3)] for t, v in od_window]
    st["Lo"] = round(od_load, 3)
    if min_eff == 0:
        # Idle for idleSeconds with minReplicas 0: scale to zero.
        loads = (0.0, 0.0, 0.0)
        od_load = 0.0
    if spec.cascade is not None:
        return cascade_step.step(spec, obs, st, loads[0], od_load, min_eff, rps * corr, {
            "rps": round(rps, 3), "forecast_rps": round(predicted, 3),
            "planning_load_rps": round(loads[0], 3), "correction": round(corr, 4)})
    level = int(st.get("lvl", 0)) if isinstance(st.get("lvl", 0), int) else 0
    if spec.slo.priority == "cost":
        feasible_level = _feasible_level(spec, combos, loads, od_load, min_eff)
        if feasible_level > level:
            level = feasible_level
            st["rec"] = None
        elif feasible_level < level:
            since = st.get("rec")
            if not isinstance(since, (int, float)):
                st["rec"] = now
            elif now - float(since) >= sc.recovery_seconds:
                level -= 1
                st["rec"] = now if feasible_level < level else None
        else:
            st["rec"] = None
    else:
        level = 0
        st["rec"] = None
    st["lvl"] = level
    planned = _plan_ladder(spec, combos, loads, od_load, level, min_eff)
    # 5b. A mix change must pay for itself (core/switching.py).
    sw = switching.gate(spec, combos, planned.request, planned.plan, cur,
                        respect_budget=planned.within_budget) if planned.feasible else None
    if sw is not None and sw.held:
        planned = replace(planned, plan=sw.plan, runner_up=None, searched=False)
    target_mix = dict(planned.plan.counts)
    st["p"] = as_state_mix(target_mix)

    # 6. Transition.
    tr = transition(target_mix, obs.current, sc)
    final = tr.desired
    msg, lat_pred, ru_cost, ru_text, binding = _explain(
        spec, planned, final, planned.request.load_rps, st
    )
    if sw is not None and sw.note:
        msg = msg[:-1] + f"; {sw.note}."
    reason = _outcome_reason(spec, planned)
    if reason is None:
        if tr.held_for_readiness:
            reason = "Transitioning"
        elif sum(final.values()) > sum(cur.values()):
            reason = "ScaledUp"
        elif sum(final.values()) < sum(cur.values()):
            reason = "ScaledDown"
        elif final != cur:
            reason = "Transitioning"
        else:
            reason = "Held"
    return Decision(
        placements=_placements(final),
        reason=reason,
        message=msg,
        predicted_latency_ms=None if math.isinf(lat_pred) else round(lat_pred, 3),
        cost_per_hour=_cost(spec, final),
        slo_feasible=planned.feasible,
        binding_constraint=binding,
        runner_up=ru_text,
        runner_up_cost_per_hour=ru_cost,
        state=st,
        details={
            "rps": round(rps, 3),
            "forecast_rps": round(predicted, 3),
            "planning_load_rps": round(planned.request.load_rps, 3),
            "correction": round(corr, 4),
            "burst": bst.details(),
            "switch": None if sw is None or not sw.switching_cost else {
                "held": sw.held, "cost": round(sw.switching_cost, 4),
                "savings": round(sw.savings, 4)},
            "level": level,
            "ladder": LADDER_RUNGS[level],
            "target": as_state_mix(target_mix),
            "step_limited": tr.step_limited,
            "accuracy": cc.served_accuracy(spec, target_mix),
        },
    )


def _ready_capacity(spec: ScaledModelSpec, obs: Observation, unavailable: frozenset[str]
                    ) -> float:
    """Capacity at the SLO of the Ready replicas, as the planner counts a mix."""
    caps = {c.key: c.capacity_rps for c in pl.candidates(spec, unavailable)}
    ready = [(caps.get(p.key, 0.0), p.ready) for p in obs.current if p.ready > 0]
    if not ready:
        return 0.0
    return sum(n for _, n in ready) * min(c for c, _ in ready)


def _factors(raw: Any) -> dict[str, float]:
    """Correction factors from state, ignoring anything malformed."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    }


def _predictor(
    spec: ScaledModelSpec,
) -> Callable[[str, str, float, int], tuple[float, float] | None]:
    """The uncorrected model's (percentile latency, utilisation) for a placement."""
    pct = spec.slo.latency.percentile

    def predict(variant: str, pool: str, rps: float, replicas: int) -> tuple[float, float] | None:
        try:
            prof = spec.variant(variant).profile_for(spec.pool(pool).accelerator)
        except KeyError:
            return None
        if prof is None or replicas <= 0:
            return None
        pt = predict_replica(prof, rps / replicas, pct)
        return pt.latency_ms, pt.utilisation

    return predict


def _unknown(
    spec: ScaledModelSpec,
    obs: Observation,
    st: dict[str, Any],
    cur: dict[Key, int],
    first: bool,
) -> Decision:
    sc = spec.scaling
    fails = int(st.get("fail", 0)) + 1 if isinstance(st.get("fail", 0), int) else 1
    # Stop counting at the threshold: nothing depends on the count beyond it, and a
    # count growing every step rewrote the status of every blind ScaledModel every
    # interval (2,000 models on source none or with Prometheus down: ~130 writes/s).
    fails = min(fails, max(1, sc.failure_threshold))
    st["fail"] = fails
    why = obs.error or "request rate unknown"
    prev = from_state_mix(st.get("p"))
    base = cur or prev
    combos = cc.candidates(spec, obs.unavailable_pools)
    usable = {(c.variant, c.pool) for c in combos}
    gone = {k: n for k, n in base.items() if k not in usable}
    if gone:
        # Holding is no option for replicas whose pool is unavailable or no longer in
        # the spec, or whose variant left the spec or fell below minAccuracy: replace
        # them (make-before-break happens downstream), or keep a replacement decided
        # at an earlier step.
        return _replace_unusable(spec, st, combos, base, prev, gone, why)
    if not base:
        # Nothing deployed and no plan yet: minReplicas on the cheapest combo.
        combos = pl.candidates(spec, obs.unavailable_pools)
        req = pl.Request(0.0, 0.0, max(1, sc.min_replicas), max(1, sc.max_replicas), None)
        plan = pl.solve(combos, req) or pl.Plan((), 0.0, math.inf, math.inf)
        mix = (dict(plan.counts) if spec.cascade is None
               else cc.initial_mix(spec, obs.unavailable_pools))
        cut: tuple[str, ...] = ()
        if fails >= sc.failure_threshold and sc.safe_plan:
            safe = admissible_safe_plan(spec, mix, obs.unavailable_pools)
            mix, cut = safe.mix, safe.notes
        st["p"] = as_state_mix(mix)
        return Decision(
            placements=_placements(mix),
            reason="InitialPlan" if first or not sc.safe_plan else "SafePlan",
            message=(
                f"Signals unknown ({why}); starting with {_mix_text(mix)} at "
                f"${_cost(spec, mix):.2f}/h, the cheapest combo at minReplicas."
                + _cut_text(cut)
            ),
            cost_per_hour=_cost(spec, mix),
            state=st,
            details={"failures": fails, **({"safePlanCut": list(cut)} if cut else {})},
        )
    cut = ()
    if fails >= sc.failure_threshold and sc.safe_plan:
        safe = admissible_safe_plan(spec, base, obs.unavailable_pools)
        mix, cut = safe.mix, safe.notes
        reason = "SafePlan"
        msg = (
            f"Signals unknown for {fails}+ consecutive steps ({why}); applying the safe plan "
            f"without scaling anything down: {_mix_text(mix)} at ${_cost(spec, mix):.2f}/h."
            + _cut_text(cut)
        )
    else:
        mix = dict(base)
        reason = "HeldUnknownSignals"
        msg = (
            f"Signals unknown ({why}); holding {_mix_text(mix)} at ${_cost(spec, mix):.2f}/h "
            f"(failure {fails} of {sc.failure_threshold})."
        )
    return Decision(
        placements=_placements(mix),
        reason=reason,
        message=msg,
        cost_per_hour=_cost(spec, mix),
        state=st,
        details={"failures": fails, **({"safePlanCut": list(cut)} if cut else {})},
    )


def _cut_text(cut: Sequence[str]) -> str:
    """The safe plan's entries the limits refused or cut, for the decision message."""
    return f" Safe plan limited: {'; '.join(cut)}." if cut else ""


def _replace_unusable(
    spec: ScaledModelSpec,
    st: dict[str, Any],
    combos: tuple[pl.Combo, ...],
    base: Mapping[Key, int],
    prev: Mapping[Key, int],
    gone: Mapping[Key, int],
    why: str,
) -> Decision:
    """Signals unknown and part of the held mix cannot run: move it, same replica count."""
    usable = {(c.variant, c.pool) for c in combos}
    if prev and all(k in usable for k in prev):
        mix = dict(prev)  # replaced at an earlier step; the old replicas are draining
    else:
        kept = {k: n for k, n in base.items() if k in usable}
        want = max(1, spec.scaling.min_replicas, sum(base.values()))
        want = min(want, max(1, spec.scaling.max_replicas))
        need = max(0, want - sum(kept.values()))
        mix = dict(kept)
        if need:
            req = pl.Request(0.0, 0.0, need, need, None)
            plan = pl.solve(combos, req, respect_budget=False) or pl.Plan((), 0.0, math.inf,
                                                                            math.inf)
            for k, n in plan.counts:
                mix[k] = mix.get(k, 0) + n
    st["p"] = as_state_mix(mix)
    lost = ", ".join(f"{v}@{p}" for (v, p) in sorted(gone))
    return Decision(
        placements=_placements(mix),
        reason="Replaced",
        message=(
            f"Signals unknown ({why}); {lost} can no longer run (pool unavailable or removed, "
            f"or variant not eligible): moving to {_mix_text(mix)} at "
            f"${_cost(spec, mix):.2f}/h."
        ),
        cost_per_hour=_cost(spec, mix),
        slo_feasible=bool(mix),
        state=st,
        details={"failures": int(st.get("fail", 0) or 0)},
    )


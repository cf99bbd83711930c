"""The autoscaling policy: one pure step, shared by the operator, ``plan`` and ``simulate``.

``decide(spec, obs, state, now) -> Decision`` is the whole policy: the operator
applies ``Decision.placements`` as they are (and removes every other Deployment
it owns), so every rule below runs identically in ``plan`` and ``simulate``.
In order:

0. **Inputs.** ``state`` is read through :func:`.state.decode` (versioned,
   validated; invalid fields are reset and ``Decision.state_reset`` says which,
   so the operator emits one ``AutoscalerStateReset`` event). Signals outside
   their physical range are unknown: ``rps`` not finite, negative or above
   :data:`.state.MAX_RPS`; latencies not finite, negative or above
   :data:`.state.MAX_LATENCY_MS`.
1. **Signals.** ``obs.rps`` unknown (None/NaN/Inf/out of range or ``obs.error``):
   hold the current desired replicas (never scale down) with reason
   ``HeldUnknownSignals``; after ``scaling.failureThreshold`` consecutive failures
   apply ``scaling.safePlan`` merged with the current replicas (per pair, the
   larger count: never below current) with reason ``SafePlan``. With nothing
   deployed and no previous plan, the initial plan is ``max(1, minReplicas)``
   replicas of the cheapest combo (reason ``InitialPlan``). Replicas that cannot be
   held (their pool is unavailable or left the spec, their variant left the spec
   or is below ``minAccuracy``) move to the cheapest usable combos, same total
   (reason ``Replaced``).
1b. **Interruption notice.** A pool in ``obs.noticed_pools`` (the cloud reclaims
   its spot capacity soon) is planned as if unavailable: no new replica goes
   there and its replicas' replacement is ordered elsewhere at once, while they
   keep serving (counted as Ready capacity) until the replacement is Ready or
   they are gone (make-before-break, rule 6). The message names the pool and
   what announced it.
2. **Forecast** (:mod:`.forecast`) over the time new capacity needs to become
   Ready: the slowest ``startupSeconds`` among the pools of the current mix (or
   of all available pools before there is one) plus one interval; at most the
   current rate plus how far it rose over the last horizon (the rise goes on for
   one more horizon, no further), and at most at the pace it kept over the last
   half horizon (a ramp that stopped is not extrapolated at its old pace). A rate
   beyond ``1 + maxHeadroom`` times the highest one that lasted half a horizon
   within the scale-down window (:func:`.burst.persisted_level`) is not folded in
   until it lasts itself, and a level held that long is taken as the forecast's
   level at once; a cluster of bursts swinging by more than that factor is no
   level until it has held for the whole horizon (:func:`.burst.held_levels`).
3. **Online correction** (:mod:`.correction`, the only one): per (variant,
   pool), the service-time factor at which the performance model reproduces the
   observed latency percentile at the load that placement received (or the whole
   model's, when the signals have no per-placement latency) moves a bounded
   factor that scales that profile, so the planner adds the capacity the model
   did not predict and gives back what it over-predicted. Nothing is learnt while
   requests queue beyond the SLO (a backlog draining is not slow replicas), nor
   from a percentile above the SLO target (its window still holds a backlog
   drained since), nor from a placement that has not served for the whole signals' window
   (:func:`.correction.settle`: its rate is counted over all of it).
   Persisted in the state; ``simulate`` runs it from the simulator's
   per-placement signals exactly as the operator does.
4. **Load stabilisation** (:func:`.stabilize.stabilize_load`): the planning load is
   the larger of the observed demand (the median rate of the last horizon) x (1 +
   headroom) through HPA-like windows, and the look-ahead (the larger of
   max(forecast without its noise allowance, lasting rate) x (1 + headroom) and the
   forecast with it: the two margins are not stacked) through the same windows but
   held for at most the horizon it was about (and while an overload lasts). With a
   backlog the planning load is at least ``lasting x (1 + headroom) + drain``
   (:mod:`.burst`); the drain is not added on top of the look-ahead's margin, which
   drains it too, nor planned for what the Ready and starting replicas drain before
   capacity ordered now is Ready (:func:`.burst.backlog_left`). The observed
   demand's median counts a burst cluster only as far as it lasted.
   The lasting rate (:func:`.burst.lasting_rate`) is the current rate as far as
   it has persisted for half the startup horizon (held at that level, or rising
   towards it, for ``H / 2``) or the forecast follows it: capacity ordered for a
   shorter burst is Ready after it is over.
5. **Planner** (:mod:`.planner`) with spot protection at the current load.
   When SLO and budget cannot both hold: ``priority: latency`` keeps the SLO and
   exceeds ``maxCostPerHour`` (reason ``OverBudget``); ``priority: cost`` walks the
   **degradation ladder** within budget, one rung per step down as needed:
   1 = drop the headroom, 2 = plan for the current load (no forecast), 3 = best
   effort: the most load the budget can hold with the fastest variants per
   dollar above the accuracy floor (reason ``Degraded``; ``OverBudget`` when even
   ``minReplicas`` cost more than the budget). It climbs back one rung
   only after the rung above has been feasible for ``recoverySeconds``
   continuously. With no plan meeting the SLO at all (pool limits): best effort,
   reason ``Infeasible``; with no usable combo at all, what runs is held.
6. **Transition** (:func:`.stabilize.transition`, the only one): step limits and
   make-before-break, on every path: a Ready replica the target drops stays
   until the target's replicas are Ready. Placements whose variant or pool left
   the spec are only ever held as they run, never grown.

Reasons: ``InitialPlan``, ``ScaledUp``, ``ScaledDown``, ``Held``, ``Transitioning``,
``HeldUnknownSignals``, ``Replaced``, ``SafePlan``, ``Degraded``, ``OverBudget``, ``Infeasible``.

State: :class:`.state.AutoscalerState` (its JSON layout is documented in
:mod:`.state`); ``Decision.state`` is its JSON encoding, ``Decision.target``
the mix being moved to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tritonscale.core import burst, cascade_step, correction, switching
from tritonscale.core import cascade as cc
from tritonscale.core import forecast as fc
from tritonscale.core import planner as pl
from tritonscale.core.correction import corrected_spec, scaled_profile
from tritonscale.core.perf import predict_replica
from tritonscale.core.pricing import mix_cost_per_hour
from tritonscale.core.safeplan import admissible_safe_plan
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.stabilize import (
    as_state_mix,
    from_state_mix,
    movement_reason,
    pool_limits,
    stabilize_load,
    transition,
)
from tritonscale.core.state import (
    MAX_LATENCY_MS,
    MAX_RPS,
    AutoscalerState,
    decode,
    encode,
)
from tritonscale.core.types import Decision, Observation, Placement, finite_or_none

Key = tuple[str, str]
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
    return _Planned(best, combos, req, best.supported_rps >= loads[2], _in_budget(spec, best), 3,
                    "maxCostPerHour")


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
    load: float,
    binding: str,
) -> tuple[str, float, float | None, str]:
    """Message (without its final period), predicted latency, runner-up cost and text."""
    plan = planned.plan
    slo = spec.slo.latency
    lat = pl.predicted_latency_ms(plan, planned.combos, load, slo.percentile)
    if planned.searched:
        ru = planned.runner_up
    else:
        ru = pl.runner_up(planned.combos, planned.request, plan) if plan.total else None
    ru_text = pl.describe(ru) if ru is not None else ""
    ru_cost = ru.cost_per_hour if ru is not None else None
    lat_txt = "inf" if math.isinf(lat) else f"{lat:.1f}"
    msg = (
        f"{pl.describe(plan)} at ${plan.cost_per_hour:.2f}/h for {load:.0f} rps: predicted "
        f"p{slo.percentile:g} {lat_txt} ms vs {slo.target_ms:g} ms target; "
        f"binding: {binding}"
    )
    msg += f"; runner-up {ru_text} at ${ru_cost:.2f}/h" if ru is not None else "; no runner-up"
    return msg, lat, ru_cost, ru_text


def _mix_text(mix: Mapping[Key, int]) -> str:
    if not mix:
        return "0 replicas"
    return " + ".join(f"{n}x {v}@{p}" for (v, p), n in sorted(mix.items()) if n > 0)


def _cost(spec: ScaledModelSpec, mix: Mapping[Key, int]) -> float:
    return mix_cost_per_hour(spec, mix)


def _bounded(mix: Mapping[Key, int], limit: int) -> dict[Key, int]:
    """``mix`` cut to at most ``limit`` replicas (what is kept in state: a held mix
    may exceed a lowered ``maxReplicas``, a stored target may not)."""
    out: dict[Key, int] = {}
    left = max(1, limit)
    for k, n in sorted(mix.items()):
        take = min(n, left)
        if take > 0:
            out[k] = take
            left -= take
    return out


def _ready_capacity(spec: ScaledModelSpec, obs: Observation, unavailable: frozenset[str]
                    ) -> float:
    """Capacity at the SLO of the Ready replicas, as the planner counts a mix."""
    if spec.cascade is not None:
        return cc.ready_capacity(spec, {p.key: p.ready for p in obs.current if p.ready > 0},
                                 unavailable)
    caps = {c.key: c.capacity_rps for c in pl.candidates(spec, unavailable)}
    ready = [(caps.get(p.key, 0.0), p.ready) for p in obs.current if p.ready > 0]
    if not ready:
        return 0.0
    return sum(n for _, n in ready) * min(c for c, _ in ready)


def _booting(spec: ScaledModelSpec, obs: Observation, unavailable: frozenset[str],
             ready_cap: float) -> tuple[float, float]:
    """Capacity of the replicas still starting (what the desired replicas will hold
    beyond the Ready ones, as the planner counts a mix) and the longest they can
    still take to be Ready: their pools' ``startupSeconds`` less one interval
    (they were ordered at an earlier step). (0, 0) for a cascade."""
    if spec.cascade is not None:
        return 0.0, 0.0
    caps = {c.key: c.capacity_rps for c in pl.candidates(spec, unavailable)}
    want = [(caps.get(p.key, 0.0), p.desired) for p in obs.current if p.desired > 0]
    starting = [p.pool for p in obs.current if p.desired > p.ready]
    if not want or not starting:
        return 0.0, 0.0
    total = sum(n for _, n in want) * min(c for c, _ in want)
    startup = max((p.startup_seconds for p in spec.node_pools if p.name in starting),
                  default=0.0)
    return max(0.0, total - ready_cap), max(0.0, startup - spec.scaling.interval_seconds)


def _keep_current(target: Mapping[Key, int], cur: Mapping[Key, int], limit: int
                  ) -> dict[Key, int]:
    """``target`` with every currently desired replica kept, within ``limit`` in total."""
    out = dict(target)
    room = max(0, limit - sum(out.values()))
    for k, n in sorted(cur.items()):
        extra = min(max(0, n - out.get(k, 0)), room)
        if extra:
            out[k] = out.get(k, 0) + extra
            room -= extra
    return out


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
    binding = planned.binding or pl.binding_constraint(
        spec, planned.combos, planned.request, planned.plan
    )
    msg, lat, ru_cost, ru_text = _explain(spec, planned, load, binding)
    msg += "."
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
        # Best effort within budget; OverBudget when even minReplicas exceed it.
        return "Degraded" if planned.within_budget else "OverBudget"
    if not planned.feasible:
        return "Infeasible"
    if not planned.within_budget:
        return "OverBudget"
    return None


def _signal(x: float | None, hi: float) -> float | None:
    """A signal within its physical range, else unknown (``None``)."""
    f = finite_or_none(x)
    return f if f is not None and 0.0 <= f <= hi else None


def _sanitized(obs: Observation) -> tuple[Observation, float | None, str | None]:
    """The observation with out-of-range signals made unknown; (obs, rps, why unknown)."""
    lat = _signal(obs.latency_ms, MAX_LATENCY_MS)
    per_rps = {k: v for k, v in obs.per_placement_rps.items()
               if _signal(v, MAX_RPS) is not None}
    per_lat = {k: v for k, v in obs.per_placement_latency_ms.items()
               if _signal(v, MAX_LATENCY_MS) is not None}
    current = tuple(
        p if p.desired >= 0 and p.ready >= 0 else replace(p, desired=max(0, p.desired),
                                                          ready=max(0, p.ready))
        for p in obs.current
    )
    clean = replace(obs, latency_ms=lat, per_placement_rps=per_rps,
                    per_placement_latency_ms=per_lat, current=current)
    if obs.error is not None:
        return clean, None, obs.error
    rps = _signal(obs.rps, MAX_RPS)
    why = None
    if rps is None:
        raw = finite_or_none(obs.rps)
        why = (
            "request rate unknown" if raw is None
            else f"request rate {raw:.4g} rps outside [0, {MAX_RPS:g}]"
        )
    return clean, rps, why


def decide(
    spec: ScaledModelSpec,
    obs: Observation,
    state: AutoscalerState | Mapping[str, Any] | None,
    now: float,
) -> Decision:
    """One autoscaling step (see the module docstring).

    ``state`` is the previous ``Decision.state`` (the JSON persisted in status,
    any version, untrusted) or an :class:`AutoscalerState`; ``None`` on the
    first step. Never raises on bad state or signals: an invalid state is
    reset (``Decision.state_reset`` says what), out-of-range signals are unknown.
    """
    problems: tuple[str, ...] = ()
    if isinstance(state, AutoscalerState):
        prev = state
    else:
        decoded = decode(state, now=now, max_replicas=spec.scaling.max_replicas)
        prev, problems = decoded.state, decoded.problems
    obs, rps, why = _sanitized(obs)
    if rps is None:
        step = _unknown(spec, obs, prev, state is None, why or "request rate unknown")
    else:
        if prev.failures > 0 and prev.load is not None:
            # Signals are back after an outage: the load held while blind counts as
            # recommended now, so the scale-down window restarts here. The window
            # kept running while blind (a blind step leaves the state unchanged), and
            # the first readings after an outage under-read (a restarted Prometheus's
            # rate() is short of samples): they must not scale the fleet down at once.
            prev = replace(prev, load_window=(*prev.load_window, (now, prev.load)))
        step = _known(spec, obs, prev, rps, now)
    return _finish(spec, obs, step, "; ".join(problems))


@dataclass(frozen=True)
class _Step:
    """What a path of :func:`decide` chose before the transition."""

    target: dict[Key, int]
    state: AutoscalerState
    reason: str | None  # None: derive from the transition (ScaledUp, Held, ...)
    message: str
    details: dict[str, Any]
    cost_per_hour: float | None = None  # of the target, when the path priced it
    predicted_latency_ms: float | None = None
    slo_feasible: bool = True
    binding: str = ""
    runner_up: str = ""
    runner_up_cost: float | None = None
    explain: Callable[[Mapping[Key, int]], str] | None = None


def _finish(spec: ScaledModelSpec, obs: Observation, step: _Step, reset: str) -> Decision:
    """The one transition (step limits, make-before-break) from the target to this step."""
    sc = spec.scaling
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    tr = transition(step.target, obs.current, sc, pool_limits(spec), sc.max_replicas)
    known_v = {v.name for v in spec.variants}
    known_p = {p.name for p in spec.node_pools}
    final: dict[Key, int] = {}
    for k, n in tr.desired.items():
        if k[0] not in known_v or k[1] not in known_p:
            # Left the spec: only ever held (as it runs) until its replacement is Ready.
            n = min(n, cur.get(k, 0))
        if n > 0:
            final[k] = n
    reason = step.reason
    if reason is None:
        reason = movement_reason(tr.held_for_readiness, final, cur)
    message = step.explain(final) if step.explain is not None else step.message
    details = dict(step.details)
    notice = _notice_text(obs, cur, final)
    if notice:
        message = f"{message} {notice}"
        details["interruption"] = {p: str(w) for p, w in sorted(obs.noticed_pools.items())}
    details["target"] = as_state_mix(step.target)
    details["step_limited"] = tr.step_limited
    return Decision(
        placements=_placements(final),
        reason=reason,
        message=message,
        predicted_latency_ms=step.predicted_latency_ms,
        cost_per_hour=_cost(spec, final),
        slo_feasible=step.slo_feasible,
        binding_constraint=step.binding,
        runner_up=step.runner_up,
        runner_up_cost_per_hour=step.runner_up_cost,
        state=encode(step.state),
        details=details,
        target=_placements(step.target),
        state_reset=reset,
    )


def _notice_text(obs: Observation, cur: Mapping[Key, int], final: Mapping[Key, int]) -> str:
    """Rule 1b for the decision message: each noticed pool that hosts replicas, what
    announced it, and what this step keeps of them."""
    parts = []
    for pool, why in sorted(obs.noticed_pools.items()):
        had = sum(n for (_, p), n in cur.items() if p == pool)
        if had <= 0:
            continue
        kept = sum(n for (_, p), n in final.items() if p == pool)
        parts.append(
            f"Pool {pool} is under interruption notice ({why}): its {had} replica(s) "
            + (f"serve until their replacement is Ready ({kept} kept this step)."
               if kept else "are released (their replacement is Ready, or they were not).")
        )
    return " ".join(parts)


def _known(
    spec: ScaledModelSpec, obs: Observation, prev: AutoscalerState, rps: float, now: float
) -> _Step:
    sc = spec.scaling
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}

    # 2. Forecast.
    # 1b. A pool under an interruption notice gets nothing new (planned as if
    # unavailable); its Ready replicas still serve (``down`` sizes what is Ready).
    down = frozenset(obs.unavailable_pools)
    unavailable = down | frozenset(obs.noticed_pools)
    horizon = horizon_seconds(spec, unavailable, frozenset(p for _, p in prev.target))
    # A rate beyond (1 + maxHeadroom) x the highest one that lasted (for half a
    # startup) within the scale-down window is a burst to the forecaster until it
    # lasts: the lasting rate refuses to plan for it, so must the look-ahead. A level
    # held for that long is the forecast's level at once (no trend from it).
    # A cluster of bursts is no level until it has held for H (burst.held_levels).
    seen = [*prev.burst_history, (now, rps)]
    bf = 1.0 + sc.max_headroom
    window_d = sc.scale_down_stabilization_seconds
    persisted = burst.persisted_level(seen, now, horizon, window_d, bf)
    fstate = fc.update(prev.forecast, rps, now, persisted=persisted, burst_factor=bf,
                       held=burst.persisted_level(seen, now, horizon, 0.0, bf, window_d))
    # The smoothed look-ahead (no floor at the last observation: one spike moves it
    # by a bounded amount); below, its trend is capped at how far the rate rose.
    look_ahead = fc.forecast(fstate, horizon, floor=False)

    # 3. The online correction (core/correction.py): per (variant, pool) factors,
    # bounded, persisted, applied to the profiles the planner sees; not learnt
    # while a backlog drains, nor from a placement that has not served for the
    # whole signals' window.
    ready_since, settled = correction.settle(prev.ready_since, obs.current, now)
    factors = {k: round(v, 4) for k, v in correction.update(
        prev.correction, obs, _predictor(spec), spec.slo.latency.target_ms,
        settled=settled).items()}
    spec_c = corrected_spec(spec, factors)

    # 3c. Bursts and cold starts (core/burst.py): volatility headroom, backlog
    # drain, panic.
    bst_st: dict[str, Any] = {"vh": [list(x) for x in prev.burst_history],
                              "pz": prev.panic_until}
    ready_cap = _ready_capacity(spec, obs, down)
    booting_rps, booting_in = _booting(spec, obs, down, ready_cap)
    bst = burst.assess(spec, obs, rps, bst_st, now, horizon, ready_cap, look_ahead,
                       booting_rps, booting_in)
    burst.store(bst_st, bst)
    # The forecast's extrapolated trend goes at most as far ahead as the rate rose
    # over the last horizon: after a ramp, Holt's level catches up with a step that
    # is already over and its trend kept the look-ahead far above a flat rate for
    # minutes (a ramp 3.5k -> 8.6k rps forecast 15k for three minutes of 8k).
    # (The forecast's own noise allowance, z x deviation, stays.)
    # ... and at the pace it kept over the last half horizon (burst.PERSISTENCE x H):
    # a ramp that slowed down or stopped is extrapolated at its pace now, not at the
    # pace of the whole horizon (Holt's trend, smoothed, kept the look-ahead 3k rps
    # above a rate flat at 8.7k for two minutes after the ramp).
    tau = burst.PERSISTENCE * horizon
    rise = burst.recent_rise(bst.history, now, horizon)
    if tau > 0:
        rise = min(rise, burst.recent_rise(bst.history, now, tau) * horizon / tau)
    noise = fc.DEFAULT.z * float(fstate.get("s", 0.0))  # the forecast's noise allowance
    ahead = min(look_ahead, rps + rise + noise)
    # The current rate counts only as far as it lasts (core/burst.py, lasting_rate):
    # capacity ordered for a burst shorter than the startup is Ready after it.
    predicted = max(ahead, bst.lasting_rps)

    # 4. Load stabilisation: the larger of three parts.
    # - The observed demand, the median rate of the last horizon x (1 + headroom),
    #   through the HPA-like windows (held for the scale-down window). A rate that
    #   lasts less than half a startup does not move it: capacity ordered for it
    #   arrives after it is gone, and a 10-s burst at 12x held the whole fleet at
    #   maxReplicas for the 5-minute window.
    # - The look-ahead, max(forecast, lasting rate) with its margin, held for the
    #   horizon it was about (min(scale-down window, H)) and while an overload
    #   lasts: then it has come true (and shows in the observed part) or not (and
    #   holds nothing). Held for the whole scale-down window, a ramp's extrapolated
    #   trend kept a 54-replica fleet for minutes; not held at all, the plan
    #   followed every step's rate (a replica started and cancelled every 15 s).
    hr = 1.0 + bst.headroom
    recent = sorted(v for t, v in bst.history if t >= now - horizon) or [rps]
    median = recent[(len(recent) - 1) // 2]
    if persisted is not None and median > bf * persisted:
        # A cluster of bursts spanning half the horizon is its median, not a level
        # (burst.held_levels): held for the scale-down window, it kept capacity
        # ordered for it (Ready after the cluster) for five minutes.
        median = persisted
    # The look-ahead's two margins are not stacked: the headroom (x (1 + headroom))
    # and the forecast's noise allowance (+ z x deviation) each allow for the same
    # thing, the load beyond what is expected over the horizon, so the plan takes
    # the larger of the two. Their product, (trend + noise) x (1 + headroom), paid
    # for both on the bundled fleet ($6.83/h against $6.72/h, the same minutes) and
    # at light scale ($0.46 against $0.44/h).
    expected = max(0.0, ahead - noise)
    rec = max(max(expected, bst.lasting_rps, bst.panic_rps) * hr, expected + noise)
    load_obs, window = stabilize_load(
        prev.load_window, prev.load, median * hr, now,
        sc.scale_up_stabilization_seconds, sc.scale_down_stabilization_seconds,
    )
    load_fc, fwindow = stabilize_load(
        prev.forecast_window, prev.forecast_load, rec, now,
        sc.scale_up_stabilization_seconds, min(sc.scale_down_stabilization_seconds, horizon),
    )
    # Requests queue beyond the SLO, or latency is over target, at this step.
    lat_now = obs.latency_ms
    pressing = bst.backlog > 0 or (lat_now is not None
                                   and lat_now > spec.slo.latency.target_ms)
    if bst.panic and prev.load is not None:
        load_obs = max(load_obs, prev.load)  # no scale-down while panicking
    if pressing and prev.forecast_load is not None:
        # The look-ahead is held while the overload lasts, not for the panic's tail:
        # once the backlog is gone a burst's rate no longer needs capacity.
        load_fc = max(load_fc, prev.forecast_load)
    load = max(load_obs, load_fc)

    # 5. Plan, with the degradation ladder when priority is cost.
    combos = pl.candidates(spec_c, unavailable)
    idle = None if rps > 0 else (prev.idle_since if prev.idle_since is not None else now)
    min_eff = min_replicas(spec, rps, idle, now)
    scale = load / rec if rec > 0 else 1.0
    # The drain term comes after the windows: it leaves with the backlog. It drains
    # with the capacity planned above the *lasting* rate (x headroom): the
    # look-ahead's margin above it is spare capacity until the forecast's rise comes,
    # so the plan holds the larger of the two, not their sum. Summed, a fleet
    # planned for a ramp's extrapolated rise AND the drain at once: on the bundled
    # trace at x1500 (3.5k -> 8.7k rps, a 69k-request backlog) look-ahead 12.3k +
    # drain 4.5k rps, above what the L4 pools hold (15.8k): 50 mixed T4/L4
    # replicas ($22/h) for four minutes (34, $13.8/h, planned this way).
    loads = (
        max(load, bst.lasting_rps * hr + bst.drain_rps),
        max(max(predicted, bst.panic_rps) * max(1.0, scale),
            bst.lasting_rps + bst.drain_rps),
        bst.lasting_rps + bst.drain_rps,
    )
    # Spot protection holds the *current* load (replacing lost spot capacity takes
    # a startup anyway); a short window keeps the on-demand part from flapping.
    od_load, od_window = stabilize_load(
        prev.od_window, prev.od_load, rps, now,
        sc.scale_up_stabilization_seconds,
        min(sc.scale_down_stabilization_seconds, OD_WINDOW_SECONDS),
    )
    od_kept = od_load
    if min_eff == 0:
        # Idle for idleSeconds with minReplicas 0: scale to zero.
        loads = (0.0, 0.0, 0.0)
        od_load = 0.0
    base = replace(
        prev,
        forecast={k: round(v, 6) for k, v in fstate.items()},
        load_window=tuple((t, round(v, 3)) for t, v in window),
        load=round(load_obs, 3),
        forecast_window=tuple((t, round(v, 3)) for t, v in fwindow),
        forecast_load=round(load_fc, 3),
        od_window=tuple((t, round(v, 3)) for t, v in od_window),
        od_load=round(od_kept, 3),
        correction=factors,
        ready_since=ready_since,
        failures=0,
        idle_since=idle,
        burst_history=tuple((float(t), float(v)) for t, v in bst_st.get("vh") or ()),
        panic_until=(float(bst_st["pz"]) if isinstance(bst_st.get("pz"), (int, float))
                     else None),
    )
    if spec.cascade is not None:
        away = replace(obs, unavailable_pools=unavailable)
        return _cascade(spec, away, base, loads[0], od_load, min_eff, rps, now, {
            "rps": round(rps, 3), "forecast_rps": round(predicted, 3),
            "planning_load_rps": round(loads[0], 3), "correction": dict(sorted(factors.items()))})
    level = prev.level
    since = prev.recovering_since
    if spec_c.slo.priority == "cost":
        feasible_level = _feasible_level(spec_c, combos, loads, od_load, min_eff)
        if feasible_level > level:
            level = feasible_level
            since = None
        elif feasible_level < level:
            if since is None:
                since = now
            elif now - since >= sc.recovery_seconds:
                level -= 1
                since = now if feasible_level < level else None
        else:
            since = None
    else:
        level = 0
        since = None
    planned = _plan_ladder(spec_c, combos, loads, od_load, level, min_eff)
    # 5b. A mix change must pay for itself (core/switching.py).
    sw = switching.gate(spec_c, combos, planned.request, planned.plan, cur,
                        respect_budget=planned.within_budget) if planned.feasible else None
    if sw is not None and sw.held:
        planned = replace(planned, plan=sw.plan, runner_up=None, searched=False)
    target_mix = dict(planned.plan.counts)
    if pressing and target_mix:
        # No scale-down while overloaded: that includes replicas still starting. A
        # mix change during a backlog cancelled capacity in flight and restarted it
        # a step later when the plan flipped back (the backlog lasted minutes more).
        usable = {(c.variant, c.pool) for c in combos}
        target_mix = _keep_current(target_mix, {k: n for k, n in cur.items() if k in usable},
                                   sc.max_replicas)
    held = False
    if not target_mix and cur and min_eff > 0:
        # Nothing feasible at all (no usable combo): hold what runs, never tear it down.
        target_mix = dict(cur)
        held = True
    sig = f"{pl.describe(planned.plan)}|{planned.level}|{len(planned.combos)}"
    binding = planned.binding
    cached = prev.binding
    if not binding:
        if cached is not None and cached[0] == sig:
            binding = cached[1]
        else:
            binding = pl.binding_constraint(spec_c, planned.combos, planned.request,
                                            planned.plan)
            cached = (sig, binding)
    new_state = replace(
        base,
        level=level,
        recovering_since=since,
        target=_bounded(target_mix, sc.max_replicas),
        binding=cached,
    )
    msg, lat_pred, ru_cost, ru_text = _explain(spec_c, planned, planned.request.load_rps,
                                               binding)
    reason = "Infeasible" if held else _outcome_reason(spec_c, planned)

    if sw is not None and sw.note:
        msg += f"; {sw.note}"

    def explain(final: Mapping[Key, int]) -> str:
        if held:
            return msg + f"; nothing feasible: holding what runs, {_mix_text(final)}."
        if dict(final) != dict(planned.plan.counts):
            return msg + f"; this step: {_mix_text(final)}."
        return msg + "."

    return _Step(
        target=target_mix,
        state=new_state,
        reason=reason,
        message=msg,
        explain=explain,
        predicted_latency_ms=None if math.isinf(lat_pred) else round(lat_pred, 3),
        slo_feasible=planned.feasible,
        binding=binding,
        runner_up=ru_text,
        runner_up_cost=ru_cost,
        details={
            "rps": round(rps, 3),
            "forecast_rps": round(predicted, 3),
            "planning_load_rps": round(planned.request.load_rps, 3),
            "correction": dict(sorted(factors.items())),
            "burst": bst.details(),
            "switch": None if sw is None or not sw.switching_cost else {
                "held": sw.held, "cost": round(sw.switching_cost, 4),
                "savings": round(sw.savings, 4)},
            "level": level,
            "ladder": LADDER_RUNGS[level],
            "accuracy": cc.served_accuracy(spec, target_mix),
        },
    )


def _cascade(
    spec: ScaledModelSpec, obs: Observation, base: AutoscalerState, load: float,
    od_load: float, min_eff: int, rps: float, now: float, details: Mapping[str, Any],
) -> _Step:
    """A cascade's plan (:mod:`.cascade_step`); the transition is :func:`_finish`'s."""
    st: dict[str, Any] = {"esc": base.escalation_scale, "thr": base.threshold,
                          "acc": base.accuracy_served}
    d = cascade_step.step(spec, obs, st, load, od_load, min_eff, rps, details, now)
    target = from_state_mix(st.get("p"))
    thr = st.get("thr")
    esc = st.get("esc", 1.0)
    acc = st.get("acc")
    return _Step(
        target=target,
        state=replace(base, target=target,
                      threshold=float(thr) if isinstance(thr, (int, float)) else None,
                      escalation_scale=float(esc) if isinstance(esc, (int, float)) else 1.0,
                      accuracy_served=(float(acc[0]), float(acc[1]), float(acc[2]))
                      if isinstance(acc, list) and len(acc) == 3 else None),
        reason=d.reason,
        message=d.message,
        predicted_latency_ms=d.predicted_latency_ms,
        slo_feasible=d.slo_feasible,
        binding=d.binding_constraint,
        runner_up=d.runner_up,
        runner_up_cost=d.runner_up_cost_per_hour,
        details={k: v for k, v in d.details.items() if k not in ("target", "step_limited")},
    )


def _predictor(spec: ScaledModelSpec) -> correction.Predictor:
    """The model's (percentile latency, utilisation) for a placement whose profile is
    scaled by ``factor`` (1 = the uncorrected profile)."""
    pct = spec.slo.latency.percentile

    def predict(variant: str, pool: str, rps: float, replicas: int, factor: float
                ) -> tuple[float, float] | None:
        try:
            prof = spec.variant(variant).profile_for(spec.pool(pool).accelerator)
        except KeyError:
            return None
        if prof is None or replicas <= 0:
            return None
        pt = predict_replica(scaled_profile(prof, factor), rps / replicas, pct)
        return pt.latency_ms, pt.utilisation

    return predict


def _unknown(
    spec: ScaledModelSpec,
    obs: Observation,
    prev: AutoscalerState,
    first: bool,
    why: str,
) -> _Step:
    sc = spec.scaling
    # Stop counting at the threshold: nothing depends on the count beyond it, and a
    # count growing every step rewrote the status of every blind ScaledModel every
    # interval (2,000 models on source none or with Prometheus down: ~130 writes/s).
    fails = min(prev.failures + 1, max(1, sc.failure_threshold))
    details: dict[str, Any] = {"failures": fails}
    cur = {p.key: p.desired for p in obs.current if p.desired > 0}
    base = cur or dict(prev.target)
    away = frozenset(obs.unavailable_pools) | frozenset(obs.noticed_pools)
    combos = cc.candidates(spec, away)
    usable = {(c.variant, c.pool) for c in combos}
    gone = {k: n for k, n in base.items() if k not in usable}
    if gone:
        # Holding is no option for replicas whose pool is unavailable or no longer in
        # the spec, or whose variant left the spec or fell below minAccuracy: replace
        # them (the transition keeps them until the replacement is Ready), or keep a
        # replacement decided at an earlier step.
        mix = _replacement(spec, combos, base, prev.target)
        lost = ", ".join(f"{v}@{p}" for (v, p) in sorted(gone))
        return _Step(
            target=mix,
            state=replace(prev, failures=fails, target=_bounded(mix, sc.max_replicas)),
            reason="Replaced",
            message=(
                f"Signals unknown ({why}); {lost} can no longer run (pool unavailable, "
                f"under interruption notice or removed, or variant not eligible): moving "
                f"to {_mix_text(mix)} at ${_cost(spec, mix):.2f}/h."
            ),
            slo_feasible=bool(mix),
            details=details,
        )
    if not base:
        # Nothing deployed and no plan yet: minReplicas on the cheapest combo.
        req = pl.Request(0.0, 0.0, max(1, sc.min_replicas), max(1, sc.max_replicas),
                         spec.slo.max_cost_per_hour)
        first_combos = pl.candidates(spec, away)
        plan = pl.solve(first_combos, req)
        over = plan is None and spec.cascade is None
        if plan is None:
            plan = pl.solve(first_combos, req, respect_budget=False) or pl.Plan(
                (), 0.0, math.inf, math.inf)
        mix = (dict(plan.counts) if spec.cascade is None
               else cc.initial_mix(spec, away))
        cut: tuple[str, ...] = ()
        if fails >= sc.failure_threshold and sc.safe_plan:
            safe = admissible_safe_plan(spec, mix, away)
            mix, cut = safe.mix, safe.notes
        if cut:
            details["safePlanCut"] = list(cut)
        return _Step(
            target=mix,
            state=replace(prev, failures=fails, target=_bounded(mix, sc.max_replicas)),
            reason=("OverBudget" if over and (first or not sc.safe_plan)
                    else "InitialPlan" if first or not sc.safe_plan else "SafePlan"),
            message=(
                f"Signals unknown ({why}); starting with {_mix_text(mix)} at "
                f"${_cost(spec, mix):.2f}/h, the cheapest combo at minReplicas"
                + (" (above maxCostPerHour: nothing smaller fits)." if over else ".")
                + _cut_text(cut)
            ),
            details=details,
        )
    if fails >= sc.failure_threshold and sc.safe_plan:
        safe = admissible_safe_plan(spec, base, away)
        mix, cut = safe.mix, safe.notes
        if cut:
            details["safePlanCut"] = list(cut)
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
    return _Step(
        target=mix,
        state=replace(prev, failures=fails,
                      target=_bounded(mix, sc.max_replicas) if mix else prev.target),
        reason=reason,
        message=msg,
        details=details,
    )


def _cut_text(cut: Sequence[str]) -> str:
    """The safe plan's entries the limits refused or cut, for the decision message."""
    return f" Safe plan limited: {'; '.join(cut)}." if cut else ""


def _replacement(
    spec: ScaledModelSpec,
    combos: tuple[pl.Combo, ...],
    base: Mapping[Key, int],
    prev: Mapping[Key, int],
) -> dict[Key, int]:
    """Signals unknown and part of the held mix cannot run: move it, same replica count."""
    usable = {(c.variant, c.pool) for c in combos}
    if prev and all(k in usable for k in prev):
        return dict(prev)  # replaced at an earlier step; the old replicas are draining
    kept = {k: n for k, n in base.items() if k in usable}
    # The fleet to keep is the last decided one. What runs can hold a move half-done
    # (old and new Deployments side by side, e.g. after a restart before the state
    # recorded the move): summing it would double the fleet.
    want = max(1, spec.scaling.min_replicas, sum(prev.values()) if prev else sum(base.values()))
    want = min(want, max(1, spec.scaling.max_replicas))
    need = max(0, want - sum(kept.values()))
    mix = dict(kept)
    if need:
        # The kept replicas use their pools' maxReplicas: the new ones get what is left
        # (solving over the full limits once put a second replica on l4-spot, max 1).
        used: dict[str, int] = {}
        for (_, pool), n in kept.items():
            used[pool] = used.get(pool, 0) + n
        room = tuple(replace(c, pool_max=c.pool_max - used.get(c.pool, 0)) for c in combos
                     if c.pool_max > used.get(c.pool, 0))
        req = pl.Request(0.0, 0.0, need, need, None)
        plan = pl.solve(room, req, respect_budget=False) or pl.Plan((), 0.0, math.inf,
                                                                      math.inf)
        for k, n in plan.counts:
            mix[k] = mix.get(k, 0) + n
    return mix


def _safe(spec: ScaledModelSpec) -> dict[Key, int]:
    return {(e.variant, e.pool): e.replicas for e in spec.scaling.safe_plan if e.replicas > 0}

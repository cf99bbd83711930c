"""Planner: decision tables and optimality against brute force."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import pytest

from tritonscale.core import planner as pl
from tritonscale.core.autoscale import decide, plan_once
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Observation, PlacementState

SpecFactory = Callable[..., ScaledModelSpec]


def brute_force(combos: Sequence[pl.Combo], req: pl.Request) -> float:
    """Cheapest cost over every replica vector, checking each constraint directly."""
    best = math.inf
    ranges = [range(c.pool_max + 1) for c in combos]
    for counts in itertools.product(*ranges):
        per_pool: dict[str, int] = {}
        for c, n in zip(combos, counts, strict=True):
            per_pool[c.pool] = per_pool.get(c.pool, 0) + n
        if any(per_pool[c.pool] > c.pool_max for c in combos):
            continue
        total = sum(counts)
        if total < req.min_replicas or total > req.max_replicas:
            continue
        used = [c for c, n in zip(combos, counts, strict=True) if n > 0]
        if req.load_rps > 0 and (not used or total * min(c.capacity_rps for c in used)
                                 < req.load_rps - 1e-9):
            continue
        od = [(c, n) for c, n in zip(combos, counts, strict=True) if n > 0 and not c.spot]
        if req.od_load_rps > 0:
            n_od = sum(n for _, n in od)
            if not od or n_od * min(c.capacity_rps for c, _ in od) < req.od_load_rps - 1e-9:
                continue
        cost = sum(c.price_per_hour * n for c, n in zip(combos, counts, strict=True))
        if req.max_cost_per_hour is not None and cost > req.max_cost_per_hour + 1e-9:
            continue
        best = min(best, cost)
    return best


def test_solver_is_optimal_against_brute_force(make_spec: SpecFactory) -> None:
    profile = pl.candidates(make_spec())[0].profile
    rng = random.Random(42)
    checked = 0
    infeasible = 0
    for _ in range(250):
        pools = [(f"p{i}", rng.random() < 0.5, rng.choice([0.2, 0.5, 0.9, 1.3, 3.0]),
                  rng.randint(1, 3)) for i in range(3)]
        combos = []
        for vi in range(2):
            for name, spot, price, cap in pools:
                if rng.random() < 0.8:
                    combos.append(pl.Combo(f"v{vi}", name, 0.9 - vi * 0.1,
                                           float(rng.choice([100, 250, 400, 700])), price,
                                           spot, cap, profile))
        if not combos:
            continue
        req = pl.Request(
            load_rps=rng.choice([0.0, 150.0, 500.0, 900.0, 1600.0, 2500.0]),
            od_load_rps=rng.choice([0.0, 0.0, 200.0, 600.0]),
            min_replicas=rng.choice([0, 1, 2]),
            max_replicas=rng.choice([3, 5, 8]),
            max_cost_per_hour=rng.choice([None, None, 2.0, 4.0]),
        )
        plan = pl.solve(combos, req)
        expect = brute_force(combos, req)
        if math.isinf(expect):
            assert plan is None, (combos, req, plan)
            infeasible += 1
        else:
            assert plan is not None, (combos, req)
            assert plan.cost_per_hour == pytest.approx(expect), (combos, req, plan)
            # The returned plan itself satisfies every constraint.
            assert plan.supported_rps >= req.load_rps - 1e-6
            assert plan.total >= req.min_replicas and plan.total <= req.max_replicas
            if req.od_load_rps:
                assert plan.on_demand * plan.od_min_capacity_rps >= req.od_load_rps - 1e-6
            checked += 1
    assert checked > 100 and infeasible > 10  # both outcomes were exercised


@pytest.mark.parametrize(
    ("rps", "mix", "binding", "reason"),
    [
        # Light load: one replica of the cheapest (spot) pool.
        (50.0, {("small", "t4-spot"): 1}, "latency", "Planned"),
        # Several small@t4-spot (capacity ~1529 rps each), still the cheapest per rps.
        (4000.0, {("small", "t4-spot"): 3}, "latency", "Planned"),
        # Spot pool full (4): the on-demand T4 pool takes the rest.
        (7000.0, {("small", "t4-spot"): 4, ("small", "t4-od"): 1}, "nodePools[t4-spot]",
         "Planned"),
    ],
)
def test_plan_table_feasible(
    make_spec: SpecFactory, rps: float, mix: dict[tuple[str, str], int], binding: str,
    reason: str,
) -> None:
    d = plan_once(make_spec(), rps)
    assert d.replicas() == mix
    assert d.binding_constraint.startswith(binding)
    assert d.reason == reason
    assert d.slo_feasible
    assert d.predicted_latency_ms is not None and d.predicted_latency_ms <= 40.0
    assert "runner-up" in d.message and d.runner_up
    assert d.runner_up_cost_per_hour is not None
    assert d.runner_up_cost_per_hour >= d.cost_per_hour


def test_plan_min_replicas_binds(make_spec: SpecFactory) -> None:
    d = plan_once(make_spec(scaling={"minReplicas": 3}), 50.0)
    assert d.replicas() == {("small", "t4-spot"): 3}
    assert d.binding_constraint == "minReplicas"


def test_plan_infeasible_returns_best_effort(make_spec: SpecFactory) -> None:
    # 4+4 T4 at 1529 and 2 A100 (big, 1932): nothing holds 100k rps.
    d = plan_once(make_spec(), 100_000.0)
    assert d.reason == "Infeasible"
    assert not d.slo_feasible
    assert d.total_replicas == 10  # global maxReplicas, everything it can get
    assert d.binding_constraint == "maxReplicas"
    assert d.predicted_latency_ms is None  # overloaded: infinite latency


def test_plan_budget_bound_priority_latency_goes_over_budget(make_spec: SpecFactory) -> None:
    spec = make_spec(slo={"maxCostPerHour": 1.0})
    d = plan_once(spec, 7000.0)  # needs 5 x T4 small: 4*0.2 + 0.5 = 1.3 $/h
    assert d.reason == "OverBudget"
    assert d.slo_feasible
    assert d.cost_per_hour == pytest.approx(1.3)
    assert d.binding_constraint == "maxCostPerHour"


def test_plan_budget_bound_priority_cost_degrades_within_budget(make_spec: SpecFactory) -> None:
    spec = make_spec(slo={"maxCostPerHour": 1.0, "priority": "cost"})
    d = plan_once(spec, 7000.0)
    assert d.reason == "Degraded"
    assert d.cost_per_hour <= 1.0 + 1e-9
    assert d.replicas() == {("small", "t4-spot"): 4}  # most capacity $1/h buys
    assert d.details["level"] == 3


def test_plan_accuracy_bound(make_spec: SpecFactory) -> None:
    # With the floor above "small", only "big" qualifies and costs more.
    loose = plan_once(make_spec(), 1000.0)
    strict = plan_once(make_spec(slo={"minAccuracy": 0.78}), 1000.0)
    assert loose.replicas() == {("small", "t4-spot"): 1}
    assert strict.replicas() == {("big", "t4-spot"): 2}
    assert strict.binding_constraint == "minAccuracy"
    assert all(p.variant == "big" for p in strict.placements)


def test_plan_spot_protection_keeps_on_demand_for_current_load(make_spec: SpecFactory) -> None:
    plain = plan_once(make_spec(), 2000.0)
    protected = plan_once(make_spec(scaling={"spotProtection": True}), 2000.0)
    assert plain.replicas() == {("small", "t4-spot"): 2}
    # On-demand alone must hold 2000 rps: two small@t4-od; nothing else is needed.
    assert protected.replicas() == {("small", "t4-od"): 2}
    assert protected.binding_constraint == "spotProtection"
    od_cap = 2 * pl.candidates(make_spec())[-1].capacity_rps
    assert od_cap >= 2000.0


def test_unavailable_pool_is_excluded(make_spec: SpecFactory) -> None:
    spec = make_spec()
    combos = pl.candidates(spec, unavailable={"t4-spot"})
    assert all(c.pool != "t4-spot" for c in combos)
    d = decide(spec, Observation(rps=1000.0, unavailable_pools=frozenset({"t4-spot"})), None,
               0.0)
    assert all(p.pool != "t4-spot" for p in d.placements)


def test_ladder_steps_down_and_back_up_after_recovery(make_spec: SpecFactory) -> None:
    spec = make_spec(
        slo={"maxCostPerHour": 1.0, "priority": "cost"},
        scaling={"headroom": 0.5, "recoverySeconds": 120, "scaleDownStabilizationSeconds": 0},
    )
    state = None
    cur: tuple[PlacementState, ...] = ()
    t = 0.0

    def step(rps: float) -> tuple[str, int]:
        nonlocal state, cur, t
        d = decide(spec, Observation(rps=rps, current=cur), state, t)
        state = d.state
        cur = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                    for p in d.placements)
        t += 15.0
        assert d.cost_per_hour <= 1.0 + 1e-9
        return d.reason, int(d.details["level"])

    # 1000 rps x 1.5 headroom fits in $1/h: normal.
    for _ in range(3):
        assert step(1000.0)[1] == 0
    # 4500 rps: with headroom (6750) it would need 5 T4 > $1/h; without, 3 spot = $0.6.
    # (Held for four steps: a step up counts in full once it lasts, core/burst.py.)
    for _ in range(4):
        reason, level = step(4500.0)
    assert (reason, level) == ("Degraded", 1)
    # Even the current load does not fit: best effort.
    for _ in range(6):
        reason, level = step(7000.0)
    assert (reason, level) == ("Degraded", 3)
    # Load falls back: the ladder climbs one rung per recoverySeconds (120 s = 8 steps).
    levels = [step(1000.0)[1] for _ in range(40)]
    assert levels[0] == 3
    first_up = levels.index(2)
    assert first_up >= 7  # not before 120 s of sustained recovery
    assert levels[-1] == 0
    assert levels == sorted(levels, reverse=True)  # monotone climb, no flapping


def test_solve_handles_zero_load_and_zero_min(make_spec: SpecFactory) -> None:
    combos = pl.candidates(make_spec())
    plan = pl.solve(combos, pl.Request(0.0, 0.0, 0, 10, None))
    assert plan is not None and plan.total == 0 and plan.cost_per_hour == 0.0


def test_fill_even_spreads_and_only_grows() -> None:
    """Units over pools alike: as even as the rooms allow, the remainder to the first
    pools with room, and each pool's share never shrinks as the total grows."""
    assert pl._fill_even([4, 4], 2) == [1, 1]
    assert pl._fill_even([4, 4], 3) == [2, 1]
    assert pl._fill_even([1, 4, 4], 6) == [1, 3, 2]
    assert pl._fill_even([2, 2], 9) == [2, 2]
    prev = [0, 0, 0]
    for want in range(12):
        got = pl._fill_even([2, 5, 4], want)
        assert sum(got) == min(want, 11)
        assert all(g >= p for g, p in zip(got, prev, strict=True)), (want, got)
        assert max(got) - min(min(g, r) for g, r in zip(got, [2, 5, 4], strict=True)) <= 5
        prev = got


def _alike_spot_pools(make_spec: SpecFactory) -> tuple[pl.Combo, ...]:
    """Candidates on two T4 spot pools alike in price and capacity (one per zone,
    say) and a T4 on-demand pool alike but for its price and capacity type;
    minReplicas 2."""
    t4 = {"accelerator": "T4", "pricePerHour": 0.2, "maxReplicas": 4, "startupSeconds": 60}
    spec = make_spec(nodePools=[
        {"name": "spot-a", "capacityType": "spot", **t4},
        {"name": "spot-b", "capacityType": "spot", **t4},
        {"name": "od", **t4, "pricePerHour": 0.5},
    ], scaling={"minReplicas": 2})
    return pl.candidates(spec)


def test_alike_spot_pools_share_the_replicas(make_spec: SpecFactory) -> None:
    """Two spot pools alike in price and capacity (one per zone, say): splitting the
    replicas between them costs nothing and a preemption of one then leaves the
    other's replicas serving, so the plan spreads them (it put every replica on
    the first pool by name). Same cost as the cheapest plan; an on-demand pool alike
    but for the capacity type is not mixed in."""
    combos = _alike_spot_pools(make_spec)
    cap = max(c.capacity_rps for c in combos)  # 'small', the cheapest per request
    plan = pl.solve(combos, pl.Request(load_rps=0.5 * cap, min_replicas=2))
    assert plan is not None
    assert {k[1]: n for k, n in plan.counts} == {"spot-a": 1, "spot-b": 1}
    assert plan.cost_per_hour == pytest.approx(brute_force(
        combos, pl.Request(load_rps=0.5 * cap, min_replicas=2)))
    plan = pl.solve(combos, pl.Request(load_rps=2.5 * cap, min_replicas=2))
    assert plan is not None
    assert sorted(n for _, n in plan.counts) == [1, 2]  # three replicas, split
    assert {k[1] for k, _ in plan.counts} == {"spot-a", "spot-b"}


def test_alike_spot_pools_share_the_replicas_under_weighted_routing(
    make_spec: SpecFactory,
) -> None:
    """The same under weighted routing (capacities add up): the integer program
    returned an optimum all on one pool; spread over the alike pools the plan
    costs the same (the cheapest: minReplicas, then 3 replicas for 2.5x one's
    capacity) and holds the same capacity sum."""
    combos = _alike_spot_pools(make_spec)
    cap = max(c.capacity_rps for c in combos)
    for load, want in ((0.5 * cap, [1, 1]), (2.5 * cap, [1, 2])):
        req = pl.Request(load_rps=load, min_replicas=2, weighted=True)
        plan = pl.solve(combos, req)
        assert plan is not None and plan.weighted
        assert sorted(n for _, n in plan.counts) == want
        assert {k[1] for k, _ in plan.counts} == {"spot-a", "spot-b"}
        assert plan.capacity_sum_rps >= load
        assert plan.cost_per_hour == pytest.approx(0.2 * sum(want))

"""A mix change must pay for itself (core/switching.py), and the fleet does not flap."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from tritonscale.core import planner as pl
from tritonscale.core import switching
from tritonscale.core.autoscale import decide
from tritonscale.core.spec import parse_manifest
from tritonscale.core.types import Observation, PlacementState

FLEET = Path(__file__).resolve().parents[2] / "examples" / "bert-fleet.yaml"


def _fleet():  # type: ignore[no-untyped-def]
    return parse_manifest(yaml.safe_load(FLEET.read_text()))[2]


def test_gate_by_hand() -> None:
    spec = _fleet()
    combos = pl.candidates(spec)
    req = pl.Request(load_rps=5100.0, max_replicas=60)
    t4 = ("large-int8", "t4-spot")
    l4 = ("large-int8", "l4-spot")
    cheapest = pl.solve(combos, req)
    assert cheapest is not None and dict(cheapest.counts) == {l4: 6}  # 6 x $0.4173
    g = switching.gate(spec, combos, req, cheapest, {t4: 12})
    # Staying on T4 spot needs ceil(5100 / 420) = 13 replicas: $2.613/h against
    # $2.504/h, i.e. $0.009 saved over the 300-s window for a $0.167 switch.
    stay = pl.solve([c for c in combos if c.key == t4], req)
    assert stay is not None and dict(stay.counts) == {t4: 13}
    savings = (stay.cost_per_hour - cheapest.cost_per_hour) * 300 / 3600
    cost = 6 * 0.4173 * 120 / 3600 * (1 + switching.SWITCH_RISK)
    assert g.switching_cost == pytest.approx(cost)
    assert g.savings == pytest.approx(savings)
    assert g.held and dict(g.plan.counts) == dict(stay.counts)
    assert "switching cost" in g.note
    # Nothing deployed, or nothing new: no gate.
    assert not switching.gate(spec, combos, req, cheapest, {}).held
    assert not switching.gate(spec, combos, req, cheapest, {l4: 3}).held


def test_a_switch_that_pays_goes_ahead() -> None:
    spec = _fleet()
    combos = pl.candidates(spec)
    req = pl.Request(load_rps=3000.0, max_replicas=60)
    od = ("large-int8", "t4-ondemand")
    plan = pl.solve(combos, req)
    assert plan is not None
    # From T4 on-demand ($0.526) to spot saves far more over 300 s than a startup costs.
    g = switching.gate(spec, combos, req, plan, {od: 8})
    assert not g.held and g.plan == plan and g.savings > g.switching_cost


def test_a_needed_switch_goes_through_the_cheapest_way() -> None:
    """T4 spot (16 x 411) cannot hold 9,000 requests/s: a switch is needed. Over the
    300-s window plus switching cost (x 2: SWITCH_RISK):
    - the planner's 1 L4-od + 10 L4-spot, $4.9778/h, 11 new: 0.4148 + 0.3319 = 0.7467;
    - T4 spot + 6 L4 spot ($5.7198/h; 6 new): 0.4767 + 6 x 0.4173 / 15 = 0.6436;
    - T4 spot + 6 T4 on-demand ($6.372/h): 0.5310 + 6 x 0.526 / 15 = 0.7414;
    - with L4 on-demand or A100 more still. The second wins: it goes through."""
    spec = _fleet()
    combos = pl.candidates(spec)
    req = pl.Request(load_rps=9000.0, max_replicas=60)
    t4, l4 = ("large-int8", "t4-spot"), ("large-int8", "l4-spot")
    plan = pl.solve(combos, req)
    assert plan is not None
    assert dict(plan.counts) == {("large-int8", "l4-ondemand"): 1, l4: 10}
    g = switching.gate(spec, combos, req, plan, {t4: 16})
    assert g.held and dict(g.plan.counts) == {t4: 16, l4: 6}
    assert g.switching_cost == pytest.approx(6 * 0.4173 * 120 / 3600 * 2)
    assert g.savings == pytest.approx(-(5.7198 - 4.9778) * 300 / 3600)
    assert "switched to 6x large-int8@l4-spot + 16x large-int8@t4-spot" in g.note
    # Nothing cheaper to start: the planner's switch goes through as planned.
    big = pl.Request(load_rps=20000.0, max_replicas=60)
    p2 = pl.solve(combos, big)
    assert p2 is not None
    g2 = switching.gate(spec, combos, big, p2, {t4: 16})
    assert not g2.held and g2.plan == p2


def test_a_needed_switch_does_not_start_a_pool_it_can_do_without() -> None:
    """The bundled fleet at x1500 (sim.report.run_policy, per step): 8 L4-spot
    replicas, a ramp planned at 8,782 requests/s, L4 capacity corrected to ~740
    requests/s per replica. The planner's cheapest, 6 L4-spot + 16 T4-spot ($5.7198/h),
    starts 16 T4 ($0.2144 with the risk premium): 0.4767 + 0.2144 = 0.6911 over the
    300-s window; 10 L4-spot + 2 L4-od ($5.7826/h) starts 2 of each
    ((2 x 0.4173 + 2 x 0.8048) / 15 = $0.1630): 0.4819 + 0.1630 = 0.6449. The T4
    replicas it ordered were billed 270 s, Ready after the backlog was gone, and never
    needed; the gate now picks the L4 plan."""
    from dataclasses import replace

    spec = _fleet()
    combos = tuple(replace(c, capacity_rps=740.0) if c.pool.startswith("l4") else c
                   for c in pl.candidates(spec))
    req = pl.Request(load_rps=8782.0, max_replicas=60)
    l4, od = ("large-int8", "l4-spot"), ("large-int8", "l4-ondemand")
    plan = pl.solve(combos, req)
    assert plan is not None and dict(plan.counts) == {l4: 6, ("large-int8", "t4-spot"): 16}
    g = switching.gate(spec, combos, req, plan, {l4: 8})
    assert g.held and dict(g.plan.counts) == {l4: 10, od: 2}
    assert g.switching_cost == pytest.approx((2 * 0.4173 + 2 * 0.8048) * 120 / 3600 * 2)


def test_a_needed_switch_counts_every_replica_it_starts() -> None:
    """The bursty fleet (seed 3, 1 preemption/h) lost its 10 L4-spot replicas with 1
    L4-od left, at 8,326 requests/s planned. The planner's 5 T4-od + 16 T4-spot
    ($5.846/h) starts 21: (5 x 0.526 + 16 x 0.201) / 15 = $0.3898; 5 L4-od + 16 T4-spot
    ($7.240/h) starts 20: (4 x 0.8048 + 16 x 0.201) / 15 = $0.4290 (its 4 more L4-od
    are billed through their startup like any new pair's). Over 300 s: 0.4872 +
    0.3898 = 0.8770 against 0.6033 + 0.4290 = 1.0323: the planner's plan goes
    through. Counting only new pairs' replicas, the L4 plan looked $0.175 cheaper to
    start and was picked ($5.12/h for the run against $4.69/h, the same minutes)."""
    spec = _fleet()
    combos = pl.candidates(spec, unavailable=["l4-spot"])
    req = pl.Request(load_rps=8326.0, max_replicas=60)
    t4, t4od, l4od = (("large-int8", p) for p in ("t4-spot", "t4-ondemand", "l4-ondemand"))
    plan = pl.solve(combos, req)
    assert plan is not None and dict(plan.counts) == {t4: 16, t4od: 5}
    g = switching.gate(spec, combos, req, plan, {l4od: 1, ("large-int8", "l4-spot"): 10})
    assert not g.held and g.plan == plan
    assert g.switching_cost == pytest.approx((5 * 0.526 + 16 * 0.201) * 120 / 3600 * 2)


def test_no_pool_flapping_after_a_lull() -> None:
    """Regression: after a lull, a rising load near the T4-spot / L4-spot price
    crossover moved the whole fleet t4-spot -> l4-spot -> t4-spot -> l4-spot, one
    switch every few 15-s steps (each paying a 120-s startup). Replicas are Ready at
    once here (the most favourable case for switching)."""
    spec = _fleet()
    loads = [5500.0] * 20 + [200.0] * 4 + [4000.0 + 200.0 * i for i in range(11)]
    state = None
    cur: tuple[PlacementState, ...] = ()
    pools_per_step: list[set[str]] = []
    for i, rps in enumerate(loads):
        d = decide(spec, Observation(rps=rps, current=cur, pending=0.0, latency_ms=50.0),
                   state, 15.0 * i)
        state = d.state
        cur = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                    for p in d.placements)
        pools_per_step.append({p.pool for p in d.placements})
    removed: set[str] = set()
    for before, after in itertools.pairwise(pools_per_step):
        gone = before - after
        back = after & removed
        assert not back, f"pool(s) {sorted(back)} came back after being removed: " \
                         f"{pools_per_step}"
        removed |= gone

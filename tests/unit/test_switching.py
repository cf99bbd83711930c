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


def test_gate_lets_a_needed_switch_through() -> None:
    spec = _fleet()
    combos = pl.candidates(spec)
    req = pl.Request(load_rps=9000.0, max_replicas=60)  # T4 spot (16 x 420) cannot hold it
    plan = pl.solve(combos, req)
    assert plan is not None
    g = switching.gate(spec, combos, req, plan, {("large-int8", "t4-spot"): 16})
    assert not g.held and g.plan == plan


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

"""Interim placement rule and make-before-break transitions (pure)."""

from __future__ import annotations

from typing import Any

from fakes import load_example

from tritonscale.core.placement import initial_placement, plan_transition, summary
from tritonscale.core.spec import parse_spec
from tritonscale.core.types import Placement, PlacementState


def _spec(mut: Any = None) -> Any:
    doc = load_example("resnet50.yaml")
    if mut:
        mut(doc["spec"])
    return parse_spec(doc["spec"])


def test_cheapest_eligible_pair() -> None:
    d = initial_placement(_spec())
    assert d.placements == (Placement("int8", "t4-spot", 1),)
    assert d.slo_feasible and d.cost_per_hour == 0.201
    assert "int8@t4-spot x1" in d.message


def test_accuracy_floor_excludes_int8() -> None:
    d = initial_placement(_spec(lambda s: s["slo"].update(minAccuracy=0.76)))
    assert d.placements == (Placement("fp16", "t4-spot", 1),)


def test_spills_over_pool_max() -> None:
    d = initial_placement(_spec(lambda s: s["scaling"].update(minReplicas=10)))
    # int8 is on t4-spot (8 max) first, then the next cheapest pool with an int8 profile.
    assert d.placements == (Placement("int8", "l4-spot", 2), Placement("int8", "t4-spot", 8))
    assert d.total_replicas == 10


def test_unavailable_pool_skipped() -> None:
    d = initial_placement(_spec(), frozenset({"t4-spot"}))
    assert d.placements == (Placement("int8", "l4-spot", 1),)


def test_all_pools_unavailable() -> None:
    d = initial_placement(_spec(), frozenset({"t4-spot", "t4-ondemand", "l4-spot",
                                              "a100-ondemand"}))
    assert d.placements == () and not d.slo_feasible
    assert d.reason == "NoFeasiblePlacement"


def test_over_budget() -> None:
    d = initial_placement(_spec(lambda s: s["slo"].update(maxCostPerHour=0.1)))
    assert not d.slo_feasible and d.reason == "OverBudget"
    assert d.binding_constraint == "slo.maxCostPerHour"


def test_summary_order() -> None:
    assert summary([Placement("a", "p", 1), Placement("b", "q", 3), Placement("c", "r", 0)]) == (
        "b@q x3,a@p x1"
    )


def st(v: str, p: str, desired: int, ready: int) -> PlacementState:
    return PlacementState(v, p, desired, ready)


def test_transition_fresh_create() -> None:
    tr = plan_transition([Placement("a", "p", 2)], [])
    assert tr.apply == (Placement("a", "p", 2),) and tr.delete == () and tr.settled


def test_transition_keeps_old_until_new_ready() -> None:
    plan = [Placement("b", "q", 2)]
    tr = plan_transition(plan, [st("a", "p", 2, 2), st("b", "q", 2, 1)])
    assert tr.keep == (Placement("a", "p", 2),) and tr.delete == () and not tr.settled
    tr2 = plan_transition(plan, [st("a", "p", 2, 2), st("b", "q", 2, 2)])
    assert tr2.delete == (("a", "p"),) and tr2.settled


def test_transition_old_without_ready_replicas_goes_now() -> None:
    tr = plan_transition([Placement("b", "q", 2)], [st("a", "p", 2, 0)])
    assert tr.delete == (("a", "p"),) and tr.keep == ()


def test_transition_pure_scale_down_is_immediate() -> None:
    tr = plan_transition([Placement("a", "p", 1)], [st("a", "p", 3, 3)])
    assert tr.apply == (Placement("a", "p", 1),) and tr.settled


def test_transition_shrink_waits_when_capacity_moves() -> None:
    plan = [Placement("a", "p", 1), Placement("b", "q", 2)]
    tr = plan_transition(plan, [st("a", "p", 3, 3)])
    assert Placement("a", "p", 3) in tr.apply and not tr.settled
    tr2 = plan_transition(plan, [st("a", "p", 3, 3), st("b", "q", 2, 2)])
    assert Placement("a", "p", 1) in tr2.apply and tr2.settled


def test_transition_scale_to_zero() -> None:
    tr = plan_transition([], [st("a", "p", 2, 2)])
    assert tr.delete == (("a", "p"),)

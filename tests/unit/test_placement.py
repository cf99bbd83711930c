"""Interim placement rule and the Deployment changes a decided plan asks for (pure)."""

from __future__ import annotations

from typing import Any

from tests.harness.fakes import load_example

from tritonscale.core.placement import changes, initial_placement, summary
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


def test_changes_apply_the_plan_as_decided() -> None:
    spec = _spec()
    v, p = spec.variants[0].name, spec.node_pools[0].name
    ch = changes(spec, [Placement(v, p, 2)], [])
    assert ch.apply == (Placement(v, p, 2),) and ch.keep == () and ch.delete == ()


def test_changes_delete_what_left_the_plan_and_keep_what_left_the_spec() -> None:
    spec = _spec()
    v, p = spec.variants[0].name, spec.node_pools[0].name
    current = [st(v, p, 1, 1), st("gone", p, 2, 2), st(v, "old-pool", 1, 1)]
    # The policy holds "gone" (its variant left the spec) until the new replicas are
    # Ready: it cannot be rendered, so it is left untouched; old-pool left the plan.
    ch = changes(spec, [Placement(v, p, 3), Placement("gone", p, 2)], current)
    assert ch.apply == (Placement(v, p, 3),)
    assert ch.keep == (Placement("gone", p, 2),)
    assert ch.delete == ((v, "old-pool"),)
    # Scale to zero: everything goes.
    assert set(changes(spec, [], current).delete) == {("gone", p), (v, p), (v, "old-pool")}

"""scaling.safePlan obeys every limit at run time (core/safeplan.py, decide()).

core/spec.py and the CRD refuse a safe plan that breaks a limit on its own (see
test_cel.py / test_spec_pod_fields.py); these specs are built past the parser, as a
stale or tampered object would reach the operator, and what already runs counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tritonscale.core.autoscale import decide
from tritonscale.core.safeplan import admissible_safe_plan
from tritonscale.core.spec import SafePlanEntry, ScaledModelSpec
from tritonscale.core.types import Observation

SpecFactory = Callable[..., ScaledModelSpec]


def _with_safe(spec: ScaledModelSpec, *entries: tuple[str, str, int],
               budget: float | None = None) -> ScaledModelSpec:
    scaling = dataclasses.replace(
        spec.scaling, failure_threshold=1,
        safe_plan=tuple(SafePlanEntry(v, p, n) for v, p, n in entries),
    )
    slo = dataclasses.replace(spec.slo, max_cost_per_hour=budget)
    return dataclasses.replace(spec, scaling=scaling, slo=slo)


def test_thousand_replicas_clipped_to_pool_and_global_limits(make_spec: SpecFactory) -> None:
    spec = _with_safe(make_spec(), ("small", "t4-spot", 1000), ("big", "t4-od", 1000))
    res = admissible_safe_plan(spec, {})
    assert res.mix == {("big", "t4-od"): 4, ("small", "t4-spot"): 4}  # pool maxReplicas 4
    assert any("pool maxReplicas 4" in n for n in res.notes)
    tight = dataclasses.replace(spec, scaling=dataclasses.replace(spec.scaling, max_replicas=5))
    res = admissible_safe_plan(tight, {})
    assert sum(res.mix.values()) == 5
    assert any("maxReplicas 5" in n for n in res.notes)


def test_floor_profile_and_unavailable_pool_refused(make_spec: SpecFactory) -> None:
    spec = make_spec(slo={"latency": {"targetMs": 40}, "minAccuracy": 0.78})
    spec = _with_safe(spec, ("small", "t4-spot", 2), ("small", "a100-od", 1),
                      ("big", "t4-od", 1), ("big", "t4-spot", 1))
    res = admissible_safe_plan(spec, {}, unavailable={"t4-spot"})
    assert res.mix == {("big", "t4-od"): 1}
    text = " | ".join(res.notes)
    assert "small@t4-spot skipped: below minAccuracy" in text
    assert "small@a100-od skipped" in text  # below the floor is checked first
    assert "big@t4-spot skipped: pool unavailable" in text


def test_budget_counts_what_already_runs(make_spec: SpecFactory) -> None:
    spec = _with_safe(make_spec(), ("big", "a100-od", 2), budget=4.0)
    # 2 x t4-od at $0.5 already run: $3 left, one A100 ($3/h) fits, not two.
    res = admissible_safe_plan(spec, {("big", "t4-od"): 2})
    assert res.mix == {("big", "t4-od"): 2, ("big", "a100-od"): 1}
    assert any("maxCostPerHour 4" in n for n in res.notes)


def test_base_is_never_reduced(make_spec: SpecFactory) -> None:
    spec = _with_safe(make_spec(), ("small", "t4-spot", 1))
    base = {("small", "t4-spot"): 3, ("big", "t4-od"): 4}
    assert admissible_safe_plan(spec, base).mix == base


def test_decide_applies_only_the_admissible_part_and_says_why(make_spec: SpecFactory) -> None:
    spec = _with_safe(make_spec(), ("small", "t4-spot", 1000), budget=0.6)
    obs = Observation(rps=None, error="prometheus down")
    first = decide(spec, obs, None, 0.0)
    d = decide(spec, obs, first.state, 15.0)
    for step in (first, d):
        assert step.cost_per_hour <= 0.6 + 1e-9
        assert step.replicas() == {("small", "t4-spot"): 3}
        assert "Safe plan limited" in step.message and "maxCostPerHour" in step.message
        assert step.details["safePlanCut"]
    assert d.reason == "SafePlan"


def test_budget_prices_a_replica_at_all_its_gpus(make_spec: SpecFactory) -> None:
    """pricePerHour is per GPU (core/pricing.py): a 2-GPU A100 replica costs $6/h, so a
    $7/h budget admits one of them, not the two a per-GPU price would let through."""
    base = make_spec()
    pools = tuple(dataclasses.replace(p, gpus_per_replica=2) if p.name == "a100-od" else p
                  for p in base.node_pools)
    spec = _with_safe(dataclasses.replace(base, node_pools=pools), ("big", "a100-od", 2),
                      budget=7.0)
    res = admissible_safe_plan(spec, {})
    assert res.mix == {("big", "a100-od"): 1}
    assert any("maxCostPerHour 7" in n for n in res.notes)

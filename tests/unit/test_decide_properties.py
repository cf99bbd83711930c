"""Property tests of decide(): random specs, loads and tampered states (hypothesis).

For every generated case: no exception; the state written is valid (reading it
back resets nothing); every placement is renderable or a replica that already
runs (held, never grown); and the target plan stays within the accuracy floor,
the replica limits and the budget unless the decision's reason says otherwise.
Derandomized (fixed examples) so it is a stable, bounded test.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from tests.harness.fakes import load_example

from tritonscale.core.autoscale import decide
from tritonscale.core.pricing import mix_cost_per_hour
from tritonscale.core.spec import ScaledModelSpec, SpecError, parse_spec
from tritonscale.core.state import decode
from tritonscale.core.types import Observation, PlacementState

BASE = load_example("resnet50.yaml")["spec"]
POOLS = [p["name"] for p in BASE["nodePools"]]
VARIANTS = [v["name"] for v in BASE["variants"]]
# Reasons under which the target may leave the limits, and what they say.
HOLDING = {"HeldUnknownSignals", "SafePlan", "Replaced"}  # what runs (or the safe plan)
OVER_BUDGET = {"OverBudget", "Infeasible"} | HOLDING
MAX_EXAMPLES = 250


@hs.composite
def specs(draw: hs.DrawFn) -> ScaledModelSpec:
    doc: dict[str, Any] = copy.deepcopy(BASE)
    for pool in doc["nodePools"]:
        pool["maxReplicas"] = draw(hs.integers(0, 12))
        pool["gpusPerReplica"] = draw(hs.sampled_from([0, 1, 2, 4]))
    lo = draw(hs.integers(0, 4))
    sc = doc.setdefault("scaling", {})
    sc.update(
        minReplicas=lo,
        maxReplicas=draw(hs.integers(max(1, lo), 40)),
        headroom=draw(hs.sampled_from([0.0, 0.1, 0.5, 2.0])),
        spotProtection=draw(hs.booleans()),
        idleSeconds=draw(hs.sampled_from([0, 60])),
        maxScaleUpStep=draw(hs.sampled_from([0, 1, 3])),
        maxScaleDownStep=draw(hs.sampled_from([0, 1, 3])),
    )
    sc.pop("safePlan", None)
    slo = doc["slo"]
    slo["priority"] = draw(hs.sampled_from(["latency", "cost"]))
    slo["minAccuracy"] = draw(hs.sampled_from([0.0, 0.75, 0.76, 0.99]))
    budget = draw(hs.one_of(hs.none(), hs.sampled_from([0.05, 0.5, 2.0, 50.0])))
    if budget is None:
        slo.pop("maxCostPerHour", None)
    else:
        slo["maxCostPerHour"] = budget
    slo["latency"]["targetMs"] = draw(hs.sampled_from([2.0, 25.0, 200.0]))
    try:
        return parse_spec(doc)
    except SpecError:
        # Some combinations are invalid (e.g. minReplicas above the pools' sum):
        # the operator never decides for those; use the example.
        return parse_spec(copy.deepcopy(BASE))


signal = hs.one_of(
    hs.floats(min_value=0, max_value=50_000),
    hs.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1.6e308, 1e9, 2e9, 0.0]),
    hs.none(),
)
latency = hs.one_of(
    hs.none(), hs.floats(min_value=0, max_value=1e4),
    hs.sampled_from([math.nan, math.inf, -5.0, 1e8, 1.6e308]),
)


@hs.composite
def currents(draw: hs.DrawFn) -> tuple[PlacementState, ...]:
    out = []
    for key in draw(hs.lists(hs.tuples(hs.sampled_from([*VARIANTS, "gone"]),
                                       hs.sampled_from([*POOLS, "old-pool"])),
                             max_size=4, unique=True)):
        desired = draw(hs.integers(0, 8))
        out.append(PlacementState(key[0], key[1], desired, draw(hs.integers(0, desired))))
    return tuple(out)


json_leaf = hs.one_of(hs.none(), hs.booleans(), hs.integers(-10**12, 10**12),
                      hs.floats(allow_nan=False, allow_infinity=False), hs.text(max_size=8))
json_any = hs.recursive(json_leaf, lambda c: hs.one_of(
    hs.lists(c, max_size=4), hs.dictionaries(hs.text(max_size=6), c, max_size=4)),
    max_leaves=12)
STATE_KEYS = ["v", "version", "f", "w", "L", "wo", "Lo", "c", "cf", "lvl", "rec", "fail",
              "p", "idle", "bc", "forecast", "loadWindow", "load", "target", "correction",
              "level", "failures", "binding"]
tampered = hs.one_of(
    json_any,
    hs.dictionaries(hs.sampled_from(STATE_KEYS), json_any, max_size=6),
    hs.builds(lambda d, v: {**d, "version": v},
              hs.dictionaries(hs.sampled_from(STATE_KEYS), json_any, max_size=6),
              hs.sampled_from([1, 2])),
)


def _within_pools(spec: ScaledModelSpec, obs: Observation, d: Any) -> dict[str, int]:
    """A pool's maxReplicas is shared by the variants (or cascade tiers) on it. Even a
    plan that holds what runs never grows a pool past it (a replacement once added
    replicas to a pool the kept ones already filled: l4-spot maxReplicas 1 went to 2).
    Returns the target's replicas per pool."""
    pools = {p.name: p for p in spec.node_pools}
    in_pool: dict[str, int] = {}
    for p in d.target or d.placements:
        in_pool[p.pool] = in_pool.get(p.pool, 0) + p.replicas
    running: dict[str, int] = {}
    for s in obs.current:
        running[s.pool] = running.get(s.pool, 0) + s.desired
    for p, n in in_pool.items():
        if p in pools:
            assert n <= max(pools[p].max_replicas, running.get(p, 0)), (d.reason, p, n)
    return in_pool


def _check(spec: ScaledModelSpec, obs: Observation, d: Any) -> None:
    json.dumps(d.state)  # JSON-able
    assert decode(json.loads(json.dumps(d.state)), now=1e9,
                  max_replicas=spec.scaling.max_replicas).problems == ()
    known = {(v.name, p.name) for v in spec.variants for p in spec.node_pools}
    cur = {s.key: s.desired for s in obs.current}
    for p in d.placements:
        assert p.replicas > 0
        if p.key not in known:
            assert p.replicas <= cur.get(p.key, 0), (p, cur)  # held, never grown
    target = {p.key: p.replicas for p in (d.target or d.placements)}
    pools = {p.name: p for p in spec.node_pools}
    in_pool = _within_pools(spec, obs, d)
    if d.reason in HOLDING or (d.reason == "Infeasible" and "holding" in d.message):
        return
    eligible = {v.name for v in spec.eligible_variants()}
    for v, p in target:
        assert v in eligible, (d.reason, v)
        assert p in pools, (d.reason, p)
    for p, n in in_pool.items():
        assert n <= pools[p].max_replicas, (d.reason, p, n)
    assert sum(target.values()) <= spec.scaling.max_replicas, d.reason
    budget = spec.slo.max_cost_per_hour
    if budget is not None and d.reason not in OVER_BUDGET:
        assert mix_cost_per_hour(spec, target) <= budget + 1e-6, (d.reason, d.message)


@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(spec=specs(), rps=hs.lists(signal, min_size=1, max_size=4), lat=latency,
       current=currents(), down=hs.frozensets(hs.sampled_from(POOLS), max_size=3))
def test_decide_sequences_stay_within_limits(
    spec: ScaledModelSpec, rps: list[float | None], lat: float | None,
    current: tuple[PlacementState, ...], down: frozenset[str],
) -> None:
    state: Any = None
    now = 1_000.0
    for r in rps:
        obs = Observation(rps=r, latency_ms=lat, current=current, unavailable_pools=down)
        d = decide(spec, obs, state, now)
        _check(spec, obs, d)
        assert d.state_reset == ""
        state = json.loads(json.dumps(d.state))
        current = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                        for p in d.placements)
        now += spec.scaling.interval_seconds


@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(spec=specs(), rps=signal, current=currents(), state=tampered)
def test_decide_survives_any_stored_state(
    spec: ScaledModelSpec, rps: float | None, current: tuple[PlacementState, ...], state: Any,
) -> None:
    obs = Observation(rps=rps, current=current)
    d = decide(spec, obs, state, 1_000.0)
    _check(spec, obs, d)
    # The state written back is valid: the next step resets nothing.
    again = decide(spec, obs, json.loads(json.dumps(d.state)), 1_015.0)
    assert again.state_reset == ""


def test_a_replacement_never_fills_a_pool_past_its_limit() -> None:
    """Signals unknown, a100-ondemand lost: its replica moves, but not onto l4-spot,
    where the kept int8 replica already uses the pool's one slot (the replacement
    once solved over the full limits and planned 2 there)."""
    doc = copy.deepcopy(BASE)
    for pool in doc["nodePools"]:
        if pool["name"] == "l4-spot":
            pool["maxReplicas"] = 1
    spec = parse_spec(doc)
    current = (PlacementState("int8", "l4-spot", 1, 1),
               PlacementState("fp16", "a100-ondemand", 1, 1))
    obs = Observation(rps=None, current=current,
                      unavailable_pools=frozenset({"t4-spot", "t4-ondemand", "a100-ondemand"}))
    d = decide(spec, obs, None, 1_000.0)
    assert d.reason == "Replaced", d.message
    target = {p.key: p.replicas for p in (d.target or d.placements)}
    assert target == {("int8", "l4-spot"): 1}, d.message
    _check(spec, obs, d)


CASCADE = load_example("bert-cascade.yaml")["spec"]
CASCADE_POOLS = [p["name"] for p in CASCADE["nodePools"]]
CASCADE_VARIANTS = [v["name"] for v in CASCADE["variants"]]


@settings(max_examples=100, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(limits=hs.lists(hs.integers(0, 6), min_size=len(CASCADE_POOLS),
                       max_size=len(CASCADE_POOLS)),
       rps=hs.lists(hs.one_of(hs.none(), hs.floats(0, 5000)), min_size=1, max_size=3),
       current=hs.lists(hs.tuples(hs.sampled_from(CASCADE_VARIANTS),
                                  hs.sampled_from(CASCADE_POOLS), hs.integers(0, 6)),
                        max_size=3, unique_by=lambda t: t[:2]),
       down=hs.frozensets(hs.sampled_from(CASCADE_POOLS), max_size=2))
def test_cascade_decisions_stay_within_pool_limits(
    limits: list[int], rps: list[float | None], current: list[tuple[str, str, int]],
    down: frozenset[str],
) -> None:
    """The tiers of a cascade share each pool's maxReplicas too (the first plan, before
    any signal, once put one replica of each tier on a pool allowing one)."""
    doc: dict[str, Any] = copy.deepcopy(CASCADE)
    for pool, limit in zip(doc["nodePools"], limits, strict=True):
        pool["maxReplicas"] = limit
    doc.get("scaling", {}).pop("safePlan", None)
    try:
        spec = parse_spec(doc)
    except SpecError:
        return  # e.g. minReplicas above the pools' sum: never decided for
    running = tuple(PlacementState(v, p, n, n) for v, p, n in current)
    state: Any = None
    now = 1_000.0
    for r in rps:
        obs = Observation(rps=r, current=running, unavailable_pools=down)
        d = decide(spec, obs, state, now)
        _within_pools(spec, obs, d)
        state = json.loads(json.dumps(d.state))
        running = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                        for p in d.placements)
        now += spec.scaling.interval_seconds

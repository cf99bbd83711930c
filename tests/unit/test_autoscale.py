"""decide(): hostile inputs and the policy rules the operator relies on (pure)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from tests.harness.fakes import load_example

from tritonscale.core.autoscale import decide
from tritonscale.core.spec import ScaledModelSpec, parse_manifest
from tritonscale.core.types import Observation, PlacementState


@pytest.fixture(scope="module")
def spec() -> ScaledModelSpec:
    return parse_manifest(load_example("resnet50.yaml"))[2]


def _warm(spec: ScaledModelSpec) -> tuple[Any, tuple[PlacementState, ...]]:
    d = decide(spec, Observation(rps=100.0), None, 1000.0)
    cur = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                for p in d.placements)
    return json.loads(json.dumps(d.state)), cur


@pytest.mark.parametrize("rps", [1.6e308, 1.7976931348623157e308, math.inf, -math.inf,
                                 math.nan, -1.0, 2e9])
def test_out_of_range_rate_is_unknown_and_holds(spec: ScaledModelSpec, rps: float) -> None:
    state, cur = _warm(spec)
    d = decide(spec, Observation(rps=rps, current=cur), state, 1015.0)
    assert d.reason == "HeldUnknownSignals"
    assert d.replicas() == {s.key: s.desired for s in cur}
    if math.isfinite(rps):
        assert "outside" in d.message


@pytest.mark.parametrize("lat", [math.nan, math.inf, -5.0, 1e8, 1.6e308])
def test_out_of_range_latency_is_ignored(spec: ScaledModelSpec, lat: float) -> None:
    state, cur = _warm(spec)
    per = {cur[0].key: lat}
    ok = decide(spec, Observation(rps=100.0, current=cur), state, 1015.0)
    d = decide(spec, Observation(rps=100.0, latency_ms=lat, current=cur,
                                 per_placement_rps={cur[0].key: 100.0},
                                 per_placement_latency_ms=per), state, 1015.0)
    assert d.replicas() == ok.replicas() and d.state == ok.state


@pytest.mark.parametrize(
    "tampered",
    [{"w": [[1]]}, {"c": 1e308}, {"p": [["int8", "t4-spot", 10**9]]}, {"version": 99},
     "garbage", {"f": {"l": 1e308, "b": 1e308, "s": 1e308, "t": 0, "y": 1e308}}],
)
def test_tampered_state_resets_once_and_never_wedges(
    spec: ScaledModelSpec, tampered: Any
) -> None:
    _, cur = _warm(spec)
    d = decide(spec, Observation(rps=100.0, current=cur), tampered, 1015.0)
    assert d.state_reset, "the reset is reported"
    assert d.total_replicas <= spec.scaling.max_replicas
    again = decide(spec, Observation(rps=100.0, current=cur),
                   json.loads(json.dumps(d.state)), 1030.0)
    assert again.state_reset == ""  # the written state is valid: one event only


def test_state_is_versioned_json(spec: ScaledModelSpec) -> None:
    state, _ = _warm(spec)
    assert state["version"] == 3
    assert len(json.dumps(state)) < 1500


# ------------------------------------------- simulate runs the operator's rules (issue 9)


class _Fleet:
    """Applies each decision verbatim, as ``simulate`` does (sim/policies.py):
    new replicas become Ready ``startup_steps`` decisions later; removed ones go at
    once. Ready replicas on a lost pool stay Ready (a stalled pool in the operator
    keeps the pods it still has)."""

    def __init__(self, startup_steps: int = 3) -> None:
        self.startup_steps = startup_steps
        self.pods: dict[tuple[str, str], list[int]] = {}  # key -> steps until Ready
        self.min_ready: int | None = None

    def current(self) -> tuple[PlacementState, ...]:
        return tuple(PlacementState(k[0], k[1], len(v), sum(1 for s in v if s <= 0))
                     for k, v in sorted(self.pods.items()) if v)

    def ready(self) -> int:
        return sum(1 for v in self.pods.values() for s in v if s <= 0)

    def apply(self, want: dict[tuple[str, str], int]) -> None:
        for k in set(self.pods) | set(want):
            pods = sorted(self.pods.get(k, []))  # Ready (<= 0) first
            n = want.get(k, 0)
            while len(pods) < n:
                pods.append(self.startup_steps)
            self.pods[k] = pods[:n]  # not-Ready ones go first
        r = self.ready()
        self.min_ready = r if self.min_ready is None else min(self.min_ready, r)

    def tick(self) -> None:
        self.pods = {k: [s - 1 for s in v] for k, v in self.pods.items()}


def _drive(spec: ScaledModelSpec, steps: list[dict[str, Any]]) -> _Fleet:
    fleet = _Fleet()
    d = decide(spec, Observation(rps=100.0), None, 0.0)
    fleet.apply(d.replicas())
    fleet.pods = {k: [0] * len(v) for k, v in fleet.pods.items()}  # a warm fleet
    fleet.min_ready = fleet.ready()
    state: Any = json.loads(json.dumps(d.state))
    now = 0.0
    for kw in steps:
        now += spec.scaling.interval_seconds
        s = kw.pop("spec", spec)
        d = decide(s, Observation(current=fleet.current(), **kw), state, now)
        state = json.loads(json.dumps(d.state))
        fleet.apply(d.replicas())
        fleet.tick()
    return fleet


def test_simulate_never_below_min_ready_when_a_pool_is_lost_blind(
    spec: ScaledModelSpec,
) -> None:
    """Signals unknown and the pool of the running replicas lost: the replicas move
    (reason Replaced). The reconciler used to provide make-before-break for that
    move, so ``simulate`` (which applies decisions verbatim) removed the Ready
    replicas at once and fell to 0 Ready for a whole startup."""
    from dataclasses import replace

    two = replace(spec, scaling=replace(spec.scaling, min_replicas=2))
    first = decide(two, Observation(rps=100.0), None, 0.0)
    pools = {p.pool for p in first.placements}
    fleet = _drive(two, [dict(rps=None, error="prometheus down",
                              unavailable_pools=frozenset(pools))] * 6)
    assert fleet.min_ready is not None and fleet.min_ready >= 2
    assert {k[1] for k, v in fleet.pods.items() if v}.isdisjoint(pools)  # it did move


def test_simulate_holds_what_runs_when_nothing_is_feasible(spec: ScaledModelSpec) -> None:
    """Every pool unavailable: nothing is feasible. The reconciler held what runs;
    ``simulate`` tore the fleet down to 0."""
    from dataclasses import replace

    two = replace(spec, scaling=replace(spec.scaling, min_replicas=2))
    every = frozenset(p.name for p in spec.node_pools)
    fleet = _drive(two, [dict(rps=100.0, unavailable_pools=every)] * 4)
    assert fleet.min_ready is not None and fleet.min_ready >= 2


def test_simulate_never_below_min_ready_when_a_variant_leaves_the_spec(
    spec: ScaledModelSpec,
) -> None:
    from dataclasses import replace

    two = replace(spec, scaling=replace(spec.scaling, min_replicas=2))
    first = decide(two, Observation(rps=100.0), None, 0.0)
    (variant,) = {p.variant for p in first.placements}
    fewer = replace(two, variants=tuple(v for v in two.variants if v.name != variant))
    for obs in (dict(rps=100.0), dict(rps=None, error="prometheus down")):
        fleet = _drive(two, [dict(obs, spec=fewer) for _ in range(6)])
        assert fleet.min_ready is not None and fleet.min_ready >= 2, obs


def test_the_look_ahead_margins_are_not_stacked() -> None:
    # A rate that was noisy (the forecaster's deviation is large) and is now flat at
    # 1,000 rps for more than the horizon: no rise to extrapolate, so the look-ahead
    # is the rate, with either margin: x (1 + headroom) or the forecaster's noise
    # allowance (1.5 x its deviation). Both allow for the load beyond what is
    # expected over the horizon; the old plan took their product, (rate + noise) x
    # (1 + headroom), and paid for both (bundled fleet $6.83/h against $6.72/h, the
    # same minutes).
    from dataclasses import replace as dc_replace

    from tritonscale.core.spec import (
        SLO,
        BatchPoint,
        LatencySLO,
        ModelSpec,
        NodePool,
        Profile,
        Scaling,
        Variant,
    )

    prof = Profile("T4", 8, (BatchPoint(1, 5.0), BatchPoint(8, 20.0)), 2.0)
    spec = ScaledModelSpec(
        model=ModelSpec("m", "s3://m"),
        variants=(Variant("v", "fp16", 0.9, (prof,)),),
        node_pools=(NodePool("p", "T4", 1.0, max_replicas=100, startup_seconds=60.0),),
        slo=SLO(LatencySLO(95.0, 100.0)),
        scaling=dc_replace(Scaling(min_replicas=1, max_replicas=100, headroom=0.1),
                           scale_down_stabilization_seconds=0.0, panic_seconds=0.0),
    )
    d = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    t = 0.0
    for rps in (1000.0, 1300.0, 800.0, 1250.0, 850.0, 1200.0) + (1000.0,) * 7:
        t += 15.0
        n = d.total_replicas
        d = decide(spec, Observation(rps=rps, current=(PlacementState("v", "p", n, n),),
                                     latency_ms=40.0, pending=0.0), d.state, t)
    noise = 1.5 * float(d.state["forecast"]["s"])
    hr = 1.0 + float(d.details["burst"]["headroom"])  # type: ignore[index]
    ahead = float(d.details["forecast_rps"])  # type: ignore[arg-type]
    assert noise > 20.0 and ahead == pytest.approx(1000.0 + noise, rel=1e-4)
    # The stabilised look-ahead (windows of 0 s: this step's) takes the larger margin.
    assert float(d.state["forecastLoad"]) == pytest.approx(max(1000.0 * hr, 1000.0 + noise),
                                                           rel=1e-4)
    assert float(d.state["forecastLoad"]) < (1000.0 + noise) * hr - 1.0

"""decide(): hostile inputs and the policy rules the operator relies on (pure)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fakes import load_example

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
    assert state["version"] == 2
    assert len(json.dumps(state)) < 1500

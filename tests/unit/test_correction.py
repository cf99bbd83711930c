from __future__ import annotations

import math
from pathlib import Path

import yaml

from tritonscale.core.correction import (
    CorrectionSettings,
    corrected_spec,
    key,
    update_factors,
)
from tritonscale.core.spec import parse_manifest
from tritonscale.core.types import Observation, PlacementState

ROOT = Path(__file__).resolve().parents[2]
SPEC = parse_manifest(yaml.safe_load((ROOT / "examples/resnet50.yaml").read_text()))[2]


def _obs(lat: float, rps: float = 100.0, ready: int = 2) -> Observation:
    k = ("int8", "t4-spot")
    return Observation(
        rps=rps,
        current=(PlacementState("int8", "t4-spot", ready, ready),),
        per_placement_rps={k: rps},
        per_placement_latency_ms={k: lat},
    )


def _pred(ms: float, util: float = 0.5):  # type: ignore[no-untyped-def]
    return lambda v, p, rps, n: (ms, util)


def test_factor_moves_towards_observed_ratio_and_converges() -> None:
    f: dict[str, float] = {}
    for _ in range(60):
        f = update_factors(f, _obs(lat=20.0), _pred(10.0))
    assert math.isclose(f[key("int8", "t4-spot")], 2.0, rel_tol=1e-3)


def test_one_step_is_bounded_by_alpha() -> None:
    f = update_factors({}, _obs(lat=40.0), _pred(10.0), CorrectionSettings(alpha=0.2))
    # log-space EWMA from 1.0 towards 3.0 (4.0 clamped), one step of 20%.
    assert math.isclose(f[key("int8", "t4-spot")], 3.0**0.2, rel_tol=1e-3)


def test_factor_is_clamped() -> None:
    f: dict[str, float] = {}
    for _ in range(200):
        f = update_factors(f, _obs(lat=1000.0), _pred(1.0))
    assert math.isclose(f[key("int8", "t4-spot")], 3.0)
    for _ in range(400):
        f = update_factors(f, _obs(lat=0.001), _pred(1.0))
    assert math.isclose(f[key("int8", "t4-spot")], 0.5)


def test_no_update_without_traffic_ready_replicas_or_near_saturation() -> None:
    assert update_factors({}, _obs(lat=20.0, rps=0.1), _pred(10.0)) == {}
    assert update_factors({}, _obs(lat=20.0, ready=0), _pred(10.0)) == {}
    assert update_factors({}, _obs(lat=20.0), _pred(10.0, util=0.97)) == {}
    assert update_factors({}, _obs(lat=float("nan")), _pred(10.0)) == {}
    assert update_factors({}, _obs(lat=20.0), lambda *a: None) == {}


def test_corrected_spec_scales_profile_latency_pessimistically_per_accelerator() -> None:
    factors = {key("int8", "t4-spot"): 1.5, key("int8", "t4-ondemand"): 1.2}
    spec = corrected_spec(SPEC, factors)
    t4 = spec.variant("int8").profile_for("T4")
    orig = SPEC.variant("int8").profile_for("T4")
    assert t4 is not None and orig is not None
    assert [b.latency_ms for b in t4.batches] == [b.latency_ms * 1.5 for b in orig.batches]
    # Other accelerators and variants untouched.
    assert spec.variant("int8").profile_for("L4") == SPEC.variant("int8").profile_for("L4")
    assert spec.variant("fp16") == SPEC.variant("fp16")
    assert corrected_spec(SPEC, {}) is SPEC

from __future__ import annotations

import math
from pathlib import Path

import pytest
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


def _live_obs(rps: float, factor_vs_model: float, mix: dict[tuple[str, str], int]) -> Observation:
    """Every placement reports ``factor_vs_model`` x what the uncorrected model predicts."""
    from tritonscale.core.perf import predict_replica

    total = sum(mix.values())
    per_rps = {k: rps * n / total for k, n in mix.items()}
    per_lat = {}
    for (v, p), n in mix.items():
        prof = SPEC.variant(v).profile_for(SPEC.pool(p).accelerator)
        assert prof is not None
        pred = predict_replica(prof, per_rps[(v, p)] / n, SPEC.slo.latency.percentile)
        per_lat[(v, p)] = pred.latency_ms * factor_vs_model
    return Observation(
        rps=rps,
        latency_ms=max(per_lat.values()),
        current=tuple(PlacementState(v, p, n, n) for (v, p), n in mix.items()),
        per_placement_rps=per_rps,
        per_placement_latency_ms=per_lat,
    )


def test_decide_learns_per_placement_factor_persists_it_and_plans_with_it() -> None:
    import json

    from tritonscale.core.autoscale import decide

    state = None
    now = 0.0
    d = decide(SPEC, Observation(rps=None), state, now)
    rps = 3000.0
    for _ in range(40):
        mix = d.replicas()
        now += 15.0
        # Round-trip through JSON as the operator does through status.
        state = json.loads(json.dumps(dict(d.state)))
        d = decide(SPEC, _live_obs(rps, 2.0, mix), state, now)
    cf = d.state["correction"]
    # The factor was learnt for what ran, and moved towards 2 (bounded EWMA).
    assert cf and all(1.5 < f <= 2.0 + 1e-9 for f in cf.values()), cf
    # The learnt factor survives a restart (state from status) and is used:
    # planning the same load with the corrected profiles needs at least as much
    # capacity as planning it with the raw profiles.
    learnt = decide(SPEC, _live_obs(rps, 2.0, d.replicas()), json.loads(json.dumps(dict(d.state))),
                    now + 15.0)
    assert learnt.state["correction"] == pytest.approx(cf, rel=0.2)
    corrected = corrected_spec(SPEC, cf)
    assert corrected != SPEC
    assert learnt.predicted_latency_ms is not None


def test_decide_resets_malformed_factors_in_state_and_says_so() -> None:
    from tritonscale.core.autoscale import decide

    d = decide(SPEC, Observation(rps=None), None, 0.0)
    assert d.state_reset == ""
    st = dict(d.state)
    st["correction"] = {"int8/t4-spot": "x", "fp16/t4-spot": float("nan"), "a": -1, "b": True}
    out = decide(SPEC, Observation(rps=100.0, current=()), st, 15.0)
    assert out.state.get("correction", {}) == {}
    assert "status.autoscaler.correction" in out.state_reset

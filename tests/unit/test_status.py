"""The pure status builder: one reconcile's status patch from values, no I/O."""

from __future__ import annotations

from tests.harness.fakes import load_example

from tritonscale.core import status as st
from tritonscale.core.spec import ScaledModelSpec, parse_manifest
from tritonscale.core.types import Placement, PlacementState

NOW = 1_700_000_000.0


def _spec() -> ScaledModelSpec:
    doc = load_example("resnet50.yaml")
    doc["metadata"]["namespace"] = "ml"
    return parse_manifest(doc)[2]


def test_build_status_without_a_new_decision() -> None:
    spec = _spec()
    pool = spec.node_pools[0].name
    variant = spec.variants[0].name
    states = [PlacementState(variant, pool, 2, 1), PlacementState(variant, "gone", 1, 1)]
    old = {"lastDecision": {"reason": "X"}, "conditions": []}
    patch = st.build_status(
        old=old, spec=spec, name="m", generation=3, now=NOW, states=states,
        plan=[Placement(variant, pool, 2)], draining=False, target=2,
        unavailable_pools={"b", "a"},
    )
    assert "lastDecision" not in patch and "observed" not in patch  # nothing decided
    assert patch["observedGeneration"] == 3
    assert patch["unavailablePools"] == ["a", "b"]
    assert patch["readyReplicas"] == 2 and patch["desiredReplicas"] == 3
    assert [p["planned"] for p in patch["placements"]] == [True, False]
    assert patch["placements"][0]["deployment"] == f"m-{variant}-{pool}"
    types = {c["type"]: c["status"] for c in patch["conditions"]}
    assert types == {st.SPEC_VALID: "True", st.READY: "False"}
    # The unknown pool "gone" costs nothing; the known one is priced.
    assert patch["costPerHour"] > 0
    assert not st.status_changed(st.merge_patch(old, patch), patch)

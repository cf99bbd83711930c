"""The pure status builder: one reconcile's status patch from values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs
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


# -- "did the status change": the cheap comparison agrees with the stripped one ---

_KEYS = hs.sampled_from(["time", "rps", "a", "b", "conditions"])
_SCALARS = hs.one_of(hs.none(), hs.booleans(), hs.integers(-2, 2),
                     hs.sampled_from([0.0, 1.0, 1.5, float("nan")]), hs.sampled_from(["", "x"]))
_JSON = hs.recursive(
    _SCALARS,
    lambda inner: hs.one_of(hs.lists(inner, max_size=3),
                            hs.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


def _reference_changed(old: dict[str, Any], patch: dict[str, Any]) -> bool:
    """The definition: any patched key differs once timestamps and nulls are dropped."""
    return any(st._strip(old.get(k)) != st._strip(v) for k, v in patch.items())


@settings(max_examples=400, deadline=None)
@given(old=hs.dictionaries(_KEYS, _JSON, max_size=4), patch=hs.dictionaries(_KEYS, _JSON,
                                                                           max_size=4))
def test_status_changed_agrees_with_the_stripped_comparison(
    old: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert st.status_changed(old, patch) == _reference_changed(old, patch)
    assert st.status_changed(old, old) == _reference_changed(old, old)
    for k, v in old.items():
        w = patch.get(k)
        if isinstance(w, Mapping):
            assert st.same_decision(v, w) == (
                isinstance(v, Mapping) and st._strip(v) == st._strip(w))


def _retimed(obj: Any) -> Any:
    """``obj`` with its nulls dropped and every ``time`` changed: no change of status."""
    if isinstance(obj, Mapping):
        return {k: "later" if k == "time" else _retimed(v) for k, v in obj.items()
                if v is not None}
    if isinstance(obj, list):
        return [_retimed(v) for v in obj]
    return obj


@settings(max_examples=300, deadline=None)
@given(old=hs.dictionaries(_KEYS, _JSON, max_size=4))
def test_status_changed_not_by_times_or_nulls(old: dict[str, Any]) -> None:
    new = _retimed(old)
    assert st.status_changed(old, new) == _reference_changed(old, new)
    assert st.status_changed(new, old) == _reference_changed(new, old)


def test_status_changed_ignores_times_and_nulls_only() -> None:
    assert not st.status_changed({"a": {"b": None, "c": 1}}, {"a": {"c": 1}})
    assert not st.status_changed({"a": [{"b": None}]}, {"a": [{"time": "t"}]})
    old = {"observed": {"time": "a", "rps": 1.0}, "conditions": [{"type": "Ready"}]}
    assert not st.status_changed(old, {"observed": {"time": "b", "rps": 1.0, "error": None}})
    assert st.status_changed(old, {"observed": {"time": "a", "rps": 2.0}})
    assert st.status_changed(old, {"conditions": [{"type": "Ready"}, {"type": "X"}]})
    assert st.status_changed(old, {"conditions": [{"type": "Ready", "reason": "R"}]})
    assert not st.status_changed(old, {"conditions": [{"type": "Ready", "time": "t"}]})

"""The autoscaler state codec: versioned, validated, migrating, never raising."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tritonscale.core.state import (
    MAX_FACTOR,
    VERSION,
    AutoscalerState,
    decode,
    encode,
)

NOW = 10_000.0


def _dec(raw: Any, max_replicas: int = 20) -> Any:
    return decode(raw, now=NOW, max_replicas=max_replicas)


FULL = AutoscalerState(
    forecast={"l": 10.0, "b": -0.5, "s": 1.0, "t": NOW - 15, "y": 9.0},
    load_window=((NOW - 30, 12.0), (NOW - 15, 11.0)),
    load=12.0,
    forecast_window=((NOW - 15, 13.0),),
    forecast_load=13.0,
    od_window=((NOW - 15, 9.0),),
    od_load=9.0,
    correction={"int8/t4": 1.25},
    level=2,
    recovering_since=NOW - 60,
    failures=3,
    target={("int8", "t4"): 3, ("fp16", "a100"): 1},
    idle_since=None,
    binding=("sig", "nodePools[t4].maxReplicas"),
    accuracy_served=(NOW - 15, 1234.5, 0.8931),
    ready_since={("int8", "t4"): (3, NOW - 45.0), ("fp16", "a100"): (1, None)},
)


def test_round_trip_through_json() -> None:
    doc = json.loads(json.dumps(encode(FULL)))
    assert doc["version"] == VERSION
    out = _dec(doc)
    assert out.problems == ()
    assert out.state == FULL


def test_empty_or_missing_is_a_fresh_start_without_a_reset() -> None:
    for raw in (None, {}):
        out = _dec(raw)
        assert out.state == AutoscalerState() and not out.reset


def test_version_1_migrates_on_first_read() -> None:
    v1 = {
        "v": 1, "f": {"l": 5.0, "b": 0.0, "s": 0.25, "t": NOW - 15, "y": 5.0},
        "w": [[NOW - 15, 6.0]], "L": 6.0, "wo": [[NOW - 15, 5.0]], "Lo": 5.0,
        "c": 1.2, "cf": {"int8/t4": 1.5}, "lvl": 1, "rec": None, "fail": 0,
        "p": [["int8", "t4", 2]], "idle": None, "bc": ["s", "maxReplicas"],
    }
    out = _dec(v1)
    assert out.problems == ()
    s = out.state
    assert s.forecast is not None and s.forecast["l"] == 5.0
    assert s.load_window == ((NOW - 15, 6.0),) and s.load == 6.0 and s.od_load == 5.0
    # v1's load multiplier c = 1.2 is folded into the factors: the stored one and
    # the target's placement (one correction now).
    assert s.correction == pytest.approx({"int8/t4": 1.8})
    assert s.level == 1 and s.target == {("int8", "t4"): 2}
    assert s.binding == ("s", "maxReplicas")
    assert encode(s)["version"] == VERSION


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"w": [[1]]}, "loadWindow"),  # from the hostile-input audit (issue 11)
        ({"c": 1e308}, "loadCorrection"),
        ({"p": [["int8", "t4", 10**9]]}, "target"),  # beyond maxReplicas
        ({"p": [["int8", "t4", 15], ["fp16", "t4", 15]]}, "target"),  # sum beyond
        ({"L": math.inf}, "load"),
        ({"L": -1}, "load"),
        ({"L": True}, "load"),
        ({"f": {"l": 1}}, "forecast"),
        ({"f": {"l": 1.0, "b": 0.0, "s": 0.0, "t": NOW + 1e6, "y": 1.0}}, "forecast"),
        ({"w": [[NOW + 3600, 1.0]]}, "loadWindow"),  # a time in the future
        ({"cf": {"int8/t4": 1e9}}, "correction"),
        ({"cf": {"int8/t4": "x"}}, "correction"),
        ({"cf": [1]}, "correction"),
        ({"lvl": 7}, "level"),
        ({"lvl": 1.5}, "level"),
        ({"rec": NOW * 2}, "recoveringSince"),
        ({"fail": -1}, "failures"),
        ({"idle": "yesterday"}, "idleSince"),
        ({"bc": ["x" * 5000, "y"]}, "binding"),
        ({"w": [[NOW - 1, 1.0]] * 10_000}, "loadWindow"),
    ],
)
def test_invalid_field_resets_that_field_and_says_so(raw: dict[str, Any], field: str) -> None:
    doc = {"v": 1, "L": 7.0, **raw} if "L" not in raw else {"v": 1, **raw}
    out = _dec(doc, max_replicas=20)
    assert len(out.problems) == 1 and f"status.autoscaler.{field}:" in out.problems[0]
    assert len(out.problems[0]) < 300  # never echoes a large input
    if field != "load":
        assert out.state.load == 7.0  # the valid fields are kept


@pytest.mark.parametrize(("value", "why"), [
    ([NOW + 3600, 1.0, 0.9], "outside"),   # a time in the future
    ([NOW - 1, -5.0, 0.9], "outside"),      # negative requests
    ([NOW - 1, 5.0, 1.5], "outside"),       # an accuracy above 1
    ([NOW - 1, 5.0], "is not [time, requests, accuracy]"),
    ({"t": 1}, "is not [time, requests, accuracy]"),
])
def test_invalid_accuracy_window_resets_that_field(value: Any, why: str) -> None:
    out = _dec({"version": VERSION, "load": 7.0, "accuracyServed": value})
    assert len(out.problems) == 1
    assert out.problems[0].startswith("status.autoscaler.accuracyServed:")
    assert why in out.problems[0]
    assert out.state.accuracy_served is None and out.state.load == 7.0


@pytest.mark.parametrize(("value", "why"), [
    ([["int8", "t4", 2, NOW + 3600]], "outside"),  # a time in the future
    ([["int8", "t4", -1, NOW - 1]], "outside"),     # a negative Ready count
    ([["int8", "t4", 1.5, NOW - 1]], "not an integer"),
    ([["int8", "t4", 2]], "is not [variant, pool, ready, since]"),
    ([[1, "t4", 2, None]], "does not name a variant and a pool"),
    ({"int8/t4": 2}, "is not a list"),
])
def test_invalid_ready_since_resets_that_field(value: Any, why: str) -> None:
    out = _dec({"version": VERSION, "load": 7.0, "readySince": value})
    assert len(out.problems) == 1
    assert out.problems[0].startswith("status.autoscaler.readySince:")
    assert why in out.problems[0]
    assert out.state.ready_since == {} and out.state.load == 7.0


@pytest.mark.parametrize("raw", [[1, 2], "x", 3, {"v": 9}, {"version": 4}, {"version": True}])
def test_unknown_shape_or_version_resets_the_whole_state(raw: Any) -> None:
    out = _dec(raw)
    assert out.reset and out.state == AutoscalerState()


def test_factors_within_bounds_are_kept() -> None:
    out = _dec({"version": VERSION, "correction": {"a/b": MAX_FACTOR}})
    assert out.state.correction == {"a/b": MAX_FACTOR} and not out.reset


def test_version_2_load_correction_folds_into_the_factors() -> None:
    v2 = {"version": 2, "correction": {"int8/t4": 1.5, "fp16/a100": 2.9},
          "loadCorrection": 1.2, "target": [["int8", "t4", 2], ["int8", "l4", 1]]}
    out = _dec(v2)
    assert out.problems == ()
    # f x c within the bounds; the target's placement without a factor gets c.
    assert out.state.correction == pytest.approx(
        {"int8/t4": 1.8, "fp16/a100": MAX_FACTOR, "int8/l4": 1.2})
    doc = encode(out.state)
    assert doc["version"] == VERSION == 3 and "loadCorrection" not in doc


def test_version_2_without_load_correction_reads_as_is() -> None:
    out = _dec({"version": 2, "correction": {"int8/t4": 1.5}, "target": [["int8", "t4", 2]]})
    assert out.problems == () and out.state.correction == {"int8/t4": 1.5}


def test_version_2_bad_load_correction_is_named_and_dropped() -> None:
    out = _dec({"version": 2, "correction": {"int8/t4": 1.5}, "loadCorrection": 7.0})
    assert any("loadCorrection" in p for p in out.problems)
    assert out.state.correction == {"int8/t4": 1.5}

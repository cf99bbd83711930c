"""Broken ``spec.cascade`` blocks for tests/unit/test_cel.py: each must fail exactly one
CEL rule, and core/spec.py must name the same field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], Any]


def with_cascade(doc: dict[str, Any]) -> dict[str, Any]:
    """Give examples/resnet50.yaml a valid cascade: int8 first, fp16 for the unsure."""
    doc["spec"]["cascade"] = {
        "tiers": [
            {"variant": "int8", "escalateBelow": [
                {"threshold": 0.5, "escalated": 0.1, "accuracy": 0.76},
                {"threshold": 0.8, "escalated": 0.3, "accuracy": 0.765},
            ]},
            {"variant": "fp16"},
        ],
        "confidence": {"output": "CONFIDENCE"},
        "io": {"maxBatchSize": 8,
               "inputs": [{"name": "INPUT", "dataType": "FP32", "dims": [3, 224, 224]}],
               "outputs": [{"name": "LABEL", "dataType": "INT32", "dims": [1]},
                           {"name": "CONFIDENCE", "dataType": "FP32", "dims": [1]}]},
    }
    return doc


def _io(d: dict[str, Any]) -> dict[str, Any]:
    io: dict[str, Any] = d["spec"]["cascade"]["io"]
    return io


def _points(d: dict[str, Any]) -> list[dict[str, Any]]:
    pts: list[dict[str, Any]] = d["spec"]["cascade"]["tiers"][0]["escalateBelow"]
    return pts


CASCADE_CASES: list[tuple[str, Mutation, str]] = [
    ("cascade unknown variant",
     lambda d: with_cascade(d)["spec"]["cascade"]["tiers"][1].update(variant="fp8"),
     "spec.cascade.tiers[].variant"),
    ("cascade repeated variant",
     lambda d: with_cascade(d)["spec"]["cascade"]["tiers"][1].update(variant="int8"),
     "spec.cascade.tiers[].variant"),
    ("cascade last tier escalates",
     lambda d: with_cascade(d)["spec"]["cascade"]["tiers"][1].update(
         escalateBelow=[{"threshold": 0.5, "escalated": 0.1, "accuracy": 0.8}]),
     "spec.cascade.tiers[].escalateBelow"),
    ("cascade thresholds not ascending",
     lambda d: _points(with_cascade(d))[1].update(threshold=0.5),
     "spec.cascade.tiers[].escalateBelow"),
    ("cascade escalated falls",
     lambda d: _points(with_cascade(d))[1].update(escalated=0.05),
     "spec.cascade.tiers[].escalateBelow"),
    ("cascade curve below floor",
     lambda d: [p.update(accuracy=0.74) for p in _points(with_cascade(d))],
     "spec.cascade.tiers[].escalateBelow"),
    ("cascade confidence not an output",
     lambda d: with_cascade(d)["spec"]["cascade"]["confidence"].update(output="SCORE"),
     "spec.cascade.confidence.output"),
    ("cascade tensor names repeat",
     lambda d: _io(with_cascade(d))["inputs"][0].update(name="LABEL"),
     "spec.cascade.io"),
    ("cascade input dims zero",
     lambda d: _io(with_cascade(d))["inputs"][0].update(dims=[3, 0, 224]),
     "spec.cascade.io.inputs[].dims"),
    ("cascade output dims zero",
     lambda d: _io(with_cascade(d))["outputs"][0].update(dims=[0]),
     "spec.cascade.io.outputs[].dims"),
    ("cascade model name with a dot",
     lambda d: with_cascade(d)["spec"]["model"].update(name="resnet.v2"),
     "spec.model.name"),
    ("cascade behind a gateway",
     lambda d: with_cascade(d)["spec"].update(routing={
         "mode": "gateway", "parentRefs": [{"name": "gw"}]}),
     "spec.routing.mode"),
]

"""``tritonscale plan``: one decision with its explanation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonscale.cli import main

SPEC = str(Path(__file__).resolve().parents[2] / "examples" / "resnet50.yaml")


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--spec", SPEC, "--rps", "20000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["reason"] == "Planned" and d["slo_feasible"] is True
    total = sum(p["replicas"] for p in d["placements"])
    assert total >= 4
    assert all(p["variant"] == "int8" for p in d["placements"])  # cheapest above the floor
    assert d["predicted_latency_ms"] <= 25.0
    assert d["binding_constraint"] == "spotProtection"
    assert d["runner_up"] and d["runner_up_cost_per_hour"] >= d["cost_per_hour"]
    assert "runner-up" in d["message"]


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--spec", SPEC, "--rps", "500"]) == 0
    out = capsys.readouterr().out
    assert "reason:" in out and "predicted:" in out and "cost:" in out and "binding:" in out


def test_plan_rejects_negative_rps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--spec", SPEC, "--rps", "-5"]) == 2
    assert "--rps" in capsys.readouterr().err

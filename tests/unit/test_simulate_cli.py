"""``tritonscale simulate``: JSON fields, table, both trace formats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonscale.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "examples" / "resnet50.yaml")
FIELDS = ("policy", "requests", "slo_attainment", "windows_met", "cost_usd",
          "mean_cost_per_hour", "p50_ms", "p95_ms", "p99_ms", "dropped")


@pytest.fixture
def plain_trace(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(1 / 400.0, 400 * 240))  # 400 rps for 4 minutes
    p = tmp_path / "plain.csv"
    p.write_text("timestamp_s\n" + "\n".join(f"{x:.6f}" for x in t) + "\n")
    return p


def test_json_all_policies_plain_trace(plain_trace: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--spec", SPEC, "--trace", str(plain_trace), "--rate-scale", "1",
                 "--json"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["policy"] for r in rows] == ["tritonscale", "hpa", "kpa", "static-peak", "oracle",
                                          "foresight"]
    for r in rows:
        for f in FIELDS:
            assert f in r, f
        assert r["requests"] == 400 * 240
        assert 0.0 <= r["slo_attainment"] <= 1.0 and 0.0 <= r["windows_met"] <= 1.0
        assert r["cost_usd"] > 0


def test_table_azure_trace_one_policy(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # First 2,000 rows of the bundled Azure trace (TIMESTAMP format).
    lines = (ROOT / "examples/traces/azure_llm_conv_2023.csv").read_text().splitlines()[:2001]
    p = tmp_path / "azure.csv"
    p.write_text("\n".join(lines) + "\n")
    out_png = tmp_path / "out.png"
    code = main(["simulate", "--spec", SPEC, "--trace", str(p), "--rate-scale", "50",
                 "--policy", "tritonscale", "--seed", "3", "--plot", str(out_png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "tritonscale" in out and "SLO att." in out and "win. met" in out
    assert "100,000 requests" in out
    assert out_png.stat().st_size > 10_000


def test_bad_trace_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.csv"
    p.write_text("nope\n1\n")
    assert main(["simulate", "--spec", SPEC, "--trace", str(p)]) == 2
    assert "timestamp_s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--baseline-variant", "fp16", "--baseline-pool", "l4-spot"],
         "variant 'fp16' has no profile for node pool 'l4-spot'"),
        (["--baseline-variant", "nope"], "unknown variant 'nope'"),
    ],
)
@pytest.mark.parametrize("policy", ["hpa", "kpa"])
def test_bad_baseline_choice_is_a_clean_error(
    plain_trace: Path, capsys: pytest.CaptureFixture[str], policy: str,
    flags: list[str], needle: str,
) -> None:
    code = main(["simulate", "--spec", SPEC, "--trace", str(plain_trace), "--policy", policy,
                 "--rate-scale", "1", *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert f"policy {policy}" in err and needle in err, err


def test_baselines_say_where_they_ran(plain_trace: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """By default a baseline is swept onto its fair (variant, pool) and says so, with
    what each candidate did; --baseline-variant/--baseline-pool pin it."""
    args = ["simulate", "--spec", SPEC, "--trace", str(plain_trace), "--rate-scale", "1",
            "--policy", "static-peak", "--preroll", "120"]
    assert main([*args, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    # The example asks for spotProtection: on-demand pools only. One replica on T4
    # on-demand holds 400 req/s with either variant: the more accurate.
    assert row["runs_on"] == "fp16@t4-ondemand"
    assert row["placements"] == ["fp16@t4-ondemand"]
    tried = {t["runs_on"]: t for t in row["sweep"]}
    assert tried["fp16@t4-ondemand"]["complete"] and tried["fp16@t4-ondemand"]["missed"] == 0
    assert "fp16@a100-ondemand" in tried
    assert not any("spot" in k for k in tried)
    assert "note" not in row
    assert main([*args, "--baseline-variant", "fp16", "--baseline-pool", "t4-ondemand"]) == 0
    out = capsys.readouterr().out
    assert "runs on" in out.splitlines()[1]
    assert "fp16@t4-ondemand" in out
    # A spot pool named explicitly is used, and the output says it ignores the
    # protection (JSON and table).
    assert main([*args, "--baseline-pool", "t4-spot", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["runs_on"] == "fp16@t4-spot"
    assert "ignoring spec.scaling.spotProtection" in row["note"]
    assert main([*args, "--baseline-pool", "t4-spot"]) == 0
    out = capsys.readouterr().out
    assert "note: static-peak: runs on spot pool 't4-spot'" in out


@pytest.mark.parametrize("bad", ["-1", "nan", "1e9"])
def test_bad_preroll_is_a_clean_error(plain_trace: Path, capsys: pytest.CaptureFixture[str],
                                      bad: str) -> None:
    assert main(["simulate", "--spec", SPEC, "--trace", str(plain_trace),
                 "--preroll", bad]) == 2
    assert "--preroll" in capsys.readouterr().err


def test_the_specs_client_timeout_is_the_replays_unless_overridden(
        plain_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    doc = yaml.safe_load(Path(SPEC).read_text())
    # Clients that give up after 1 ms: requests waiting for a batch time out.
    doc["spec"].setdefault("scaling", {})["clientTimeoutSeconds"] = 0.001
    spec = tmp_path / "impatient.yaml"
    spec.write_text(yaml.safe_dump(doc))
    args = ["simulate", "--spec", str(spec), "--trace", str(plain_trace), "--rate-scale", "1",
            "--policy", "static-peak", "--json"]

    def timed_out(*extra: str) -> int:
        assert main([*args, *extra]) == 0
        return int(json.loads(capsys.readouterr().out.splitlines()[-1])["timed_out"])

    assert timed_out() > 1000
    assert timed_out("--client-timeout", "0") == 0  # the CLI wins: clients wait forever
    assert timed_out("--client-timeout", "30") == 0

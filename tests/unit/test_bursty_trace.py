"""The bursty trace generator (benchmarks/bursty_trace.py) has the properties it states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.harness.benchmarks import load_benchmark

from tritonscale.sim.trace import load_trace

bt = load_benchmark("bursty_trace")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stated_properties(seed: int) -> None:
    cfg = bt.BurstyConfig(duration_s=1800.0, mean_rps=200.0, seed=seed)
    arr = bt.generate(cfg)
    assert np.all(np.diff(arr) >= 0)
    assert arr[0] >= 0 and arr[-1] < cfg.duration_s
    s = bt.stats(arr, cfg.duration_s)
    # Mean rate as asked (360,000 expected arrivals: Poisson noise ~0.2%).
    assert abs(s.mean_rps / cfg.mean_rps - 1.0) < 0.02
    # 10-s peaks >= 10x the mean, and they arrive fast (within 60 s).
    assert s.peak_10s_over_mean >= 10.0
    assert s.fastest_ramp_60s_over_mean >= 8.0
    # On-off: at least one lull, the quietest 30 s well below the mean.
    assert s.min_30s_over_mean < 0.5


def test_seeded() -> None:
    cfg = bt.BurstyConfig(duration_s=600.0, mean_rps=50.0, seed=7)
    a, b = bt.generate(cfg), bt.generate(cfg)
    assert np.array_equal(a, b)
    c = bt.generate(bt.BurstyConfig(duration_s=600.0, mean_rps=50.0, seed=8))
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_rate_profile_is_the_expected_rate() -> None:
    """The profile integrates to mean x duration; bursts sit at burst_peak x the mean."""
    cfg = bt.BurstyConfig(duration_s=1200.0, mean_rps=10.0, seed=3, burst_peak=15.0)
    times, rate = bt.rate_profile(cfg)
    assert float(rate.sum()) * cfg.resolution_s == pytest.approx(12_000.0, rel=1e-9)
    assert float(rate.max()) >= 15.0 * cfg.mean_rps
    assert len(times) == len(rate) == 12_000


def test_mmpp_ramps_are_linear_and_fast() -> None:
    """Without bursts or lulls, level changes ramp over ramp_s (no step, no slower)."""
    cfg = bt.BurstyConfig(duration_s=3600.0, mean_rps=10.0, seed=5, bursts_per_hour=0,
                          lulls_per_hour=0, levels=(0.5, 2.0), ramp_s=40.0,
                          mean_sojourn_s=300.0)
    _, rate = bt.rate_profile(cfg)
    step = np.abs(np.diff(rate))
    lo, hi = float(rate.min()), float(rate.max())
    assert hi / lo == pytest.approx(4.0, rel=1e-6)
    # The largest change per 0.1 s bin is the ramp's slope: (hi - lo) / 40 s * 0.1 s.
    assert float(step.max()) == pytest.approx((hi - lo) / 400.0, rel=1e-6)


def test_csv_round_trip(tmp_path: Path) -> None:
    cfg = bt.BurstyConfig(duration_s=300.0, mean_rps=20.0, seed=2)
    arr = bt.generate(cfg)
    out = tmp_path / "b.csv"
    bt.write_csv(arr, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "TIMESTAMP,ContextTokens,GeneratedTokens"
    assert len(lines) == len(arr) + 1
    back = load_trace(out)
    assert np.allclose(back, arr - arr[0], atol=2e-6)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"BurstyConfig\.burst_s"):
        bt.generate(bt.BurstyConfig(burst_s=(5.0, 8.0)))
    with pytest.raises(ValueError, match=r"BurstyConfig\.mean_rps"):
        bt.generate(bt.BurstyConfig(mean_rps=0.0))
    with pytest.raises(ValueError, match="bursts_per_hour"):
        bt.generate(bt.BurstyConfig(bursts_per_hour=200.0, burst_peak=50.0))


def test_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv"
    assert bt.main(["-o", str(out), "--duration", "600", "--mean-rps", "30"]) == 0
    text = capsys.readouterr().out
    assert "10-s peak" in text and out.exists()
    assert bt.main(["-o", str(out), "--duration", "10"]) == 2

"""benchmarks/bench_cascade.py's statement of when the first burst comes."""

from __future__ import annotations

import numpy as np
from tests.harness.benchmarks import load_benchmark

from tritonscale.sim.engine import SimConfig

bc = load_benchmark("bench_cascade")


def _trace(burst_at: float, minutes: int = 10) -> np.ndarray:
    """10 req/s for ``minutes``, plus 1,000 requests in the 10 s from ``burst_at``."""
    calm = np.arange(0.0, minutes * 60.0, 0.1)
    burst = burst_at + np.arange(1000) * 0.01
    return np.sort(np.concatenate([calm, burst]))


def test_first_burst_in_a_judged_minute_caps_the_minutes_met() -> None:
    # 10 one-minute windows, the first 5 (300 s) warm-up: 5 judged; the burst at
    # 430 s falls in minute 7 (420-480 s), so at most 4 of the 5 can be met.
    msg = bc.unforeseen(_trace(430.0), SimConfig())
    assert "430 s, in judged minute 7" in msg
    assert "at most 4/5 judged minutes (0.800)" in msg


def test_first_burst_in_the_warm_up_is_seen_before_judging() -> None:
    msg = bc.unforeseen(_trace(120.0), SimConfig())
    assert "120 s, in the warm-up (minute 2)" in msg
    assert "5 judged minutes" in msg


def test_no_burst() -> None:
    assert bc.unforeseen(np.arange(0.0, 600.0, 0.1), SimConfig()) == "first burst: none"

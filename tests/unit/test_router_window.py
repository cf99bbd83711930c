"""The cascade router's latency window (data/router/model.py): bounded memory, the same
quantiles as the samples it replaced.

The router's ``model.py`` imports Triton's ``triton_python_backend_utils``, which only
exists inside the Python-backend stub; the window under test does not use it, so the
module is loaded with an empty stand-in under that name (nothing of it is called).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def test_quantiles_match_numpys_on_the_samples_within_half_a_percent(router: Any) -> None:
    rng = np.random.default_rng(4)
    # Latencies of a cascade: most from tier 1 (ms), some from tier 2, a long tail.
    values = np.concatenate((rng.gamma(4.0, 2_000.0, 40_000), rng.gamma(3.0, 30_000.0, 6_000),
                             rng.pareto(1.5, 500) * 1e6 + 1e5))
    rng.shuffle(values)
    win = router.LatencyWindow()
    for i, v in enumerate(values):
        win.add(1_000.0 + 50.0 * i / len(values), float(v))  # within 50 s
    got = win.quantiles(win.histogram(1_050.0), router.QUANTILES)
    want = np.quantile(values, router.QUANTILES)
    assert got == pytest.approx(want.tolist(), rel=0.005)


def test_the_window_slides_and_is_nan_when_idle(router: Any) -> None:
    win = router.LatencyWindow()
    assert all(np.isnan(win.quantiles(win.histogram(0.0), (0.5, 0.99))))
    for t in range(100):  # one answer per second, its latency t ms
        win.add(100.0 + t, 1_000.0 * (t + 1))
    # At 199.5 the window holds seconds 140..199: latencies 41..100 ms.
    med = win.quantiles(win.histogram(199.5), (0.5,))[0]
    assert med == pytest.approx(np.median(np.arange(41, 101)) * 1_000.0, rel=0.005)
    # A minute after the last answer nothing is left.
    assert np.isnan(win.quantiles(win.histogram(260.0), (0.5,))[0])


def test_memory_is_bounded_whatever_the_rate(router: Any) -> None:
    win = router.LatencyWindow()
    size = win.counts.nbytes + win.stamp.nbytes
    assert size < 1_000_000
    rng = np.random.default_rng(1)
    for t in np.linspace(0.0, 59.0, 300_000):  # 5,000 answers per second for a minute
        win.add(float(t), float(rng.gamma(4.0, 2_000.0)))
    assert win.counts.nbytes + win.stamp.nbytes == size
    assert int(win.histogram(59.0).sum()) == 300_000

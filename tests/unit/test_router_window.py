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


def _instances(router: Any, directory: str, n: int) -> list[Any]:
    return [router.SharedWindows(directory) for _ in range(n)]


def test_shared_windows_give_the_quantiles_of_the_union(router: Any, tmp_path: Any) -> None:
    """Three instances of one router (flock locks are per open file, so three in one
    process exclude each other as three processes do): the histogram any of them reads
    is the sum of all three windows, whose quantiles are numpy's of the union of the
    samples, whichever instance answered which request, and an idle one changes
    nothing."""
    rng = np.random.default_rng(7)
    fast, slow = rng.gamma(4.0, 2_000.0, 3_000), rng.gamma(3.0, 80_000.0, 700)
    a, b, idle = _instances(router, str(tmp_path), 3)
    for i, v in enumerate(fast):
        a.own.add(500.0 + 30.0 * i / len(fast), float(v))
    for i, v in enumerate(slow):
        b.own.add(500.0 + 30.0 * i / len(slow), float(v))
    union = np.concatenate((fast, slow))
    want = np.quantile(union, router.QUANTILES).tolist()
    for w in (a, b, idle):
        hist = w.histogram(531.0)
        assert int(hist.sum()) == len(union)
        assert w.own.quantiles(hist, router.QUANTILES) == pytest.approx(want, rel=0.005)
    # Not what either instance alone holds (what each exported before).
    own_a = a.own.quantiles(a.own.histogram(531.0), router.QUANTILES)
    assert own_a[3] < 0.5 * want[3]
    # The window slides for the others' seconds too: a minute on, nothing is left.
    assert int(idle.histogram(591.0).sum()) == 0


def test_one_instance_writes_and_another_takes_over_when_it_ends(
    router: Any, tmp_path: Any,
) -> None:
    a, b, c = _instances(router, str(tmp_path), 3)
    assert [w.writer for w in (a, b, c)] == [True, False, False]
    assert not b.try_writer() and not c.try_writer()
    a.own.add(10.0, 1_000.0)
    a.close()  # its stub ends: its slot is removed, the writer lock freed
    assert b.try_writer() and not c.try_writer()
    assert int(b.histogram(10.0).sum()) == 0
    # A new instance takes the free slot; the others see its answers.
    d = router.SharedWindows(str(tmp_path))
    assert not d.writer
    d.own.add(11.0, 2_000.0)
    assert int(b.histogram(11.0).sum()) == int(c.histogram(11.0).sum()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "slot-0.window", "slot-1.window", "slot-2.window", "writer.lock"]
    for w in (b, c, d):  # the model unloads: the last one removes the directory
        w.close()
    assert not tmp_path.exists()


def test_a_new_slot_file_holds_no_seconds(router: Any, tmp_path: Any) -> None:
    """A fresh file is zeros; second 0 must not read as live on a young clock."""
    (w,) = _instances(router, str(tmp_path), 1)
    assert (np.asarray(w.own.stamp) == -1).all()
    assert int(w.histogram(30.0).sum()) == 0

"""Which minutes of a replay meet the latency SLO (pure numpy).

A window meets the SLO when its requests' latency percentile -- the
``ceil(p/100 * n)``-th smallest latency, dropped and timed-out requests counting as
infinitely slow -- is within the target: when at least that many requests were
served within the target. Windows are cut by arrival time from t = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.spec import ScaledModelSpec


@dataclass(frozen=True)
class Windows:
    """Non-empty windows of a trace: arrival index bounds and the number of requests
    within the target each one needs to meet the SLO."""

    start_s: NDArray[np.float64]
    lo: NDArray[np.int64]
    hi: NDArray[np.int64]
    need: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.lo)


def windows(spec: ScaledModelSpec, arrivals: NDArray[np.float64],
            window_s: float = 60.0) -> Windows:
    p = spec.slo.latency.percentile
    if len(arrivals) == 0:
        e = np.empty(0, dtype=np.int64)
        return Windows(np.empty(0), e, e, e)
    idx = (arrivals // window_s).astype(np.int64)
    bounds = np.searchsorted(idx, np.arange(int(idx[-1]) + 2), "left").astype(np.int64)
    lo, hi = bounds[:-1], bounds[1:]
    keep = hi > lo
    w = np.nonzero(keep)[0]
    n = (hi - lo)[keep]
    need = np.array([max(1, math.ceil(p / 100.0 * int(k))) for k in n], dtype=np.int64)
    return Windows(w.astype(np.float64) * window_s, lo[keep], hi[keep], need)


def verdicts(spec: ScaledModelSpec, arrivals: NDArray[np.float64], done: NDArray[np.float64],
             window_s: float = 60.0) -> tuple[Windows, NDArray[np.bool_]]:
    """Every non-empty window, and whether it met the SLO (``done`` final: inf =
    dropped or timed out)."""
    win = windows(spec, arrivals, window_s)
    ok_req = (done - arrivals) * 1000.0 <= spec.slo.latency.target_ms
    good = np.concatenate(([0], np.cumsum(ok_req, dtype=np.int64)))
    met = (good[win.hi] - good[win.lo]) >= win.need
    return win, met

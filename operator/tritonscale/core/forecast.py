"""Short-horizon demand forecast, robust to single spikes, with tiny serialisable state.

Holt's linear smoothing (level + trend, in rps and rps/second) on the observed
arrival rate, with irregular sampling handled through ``dt``. Each residual is
clipped to ``clip`` times the running mean absolute deviation before it moves
the level or the trend, so one spike shifts the forecast by a bounded amount;
the deviation itself is smoothed too and gives the burst allowance.

``forecast(state, horizon)`` = level + max(trend, 0) * horizon + z * deviation,
never below the last observation. Falling trends are not extrapolated:
scale-down is the stabiliser's job, after its window.

State keys (all floats): ``l`` level (rps), ``b`` trend (rps/s), ``s`` mean
absolute deviation (rps), ``t`` time of the last update (s), ``y`` last
observation (rps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForecastConfig:
    alpha: float = 0.5  # level smoothing per reference interval
    beta: float = 0.15  # trend smoothing
    gamma: float = 0.2  # deviation smoothing
    clip: float = 3.0  # residuals beyond clip * deviation are clipped
    z: float = 1.5  # burst allowance in deviations
    ref_interval_s: float = 15.0


DEFAULT = ForecastConfig()


def _f(state: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    v = state.get(key, default)
    return float(v) if isinstance(v, (int, float)) else default


def update(
    state: Mapping[str, Any] | None, rps: float, now: float, cfg: ForecastConfig = DEFAULT,
    persisted: float | None = None, burst_factor: float = 2.0, held: float | None = None,
) -> dict[str, float]:
    """Fold one observation into the forecast state (returns a new dict).

    ``persisted``: the highest rate that has lasted recently
    (:func:`.burst.persisted_level`; None: unknown). An observation above
    ``burst_factor x persisted`` and beyond the clip band is a burst until it
    lasts, not a level: the forecaster folds in the larger of ``persisted`` and its
    own prediction instead, so the burst moves neither the level, the trend nor the
    deviation. (Clipped, a 12x burst still moved the level by a step that doubled
    each interval with the deviation: the look-ahead followed a 30-s burst by its
    third step.) A ramp within ``burst_factor`` of what lasted, or one the forecast
    already follows, is folded in as it is.

    ``held``: the rate held for the persistence time up to now (the lowest of it).
    A level the rate has held above the forecast's is taken as the level at once,
    without a trend: a step that has lasted is no ramp to extrapolate (Holt
    climbing to it by clipped residuals built a trend that kept the look-ahead
    above the step for minutes).

    A lull (an observation below ``persisted / burst_factor`` and beyond the clip
    band) moves the level as usual but not the deviation: it is no noise to allow
    for. (Its residuals, clipped at a multiple of the deviation, doubled it at every
    step of a 90-s lull, and the burst allowance ``z x deviation`` put the
    look-ahead at 1.7x the level the rate came back to.)"""
    y = max(0.0, float(rps))
    if not state or "l" not in state:
        return {"l": y, "b": 0.0, "s": 0.05 * y, "t": now, "y": y}
    level = _f(state, "l")
    trend = _f(state, "b")
    dev = _f(state, "s")
    t0 = _f(state, "t", now)
    dt = max(1e-3, now - t0)
    if held is not None and held > level + trend * dt:
        level = held - trend * dt
    # Smoothing constants scaled to the elapsed time (one reference interval = alpha).
    k = dt / cfg.ref_interval_s
    a = 1.0 - (1.0 - cfg.alpha) ** k
    g = 1.0 - (1.0 - cfg.gamma) ** k
    pred = max(0.0, level + trend * dt)
    floor = max(1e-6, 0.02 * max(pred, y))
    lim = cfg.clip * max(dev, floor)
    if persisted is not None and y > burst_factor * persisted and y > pred + lim:
        y = min(y, max(persisted, pred))
        floor = max(1e-6, 0.02 * max(pred, y))
        lim = cfg.clip * max(dev, floor)
    # A lull below 1 / burst_factor of what lasted is no noise (see the docstring).
    lull = persisted is not None and y < persisted / burst_factor and y < pred - lim
    resid = y - pred
    clipped = max(-lim, min(lim, resid))
    new_level = max(0.0, pred + a * clipped)
    new_trend = (1.0 - cfg.beta) * trend + cfg.beta * (new_level - level) / dt
    new_dev = dev if lull else (1.0 - g) * dev + g * min(abs(resid), 2.0 * lim)
    return {"l": new_level, "b": new_trend, "s": new_dev, "t": now, "y": y}


def forecast(
    state: Mapping[str, Any] | None, horizon_s: float, cfg: ForecastConfig = DEFAULT,
    floor: bool = True,
) -> float:
    """Peak demand (rps) expected over the next ``horizon_s`` seconds; with
    ``floor=False`` the smoothed look-ahead alone, which may be below the last
    observation (one spike moves it by a bounded amount)."""
    if not state or "l" not in state:
        return 0.0
    level = _f(state, "l")
    trend = max(0.0, _f(state, "b"))
    dev = _f(state, "s")
    last = _f(state, "y")
    ahead = level + trend * max(0.0, horizon_s) + cfg.z * dev
    return max(last, ahead) if floor else max(0.0, ahead)

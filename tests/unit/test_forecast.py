"""Forecast: steady, trending, spiky inputs; small JSON state."""

from __future__ import annotations

import json

from tritonscale.core import forecast as fc


def _feed(values: list[float], dt: float = 15.0) -> dict[str, float]:
    st: dict[str, float] | None = None
    for i, v in enumerate(values):
        st = fc.update(st, v, i * dt)
    assert st is not None
    return st


def test_steady_load_forecasts_the_level() -> None:
    st = _feed([1000.0] * 40)
    assert abs(st["l"] - 1000.0) < 1.0
    assert 1000.0 <= fc.forecast(st, 120.0) < 1010.0


def test_rising_load_is_extrapolated_over_the_horizon() -> None:
    ramp = [1000.0 + 10.0 * i for i in range(40)]  # +10 rps per 15 s
    st = _feed(ramp)
    f = fc.forecast(st, 150.0)  # 10 intervals ahead: about +100 rps
    assert f > ramp[-1] + 50.0
    assert f < ramp[-1] + 250.0
    assert fc.forecast(st, 300.0) > fc.forecast(st, 60.0)


def test_falling_load_is_not_extrapolated_below_last_observation() -> None:
    st = _feed([2000.0 - 20.0 * i for i in range(40)])
    assert fc.forecast(st, 300.0) >= 2000.0 - 20.0 * 39


def test_single_spike_moves_the_forecast_a_bounded_amount() -> None:
    base = [1000.0 + (i % 3) * 20.0 for i in range(40)]
    calm = _feed(base)
    spiked = _feed([*base, 10_000.0, *base[:4]])
    # The spike is clipped; four intervals later the forecast is close to the calm one.
    assert fc.forecast(spiked, 120.0) < 1.5 * fc.forecast(calm, 120.0)
    # And the spike itself was not taken at face value as the new level.
    st = _feed([*base, 10_000.0])
    assert st["l"] < 2000.0


def test_burst_allowance_grows_with_variability() -> None:
    calm = _feed([1000.0] * 40)
    noisy = _feed([1000.0 + (300.0 if i % 2 else -300.0) for i in range(40)])
    assert fc.forecast(noisy, 60.0) > fc.forecast(calm, 60.0) + 100.0


def test_state_is_small_and_json_serialisable() -> None:
    st = _feed([float(i) for i in range(100)])
    assert set(st) == {"l", "b", "s", "t", "y"}
    assert len(json.dumps(st)) < 200
    assert fc.forecast(None, 60.0) == 0.0

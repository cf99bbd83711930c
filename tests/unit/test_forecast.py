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


def test_a_burst_beyond_what_lasted_is_not_folded_in() -> None:
    # Level 1,000, then 12x for two steps. Fed as it is, Holt's clipped residuals and
    # the deviation they inflate move the look-ahead to a multiple of the level;
    # beyond 2x what persisted (1,000) the burst is not folded in at all.
    base = [1000.0 + (i % 3) * 20.0 for i in range(40)]
    plain = _feed([*base, 12_000.0, 12_000.0])
    st: dict[str, float] | None = None
    for i, v in enumerate([*base, 12_000.0, 12_000.0]):
        st = fc.update(st, v, i * 15.0, persisted=1000.0, burst_factor=2.0)
    calm = _feed(base)
    assert fc.forecast(plain, 135.0, floor=False) > 2.0 * fc.forecast(calm, 135.0, floor=False)
    assert st is not None
    assert abs(fc.forecast(st, 135.0, floor=False) - fc.forecast(calm, 135.0, floor=False)) < 30.0
    # Within 2x of what persisted (a ramp), the observation is folded in as it is.
    ramp = [*base, 1500.0, 1900.0]
    st = None
    for i, v in enumerate(ramp):
        st = fc.update(st, v, i * 15.0, persisted=1000.0, burst_factor=2.0)
    assert st == _feed(ramp)


def test_a_level_held_above_the_forecast_is_taken_without_a_trend() -> None:
    # A step 1,000 -> 4,000, held from its third step: Holt's clipped climb to it
    # built a trend that extrapolated the look-ahead to 7,930 (2x the step) four
    # steps later and kept it above 5,000 for ten more; taken as the level once
    # held, the look-ahead is the level, its noise allowance and a trend that fades.
    seq = [1000.0] * 40 + [4000.0] * 16
    plain: dict[str, float] | None = None
    held: dict[str, float] | None = None
    p_ahead, h_ahead = [], []
    for i, v in enumerate(seq):
        plain = fc.update(plain, v, i * 15.0)
        held = fc.update(held, v, i * 15.0, held=4000.0 if i >= 42 else None)
        p_ahead.append(fc.forecast(plain, 135.0, floor=False))
        h_ahead.append(fc.forecast(held, 135.0, floor=False))
    assert max(p_ahead) > 7500.0 and p_ahead[-1] > 5000.0
    assert all(4000.0 <= x < 4700.0 for x in h_ahead[42:])
    assert h_ahead[-1] < h_ahead[42]


def test_a_lull_below_what_lasted_is_no_noise() -> None:
    # 1,000 rps that lasted (persisted), then a lull at 50 for six 15-s steps. Each
    # lull residual was clipped at 2 x clip x the deviation and moved it by a fifth
    # of that: the deviation doubled at every step (48 -> 950 rps on the bursty
    # fleet's seed 1), and the burst allowance z x deviation put the look-ahead at
    # 1.7x the level the rate came back to.
    st = None
    for i in range(20):
        st = fc.update(st, 1000.0, 15.0 * i, persisted=1000.0)
    assert st is not None
    dev = st["s"]
    t = 300.0
    lull = dict(st)
    for _ in range(6):
        lull = fc.update(lull, 50.0, t, persisted=1000.0)
        t += 15.0
    assert lull["s"] <= dev  # not noise: the deviation is kept
    assert lull["l"] < st["l"]  # the level still follows it down
    # Without a level that lasted (persisted unknown) it is noise, as before.
    raw = dict(st)
    t = 300.0
    for _ in range(6):
        raw = fc.update(raw, 50.0, t)
        t += 15.0
    assert raw["s"] > 10.0 * dev

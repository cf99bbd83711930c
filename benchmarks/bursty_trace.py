"""Generator of bursty arrival traces: what the bundled Azure trace lacks.

The bundled trace (``examples/traces/azure_llm_conv_2023.csv``) is real but gentle:
its 10-s peaks stay within ~3x its mean and its level moves over minutes. Autoscalers
fail on sharper shapes, so this module generates them, seeded and reproducible.

The rate is built in three layers on a fine grid (``resolution_s``), then arrivals
are drawn from it as a non-homogeneous Poisson process (Poisson counts per grid bin,
uniform positions inside the bin):

1. **MMPP level** (Markov-modulated Poisson process): a continuous-time Markov chain
   over ``levels`` (relative rates), exponential sojourns of mean
   ``mean_sojourn_s``, the next level drawn uniformly among the others. Each change
   ramps linearly over ``ramp_s`` (fast ramps: 0.5x -> 1.8x in 60 s by default).
2. **Lulls** (the "off" of on-off): ``lulls_per_hour`` Poisson-placed periods (at
   least one per trace unless that rate is 0) of ``lull_s`` seconds (uniform in
   the range) during which the level is multiplied by ``lull_level``.
3. **Bursts** (the "on"): ``bursts_per_hour`` Poisson-placed trapezoids (at least
   one per trace unless that rate is 0) with a plateau of ``burst_s`` seconds
   (uniform in the range, >= 10 s) at ``burst_peak`` times the trace's MEAN rate,
   on top of the level, ramping up and down in ``burst_ramp_s``.

Layers 1-2 are then scaled so that the whole trace's expected mean rate is exactly
``mean_rps`` (the bursts keep their height relative to that mean). Hence, up to
Poisson noise, every burst's 10-s window holds at least ``burst_peak`` x the mean:
with the defaults, 10-s peaks are >= 12x the mean (the stated property is >= 10x).

Output: the CSV format of ``examples/traces`` (the Azure LLM trace's
``TIMESTAMP,ContextTokens,GeneratedTokens``, one row per request, microsecond
timestamps from 2023-11-16 00:00:00); the token columns are 0 (tritonscale reads
arrival times only). ``tritonscale simulate --trace out.csv`` replays it as is; do
not add ``--rate-scale`` (it superposes time-shifted copies, which smooths bursts):
generate at the rate you want instead.

    python benchmarks/bursty_trace.py --mean-rps 2000 --duration 1200 --seed 1 -o b.csv

prints the trace's stated properties (mean, 10-s peak / mean, fastest ramp).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

START = np.datetime64("2023-11-16T00:00:00", "us")


@dataclass(frozen=True)
class BurstyConfig:
    """Shape of a generated trace (see the module docstring for each layer)."""

    duration_s: float = 3600.0
    mean_rps: float = 100.0
    seed: int = 0
    levels: tuple[float, ...] = (0.5, 1.0, 1.8)
    mean_sojourn_s: float = 240.0
    ramp_s: float = 60.0
    lulls_per_hour: float = 4.0
    lull_s: tuple[float, float] = (30.0, 90.0)
    lull_level: float = 0.05
    bursts_per_hour: float = 6.0
    burst_s: tuple[float, float] = (10.0, 30.0)
    burst_peak: float = 12.0
    burst_ramp_s: float = 2.0
    resolution_s: float = 0.1

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"BurstyConfig.{name}: {why}")

        if not (math.isfinite(self.duration_s) and self.duration_s >= 60):
            raise bad("duration_s", f"must be >= 60; got {self.duration_s}")
        if not (math.isfinite(self.mean_rps) and self.mean_rps > 0):
            raise bad("mean_rps", f"must be > 0; got {self.mean_rps}")
        if not self.levels or any(not (math.isfinite(x) and x > 0) for x in self.levels):
            raise bad("levels", f"must be positive numbers; got {self.levels}")
        if self.mean_sojourn_s <= 0 or self.ramp_s < 0:
            raise bad("mean_sojourn_s", "must be > 0 (and ramp_s >= 0)")
        if not 0 <= self.lull_level <= 1:
            raise bad("lull_level", f"must be in [0, 1]; got {self.lull_level}")
        if self.lull_s[0] < 0 or self.lull_s[1] < self.lull_s[0]:
            raise bad("lull_s", f"must be a range lo <= hi; got {self.lull_s}")
        if self.burst_s[0] < 10 or self.burst_s[1] < self.burst_s[0]:
            raise bad("burst_s", f"must be a range with lo >= 10 s; got {self.burst_s}")
        if self.burst_peak <= 0 or self.burst_ramp_s < 0:
            raise bad("burst_peak", "must be > 0 (and burst_ramp_s >= 0)")
        if self.lulls_per_hour < 0 or self.bursts_per_hour < 0:
            raise bad("bursts_per_hour", "rates must be >= 0")
        if not 0 < self.resolution_s <= 1:
            raise bad("resolution_s", f"must be in (0, 1]; got {self.resolution_s}")


def _ramp_series(
    times: NDArray[np.float64], changes: list[tuple[float, float, float]], ramp_s: float,
    initial: float,
) -> NDArray[np.float64]:
    """Piecewise-constant values with linear ramps: changes are (t, old, new).

    A ramp starts from the value reached at ``t`` (a change during the previous
    ramp continues from where that ramp got to: no jumps)."""
    out = np.full(len(times), initial, dtype=np.float64)
    for t, _, new in changes:
        i = int(np.searchsorted(times, t, "left"))
        old = float(out[i - 1]) if i > 0 else initial
        if ramp_s > 0:
            frac = np.clip((times - t) / ramp_s, 0.0, 1.0)
        else:
            frac = (times >= t).astype(np.float64)
        after = times >= t
        out[after] = old + (new - old) * frac[after]
    return out


def rate_profile(cfg: BurstyConfig) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(bin start times, expected rate in rps per bin) of the trace ``cfg`` describes."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    dt = cfg.resolution_s
    n = math.ceil(cfg.duration_s / dt)
    times = np.arange(n, dtype=np.float64) * dt
    centre = times + dt / 2

    # 1. MMPP level.
    k = len(cfg.levels)
    state = int(rng.integers(k))
    changes: list[tuple[float, float, float]] = []
    t = 0.0
    while True:
        t += float(rng.exponential(cfg.mean_sojourn_s))
        if t >= cfg.duration_s or k == 1:
            break
        nxt = int(rng.integers(k - 1))
        nxt = nxt if nxt < state else nxt + 1
        changes.append((t, cfg.levels[state], cfg.levels[nxt]))
        state = nxt
    first = changes[0][1] if changes else cfg.levels[state]
    level = _ramp_series(centre, changes, cfg.ramp_s, first)

    # 2. Lulls.
    hours = cfg.duration_s / 3600.0
    lulls = int(rng.poisson(cfg.lulls_per_hour * hours))
    for _ in range(max(1, lulls) if cfg.lulls_per_hour > 0 else 0):
        start = float(rng.uniform(0.0, cfg.duration_s))
        length = float(rng.uniform(*cfg.lull_s))
        level[(centre >= start) & (centre < start + length)] *= cfg.lull_level

    # 3. Bursts (shape only; height relative to the mean, set below).
    bursts = np.zeros(n, dtype=np.float64)
    count = int(rng.poisson(cfg.bursts_per_hour * hours))
    r = cfg.burst_ramp_s
    for _ in range(max(1, count) if cfg.bursts_per_hour > 0 else 0):
        plateau = float(rng.uniform(*cfg.burst_s))
        start = float(rng.uniform(0.0, max(0.0, cfg.duration_s - plateau - 2 * r)))
        up = np.clip((centre - start) / r, 0.0, 1.0) if r > 0 else (centre >= start) * 1.0
        end = start + r + plateau
        down = np.clip((end + r - centre) / r, 0.0, 1.0) if r > 0 else (centre < end) * 1.0
        bursts = np.maximum(bursts, np.minimum(up, down))

    # Scale: total expected arrivals = mean x duration; bursts at burst_peak x mean.
    total = cfg.mean_rps * n * dt
    burst_rate = bursts * cfg.burst_peak * cfg.mean_rps
    rest = total - float(burst_rate.sum()) * dt
    base_sum = float(level.sum()) * dt
    if rest <= 0.1 * total or base_sum <= 0:
        raise ValueError(
            "BurstyConfig.bursts_per_hour: the bursts alone would carry more than 90% of "
            "the trace's arrivals; lower bursts_per_hour, burst_s or burst_peak"
        )
    rate = level * (rest / base_sum) + burst_rate
    return times, rate


def generate(cfg: BurstyConfig) -> NDArray[np.float64]:
    """Sorted arrival times (seconds, in [0, duration)) for ``cfg``."""
    times, rate = rate_profile(cfg)
    rng = np.random.default_rng(cfg.seed + 104_729)
    dt = cfg.resolution_s
    counts = rng.poisson(rate * dt)
    starts = np.repeat(times, counts)
    out: NDArray[np.float64] = starts + rng.uniform(0.0, dt, size=len(starts))
    out = np.minimum(out, cfg.duration_s - 1e-6)
    out.sort(kind="stable")
    return out


def window_rates(arrivals: NDArray[np.float64], window_s: float, duration_s: float
                 ) -> NDArray[np.float64]:
    """Mean rate (rps) in consecutive windows of ``window_s``."""
    n = max(1, math.ceil(duration_s / window_s - 1e-9))
    idx = np.minimum((arrivals // window_s).astype(np.int64), n - 1)
    return np.bincount(idx, minlength=n).astype(np.float64) / window_s


@dataclass(frozen=True)
class TraceStats:
    mean_rps: float
    peak_10s_over_mean: float
    # Largest rise of the 10-s rate (x the mean) within 60 s, outside bursts included.
    fastest_ramp_60s_over_mean: float
    min_30s_over_mean: float


def stats(arrivals: NDArray[np.float64], duration_s: float) -> TraceStats:
    """The properties this generator states, measured on an arrival array."""
    mean = len(arrivals) / duration_s
    r10 = window_rates(arrivals, 10.0, duration_s)
    r30 = window_rates(arrivals, 30.0, duration_s)
    rise = 0.0
    for lag in range(1, 7):  # 10..60 s later
        if len(r10) > lag:
            rise = max(rise, float(np.max(r10[lag:] - r10[:-lag])))
    return TraceStats(
        mean_rps=mean,
        peak_10s_over_mean=float(r10.max()) / mean if mean else 0.0,
        fastest_ramp_60s_over_mean=rise / mean if mean else 0.0,
        min_30s_over_mean=float(r30.min()) / mean if mean else 0.0,
    )


def write_csv(arrivals: NDArray[np.float64], path: str | Path) -> None:
    """Write the ``examples/traces`` CSV format (see the module docstring)."""
    us = np.round(arrivals * 1e6).astype(np.int64).astype("timedelta64[us]")
    stamps = np.datetime_as_string(START + us, unit="us")
    with Path(path).open("w", newline="") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        chunk = 200_000
        for i in range(0, len(stamps), chunk):
            part = np.char.replace(stamps[i:i + chunk], "T", " ")
            fh.write("".join(f"{s},0,0\n" for s in part.tolist()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = BurstyConfig()
    ap.add_argument("-o", "--output", required=True, help="CSV file to write")
    ap.add_argument("--duration", type=float, default=d.duration_s, help="seconds")
    ap.add_argument("--mean-rps", type=float, default=d.mean_rps)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--bursts-per-hour", type=float, default=d.bursts_per_hour)
    ap.add_argument("--burst-peak", type=float, default=d.burst_peak,
                    help="burst plateau in multiples of the mean rate")
    ap.add_argument("--lulls-per-hour", type=float, default=d.lulls_per_hour)
    ap.add_argument("--ramp", type=float, default=d.ramp_s, help="level ramp seconds")
    a = ap.parse_args(argv)
    cfg = BurstyConfig(
        duration_s=a.duration, mean_rps=a.mean_rps, seed=a.seed,
        bursts_per_hour=a.bursts_per_hour, burst_peak=a.burst_peak,
        lulls_per_hour=a.lulls_per_hour, ramp_s=a.ramp,
    )
    try:
        arr = generate(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_csv(arr, a.output)
    s = stats(arr, cfg.duration_s)
    print(f"{a.output}: {len(arr):,} requests over {cfg.duration_s:g} s; mean "
          f"{s.mean_rps:,.1f} rps; 10-s peak {s.peak_10s_over_mean:.1f}x the mean; fastest "
          f"60-s rise {s.fastest_ramp_60s_over_mean:.1f}x the mean; quietest 30 s "
          f"{s.min_30s_over_mean:.2f}x the mean")
    print("config: " + ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

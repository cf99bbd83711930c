"""Run policies on a trace and summarise the outcome.

Metrics (one dict per policy):

* ``requests``: arrivals in the (scaled) trace; ``dropped``: arrivals never
  served (no Ready replica, or queued on a preempted replica); ``timed_out``:
  arrivals whose client gave up while they were still queued
  (``--client-timeout``, default 30 s). Both count as misses everywhere.
* ``slo_attainment``: fraction of all requests (dropped count as misses)
  served within the latency target.
* ``windows_met``: fraction of non-empty 1-minute windows (by arrival time)
  after the warm-up whose observed latency percentile (dropped and timed-out
  requests count as infinitely slow) is within the target;
  ``warmup_windows_met`` the same for the ``warmup_windows`` windows that
  start inside the first ``warmup_s`` seconds (``--warmup``), reported apart:
  the replay starts from the fleet the policy plans for the trace's first
  minute, Ready at once, but its signal windows and forecasts are still empty.
* ``cost_usd`` over the replay; ``mean_cost_per_hour`` = cost / duration.
* ``p50_ms, p95_ms, p99_ms`` over served requests.
* ``accuracy``: expected accuracy served (a cascade's per request at the threshold
  the router ran; one variant's, or the Ready replicas' mean, otherwise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.cascade import run_accuracy, run_cascade
from tritonscale.sim.engine import Policy, SimConfig, SimRun, Simulator, StepRecord
from tritonscale.sim.policies import (
    POLICIES,
    HPAConfig,
    HPAPolicy,
    KPAPolicy,
    OraclePolicy,
    StaticPeakPolicy,
    TritonscalePolicy,
    initial_rate,
)
from tritonscale.sim.trace import per_window_rate


@dataclass
class PolicyResult:
    summary: dict[str, Any]
    run: SimRun


def summarize(
    spec: ScaledModelSpec,
    run: SimRun,
    policy: str,
    window_s: float = 60.0,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    slo = spec.slo.latency
    lat = (run.done - run.arrivals) * 1000.0  # inf = dropped
    n = len(lat)
    served = lat[np.isfinite(lat)]
    timed_out = int(np.count_nonzero(run.timed_out))
    dropped = n - len(served) - timed_out
    within = int(np.count_nonzero(lat <= slo.target_ms))
    # Per-window percentile; dropped count as +inf.  Windows that start inside the
    # warm-up are counted apart.
    met = 0
    windows = 0
    wmet = 0
    wwindows = 0
    if n:
        idx = (run.arrivals // window_s).astype(np.int64)
        bounds = np.searchsorted(idx, np.arange(idx[-1] + 2), "left")
        for w in range(len(bounds) - 1):
            a, b = bounds[w], bounds[w + 1]
            if b <= a:
                continue
            seg = lat[a:b]
            # Finite inf-aware percentile: rank of the percentile among sorted values.
            k = max(0, math.ceil(slo.percentile / 100.0 * len(seg)) - 1)
            ok = float(np.partition(seg, k)[k]) <= slo.target_ms
            if w * window_s < warmup_s:
                wwindows += 1
                wmet += ok
            else:
                windows += 1
                met += ok

    def pct(q: float) -> float:
        return round(float(np.percentile(served, q)), 3) if len(served) else math.nan

    hours = run.duration_s / 3600.0
    return {
        "policy": policy,
        "requests": int(n),
        "slo_attainment": round(within / n, 5) if n else 1.0,
        "windows_met": round(met / windows, 5) if windows else 1.0,
        "warmup_s": warmup_s,
        "warmup_windows": wwindows,
        "warmup_windows_met": round(wmet / wwindows, 5) if wwindows else 1.0,
        "cost_usd": round(run.cost_usd, 4),
        "mean_cost_per_hour": round(run.cost_usd / hours, 4) if hours > 0 else 0.0,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "dropped": int(dropped),
        "timed_out": timed_out,
        "max_replicas": max((sum(s.desired.values()) for s in run.steps), default=0),
        "accuracy": _round(run_accuracy(spec, run), 5),
    }


def _round(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


def make_policy(
    name: str,
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    hpa: HPAConfig | None = None,
    variant: str | None = None,
    pool: str | None = None,
    config: SimConfig | None = None,
) -> Policy:
    start = initial_rate(arrivals)
    if name == "tritonscale":
        return TritonscalePolicy(spec, start)
    if name == "hpa":
        return HPAPolicy(spec, start, hpa, variant, pool)
    if name == "kpa":
        return KPAPolicy(spec, start, None, variant, pool)
    if name == "static-peak":
        peak = float(per_window_rate(arrivals, 60.0).max()) if len(arrivals) else 0.0
        return StaticPeakPolicy(spec, peak, variant, pool)
    if name == "oracle":
        return OraclePolicy(spec, arrivals, config)
    if name == "foresight":
        horizon = max((p.startup_seconds for p in spec.node_pools), default=0.0)
        return OraclePolicy(spec, arrivals, config, horizon, "foresight")
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def run_policy(
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    name: str,
    config: SimConfig | None = None,
    hpa: HPAConfig | None = None,
    variant: str | None = None,
    pool: str | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> PolicyResult:
    cfg = config or SimConfig()
    if name == "oracle":
        cfg = SimConfig(
            **{**cfg.__dict__, "startup_override_s": 0.0},
        )
    if name == "tritonscale" and spec.cascade is not None:
        crun, secs = run_cascade(spec, arrivals, initial_rate(arrivals), cfg)
        summary = summarize(spec, crun, name, cfg.slo_window_s, cfg.warmup_s)
        summary["sim_seconds"] = round(secs, 2)
        return PolicyResult(summary, crun)
    policy = make_policy(name, spec, arrivals, hpa, variant, pool, cfg)
    sim = Simulator(spec, arrivals, cfg)
    t0 = time.perf_counter()
    run = sim.run(policy, on_step)
    elapsed = time.perf_counter() - t0
    summary = summarize(spec, run, name, cfg.slo_window_s, cfg.warmup_s)
    summary["sim_seconds"] = round(elapsed, 2)
    return PolicyResult(summary, run)

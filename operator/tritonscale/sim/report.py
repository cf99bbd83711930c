"""Run policies on a trace and summarise the outcome.

Metrics (one dict per policy):

* ``requests``: arrivals in the (scaled) trace; ``dropped``: arrivals never
  served (no Ready replica, or queued on a preempted replica); ``timed_out``:
  arrivals whose client gave up while they were still queued
  (``--client-timeout``; default the spec's ``scaling.clientTimeoutSeconds``, else
  30 s), whether Triton then dropped or computed them (``--abandoned``). Both
  count as misses everywhere.
* ``slo_attainment``: fraction of all requests (dropped count as misses)
  served within the latency target.
* ``windows_met``: fraction of non-empty 1-minute windows (by arrival time)
  after the warm-up whose observed latency percentile (dropped and timed-out
  requests count as infinitely slow) is within the target;
  ``warmup_windows_met`` the same for the ``warmup_windows`` windows that
  start inside the first ``warmup_s`` seconds (``--warmup``), reported apart.
  The replay starts from the policy's steady state on the trace's first minute
  (the engine's pre-roll: fleet Ready, signal windows full, the policy's own
  state settled; the cascade and the two references start from their initial
  plan, Ready); the warm-up minutes are the move from that load to the trace's.
* ``cost_usd`` over the replay (nothing of the pre-roll); ``mean_cost_per_hour``
  = cost / duration.
* ``runs_on``: ``variant@pool`` when the policy used one placement (a baseline:
  the one its sweep chose, see :mod:`.baselines`), ``mix of N`` otherwise;
  ``placements`` lists them; ``sweep`` (baselines) what each candidate did;
  ``note`` (a baseline pinned to a spot pool with ``--baseline-pool`` while the
  spec asks for ``spotProtection``) says that it ignores the protection.
* ``p50_ms, p95_ms, p99_ms`` over served requests.
* ``accuracy``: expected accuracy served (a cascade's per request at the threshold
  the router ran; one variant's, or the Ready replicas' mean, otherwise).
* a cascade's ``fallback`` (fraction of answered requests the router answered with
  tier 1 because its tier-2 call failed or timed out), ``router_peak`` (the most
  requests one tier-1 pod's router held in its tier-1 and tier-2 stages at once, in
  its ``router_threads`` threads per stage or waiting for one) and
  ``router_abandoned`` (requests the router dropped before their tier-1 / tier-2 call
  because their client had gone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.baselines import (
    BASELINES,
    Sweep,
    ignores_spot_protection,
    peak_rate,
    sweep,
    where,
)
from tritonscale.sim.cascade import run_accuracy, run_cascade
from tritonscale.sim.engine import (
    DEFAULT_PREROLL_S,
    Policy,
    SimConfig,
    SimRun,
    Simulator,
    StepRecord,
)
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
from tritonscale.sim.windows import verdicts


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
    # Per-window percentile (sim/windows.py); windows that start inside the warm-up
    # are counted apart.
    win, ok = verdicts(spec, run.arrivals, run.done, window_s)
    warm = win.start_s < warmup_s
    wwindows = int(np.count_nonzero(warm))
    wmet = int(np.count_nonzero(ok & warm))
    windows = len(win) - wwindows
    met = int(np.count_nonzero(ok & ~warm))

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
    """Policy ``name``; a baseline on ``variant``/``pool`` (each defaulting to the
    typical user's choice, :func:`~tritonscale.sim.policies.default_deployment`:
    :func:`run_policy` sweeps for the fair one instead)."""
    start = initial_rate(arrivals)
    if name == "tritonscale":
        return TritonscalePolicy(spec, start)
    if name == "hpa":
        return HPAPolicy(spec, start, hpa, variant, pool)
    if name == "kpa":
        return KPAPolicy(spec, start, None, variant, pool)
    if name == "static-peak":
        return StaticPeakPolicy(spec, peak_rate(arrivals), variant, pool)
    if name == "oracle":
        return OraclePolicy(spec, arrivals, config)
    if name == "foresight":
        horizon = max((p.startup_seconds for p in spec.node_pools), default=0.0)
        return OraclePolicy(spec, arrivals, config, horizon, "foresight")
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def runs_on(run: SimRun) -> tuple[str, list[str]]:
    """Where a replay ran: ``variant@pool`` when on one placement, else ``mix of N``;
    and every placement it used."""
    used = sorted({where(k) for s in run.steps for k, n in s.desired.items() if n > 0})
    if len(used) == 1:
        return used[0], used
    return f"mix of {len(used)}", used


def run_policy(
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    name: str,
    config: SimConfig | None = None,
    hpa: HPAConfig | None = None,
    variant: str | None = None,
    pool: str | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    progress: Callable[[str], Callable[[StepRecord], None] | None] | None = None,
) -> PolicyResult:
    """Replay policy ``name`` on ``arrivals``.

    Every policy but the references (``oracle``, ``foresight``) starts from its
    steady state on the trace's first minute (``SimConfig.preroll_max_s``; None:
    up to :data:`~tritonscale.sim.engine.DEFAULT_PREROLL_S`). A baseline runs on
    its fair (variant, pool), found by :func:`tritonscale.sim.baselines.sweep`,
    unless both ``variant`` and ``pool`` are given. ``progress(label)`` may return
    a step callback for each replay (``on_step`` is used when it is None)."""
    cfg = config or SimConfig()
    reference = name in ("oracle", "foresight")
    pre = cfg.preroll_max_s
    cfg = replace(cfg, preroll_max_s=0.0 if reference else DEFAULT_PREROLL_S if pre is None
                  else pre)
    if name == "oracle":
        cfg = replace(cfg, startup_override_s=0.0)
    if name == "tritonscale" and spec.cascade is not None:
        crun, secs = run_cascade(spec, arrivals, initial_rate(arrivals), cfg)
        summary = summarize(spec, crun, name, cfg.slo_window_s, cfg.warmup_s)
        summary["sim_seconds"] = round(secs, 2)
        summary["fallback"] = _round(crun.fallback, 5)
        summary["router_peak"] = list(crun.router_peak)
        summary["router_threads"] = crun.router_threads
        summary["router_abandoned"] = list(crun.abandoned)
        summary["runs_on"], summary["placements"] = runs_on(crun)
        return PolicyResult(summary, crun)

    def show(label: str) -> Callable[[StepRecord], None] | None:
        return progress(label) if progress is not None else on_step

    t0 = time.perf_counter()
    swept: Sweep | None = None
    if name in BASELINES and not (variant and pool):
        swept = sweep(spec, arrivals, name, cfg, hpa, variant, pool, show)
        run = swept.run
    else:
        policy = make_policy(name, spec, arrivals, hpa, variant, pool, cfg)
        run = Simulator(spec, arrivals, cfg).run(policy, show(name))
    elapsed = time.perf_counter() - t0
    summary = summarize(spec, run, name, cfg.slo_window_s, cfg.warmup_s)
    summary["sim_seconds"] = round(elapsed, 2)
    summary["runs_on"], summary["placements"] = runs_on(run)
    if swept is not None:
        summary["sweep"] = [t.as_dict() for t in swept.tried]
    if name in BASELINES and ignores_spot_protection(spec, pool):
        summary["note"] = (f"runs on spot pool {pool!r} as asked (--baseline-pool), "
                           f"ignoring spec.scaling.spotProtection")
    return PolicyResult(summary, run)

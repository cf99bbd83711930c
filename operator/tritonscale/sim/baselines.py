"""Fair baselines: each one-Deployment baseline on the (variant, pool) that suits it.

``hpa``, ``kpa`` and ``static-peak`` run one variant on one pool. Pinning them to
the most accurate variant on the cheapest on-demand pool (what users typically do)
would credit tritonscale with the variant and pool choice rather than with its
scaling, so by default each baseline runs on the (variant, pool) that is cheapest
for it among those meeting the SLO in as many minutes as it can on this trace,
found by replaying it on every candidate:

* candidates: every variant above the accuracy floor x every pool that has a
  profile for it, whose pool's ``maxReplicas`` can hold the trace's peak minute at
  the SLO (``core/perf.py`` capacity); when none can, all of them. A fair baseline
  meets the constraints the user set, as the oracle does: with
  ``spec.scaling.spotProtection`` (enough on-demand capacity to hold the SLO if
  every spot replica vanished) one Deployment can only keep that capacity on an
  on-demand pool, so spot pools are candidates only without it;
  ``--baseline-variant`` / ``--baseline-pool`` restrict the candidates (both: that
  one, without a sweep); an explicit pool is used as asked, spot included, even
  under ``spotProtection`` (:func:`ignores_spot_protection`);
* verdict: most minutes meeting the SLO after the warm-up, then lowest cost, then
  the order they are tried in: cheapest estimate (replicas for the mean rate x
  price), then most accurate variant.

The sweep gives the same answer as replaying every candidate in full, at a
fraction of the cost:

* candidates that would replay identically -- same variant, same accelerator
  (same profile), same startup and ``maxReplicas``, and no spot preemptions
  telling the pools apart -- are replayed once, on the cheapest price; the others
  cost exactly price-ratio times as much and meet the same minutes;
* candidates are tried cheapest estimate first, and a replay is stopped as soon
  as it cannot win any more: when it has already missed more minutes than the
  best complete one, or missed as many and its cost so far plus the least it
  must still pay (its floor of replicas until the end) reaches that one's cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from tritonscale.core import perf
from tritonscale.core.pricing import replica_price_per_hour
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.engine import (
    DEFAULT_PREROLL_S,
    Key,
    SimConfig,
    SimRun,
    Simulator,
    StepRecord,
)
from tritonscale.sim.policies import (
    HPAConfig,
    HPAPolicy,
    KPAPolicy,
    StaticPeakPolicy,
    initial_rate,
    single_deployment,
)
from tritonscale.sim.trace import per_window_rate
from tritonscale.sim.windows import verdicts, windows

BASELINES = ("hpa", "kpa", "static-peak")


def where(key: Key) -> str:
    return f"{key[0]}@{key[1]}"


@dataclass(frozen=True)
class Tried:
    """One candidate of a sweep. ``missed`` (minutes after the warm-up missing the
    SLO) and ``cost_usd`` are final when ``complete``, lower bounds otherwise."""

    key: Key
    minutes: int
    missed: int
    cost_usd: float
    complete: bool
    note: str

    def as_dict(self) -> dict[str, object]:
        return {
            "runs_on": where(self.key),
            "minutes": self.minutes,
            "missed": self.missed,
            "cost_usd": round(self.cost_usd, 4),
            "complete": self.complete,
            "note": self.note,
        }


@dataclass
class Sweep:
    policy: str
    key: Key
    run: SimRun
    tried: list[Tried]


def peak_rate(arrivals: NDArray[np.float64]) -> float:
    return float(per_window_rate(arrivals, 60.0).max()) if len(arrivals) else 0.0


def ignores_spot_protection(spec: ScaledModelSpec, pool: str | None) -> bool:
    """Whether a baseline pinned to ``pool`` (``--baseline-pool``) runs on spot
    although the spec asks for ``spotProtection`` (the user's choice overrides it)."""
    if not (pool and spec.scaling.spot_protection):
        return False
    try:
        return spec.pool(pool).is_spot
    except KeyError:
        return False


def candidates(
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    variant: str | None = None,
    pool: str | None = None,
) -> list[Key]:
    """The (variant, pool) pairs a one-Deployment baseline is tried on (module doc).

    Raises ValueError naming the choice when ``variant``/``pool`` name nothing, or
    leave no candidate (with ``spotProtection``: no on-demand one)."""
    if variant and pool:
        v, p, _ = single_deployment(spec, variant, pool)
        return [(v.name, p.name)]
    if variant:
        try:
            vs = [spec.variant(variant)]
        except KeyError:
            raise ValueError(f"unknown variant {variant!r}") from None
    else:
        vs = list(spec.eligible_variants())
    if pool:
        try:
            ps = [spec.pool(pool)]
        except KeyError:
            raise ValueError(f"unknown node pool {pool!r}") from None
    else:
        # An explicit pool overrides spotProtection; otherwise it rules out spot.
        protect = spec.scaling.spot_protection
        ps = [p for p in spec.node_pools if not (protect and p.is_spot)]
    pairs = [(v, p, prof) for v in vs for p in ps
             if (prof := v.profile_for(p.accelerator)) is not None]
    if not pairs and not pool and spec.scaling.spot_protection:
        what = (f"variant {variant!r} has" if variant
                else "no variant above the accuracy floor has")
        raise ValueError(f"spec.scaling.spotProtection asks for on-demand capacity, and "
                         f"{what} a profile for an on-demand node pool (--baseline-pool "
                         f"picks a pool anyway)")
    if not pairs:
        what = (f"variant {variant!r}" if variant else f"node pool {pool!r}" if pool
                else "the spec")
        raise ValueError(f"{what}: no variant above the accuracy floor has a profile "
                         f"for any node pool" if not (variant or pool)
                         else f"{what}: no (variant, node pool) pair with a profile")
    peak = peak_rate(arrivals)
    fit = [(v.name, p.name) for v, p, prof in pairs
           if perf.capacity(prof, spec.slo.latency) * p.max_replicas >= peak]
    return fit or [(v.name, p.name) for v, p, _ in pairs]


def make_baseline(
    name: str,
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    key: Key,
    hpa: HPAConfig | None = None,
) -> HPAPolicy | KPAPolicy | StaticPeakPolicy:
    """Baseline ``name`` as one Deployment of ``key``."""
    start = initial_rate(arrivals)
    if name == "hpa":
        return HPAPolicy(spec, start, hpa, key[0], key[1])
    if name == "kpa":
        return KPAPolicy(spec, start, None, key[0], key[1])
    if name == "static-peak":
        return StaticPeakPolicy(spec, peak_rate(arrivals), key[0], key[1])
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def _floor_replicas(policy: HPAPolicy | KPAPolicy | StaticPeakPolicy) -> int:
    """Replicas the policy never goes below (each billed the whole replay)."""
    if isinstance(policy, StaticPeakPolicy):
        return policy.n
    return max(0, policy.cfg.min_replicas)


def estimate(spec: ScaledModelSpec, arrivals: NDArray[np.float64], key: Key) -> float:
    """$/h of enough replicas of ``key`` for the trace's mean rate (the try order)."""
    _v, p, prof = single_deployment(spec, key[0], key[1])
    dur = float(arrivals[-1]) if len(arrivals) else 0.0
    mean = len(arrivals) / dur if dur > 0 else 0.0
    cap = perf.capacity(prof, spec.slo.latency)
    n = max(1, spec.scaling.min_replicas, math.ceil(mean / cap) if cap > 0 else 1)
    return n * replica_price_per_hour(p)


def _replay_class(spec: ScaledModelSpec, key: Key, cfg: SimConfig) -> tuple[object, ...]:
    """Candidates with the same class replay identically but for the price."""
    p = spec.pool(key[1])
    spot = p.is_spot and cfg.preemption_rate_per_hour > 0
    return (key[0], p.accelerator, p.startup_seconds, p.max_replicas,
            p.name if spot else "")


class _Stop(Exception):
    pass


class _Judge:
    """Minutes (after the warm-up) already certain to miss the SLO, during a replay."""

    def __init__(self, spec: ScaledModelSpec, arrivals: NDArray[np.float64],
                 cfg: SimConfig) -> None:
        win = windows(spec, arrivals, cfg.slo_window_s)
        after = win.start_s >= cfg.warmup_s
        self.lo, self.hi, self.need = win.lo[after], win.hi[after], win.need[after]
        self.arr = arrivals
        self.target_s = spec.slo.latency.target_ms / 1000.0
        self.next = 0
        self.missed = 0

    @property
    def minutes(self) -> int:
        return len(self.lo)

    def update(self, sim: Simulator, now: float) -> int:
        """Missed minutes so far, ``now`` in the replay's time (minutes are final in
        order; the first undecided one stops the scan)."""
        while self.next < len(self.lo):
            lo, hi = int(self.lo[self.next]), int(self.hi[self.next])
            if self.arr[lo] >= now:
                break
            done = sim.done[sim.n_pre + lo : sim.n_pre + hi] - sim.t0
            a = self.arr[lo:hi]
            pending = np.isnan(done)
            late = np.count_nonzero(~pending & ~(done - a <= self.target_s))
            late += np.count_nonzero(pending & (now - a > self.target_s))
            if (hi - lo) - late < self.need[self.next]:
                self.missed += 1
            elif pending.any():
                break
            self.next += 1
        return self.missed


def sweep(
    spec: ScaledModelSpec,
    arrivals: NDArray[np.float64],
    name: str,
    cfg: SimConfig,
    hpa: HPAConfig | None = None,
    variant: str | None = None,
    pool: str | None = None,
    progress: Callable[[str], Callable[[StepRecord], None] | None] | None = None,
) -> Sweep:
    """Baseline ``name`` on its fairest (variant, pool) (module doc): the winner's
    complete replay and what was tried. Each replay starts from the baseline's steady
    state (``cfg.preroll_max_s``; None: up to DEFAULT_PREROLL_S)."""
    if cfg.preroll_max_s is None:
        cfg = replace(cfg, preroll_max_s=DEFAULT_PREROLL_S)
    keys = candidates(spec, arrivals, variant, pool)
    acc = {v.name: v.accuracy for v in spec.variants}
    order = sorted(keys, key=lambda k: (estimate(spec, arrivals, k), -acc[k[0]], k))
    classes: dict[tuple[object, ...], list[Key]] = {}
    for k in order:
        classes.setdefault(_replay_class(spec, k, cfg), []).append(k)
    price = {k: replica_price_per_hour(spec.pool(k[1])) for k in order}
    reps = [min(ks, key=lambda k: (price[k], order.index(k))) for ks in classes.values()]
    reps.sort(key=order.index)
    tried: list[Tried] = []
    # The best complete replay so far: (missed minutes, cost, key, run).
    lead: list[tuple[int, float, Key, SimRun]] = []
    for key in reps:
        policy = make_baseline(name, spec, arrivals, key, hpa)
        sim = Simulator(spec, arrivals, cfg)
        judge = _Judge(spec, arrivals, cfg)
        floor_rate = _floor_replicas(policy) * price[key]
        if spec.pool(key[1]).is_spot and cfg.preemption_rate_per_hour > 0:
            floor_rate = 0.0  # its pods are not billed while the pool is down
        show = progress(f"{name} on {where(key)}") if progress else None
        stopped: list[Tried] = []

        def check(rec: StepRecord, sim: Simulator = sim, judge: _Judge = judge,
                  key: Key = key, floor_rate: float = floor_rate,
                  show: Callable[[StepRecord], None] | None = show,
                  stopped: list[Tried] = stopped,
                  interval: float = float(policy.interval_s)) -> None:
            if show is not None:
                show(rec)
            if not lead:
                return
            best = lead[0]
            t1 = min(rec.t + interval, sim.end_t - sim.t0)
            missed = judge.update(sim, t1)
            cost_lb = sim.cost_usd + floor_rate * max(0.0, sim.end_t - sim.t0 - t1) / 3600.0
            if missed > best[0] or (missed >= best[0] and cost_lb >= best[1]):
                why = ("already missed more minutes than" if missed > best[0]
                       else "would cost at least as much as")
                stopped.append(Tried(key, judge.minutes, missed, cost_lb, False,
                                     f"stopped at {t1 / 60:.1f} min: {why} "
                                     f"{where(best[2])}"))
                raise _Stop

        if lead and lead[0][0] == 0:
            best = lead[0]
            dur = float(arrivals[-1]) if len(arrivals) else 0.0
            if floor_rate * dur / 3600.0 >= best[1]:
                tried.append(Tried(key, judge.minutes, 0, floor_rate * dur / 3600.0, False,
                                   f"not run: its floor of replicas costs at least as much "
                                   f"as {where(best[2])}"))
                continue
        try:
            run = sim.run(policy, check)
        except _Stop:
            tried.append(stopped[0])
            continue
        win, ok = verdicts(spec, run.arrivals, run.done, cfg.slo_window_s)
        after = win.start_s >= cfg.warmup_s
        missed = int(np.count_nonzero(after & ~ok))
        tried.append(Tried(key, int(np.count_nonzero(after)), missed, run.cost_usd, True,
                           "replayed"))
        if not lead or (missed, run.cost_usd) < lead[0][:2]:
            lead[:] = [(missed, run.cost_usd, key, run)]
    best = lead[0]
    by_key = {t.key: t for t in tried}
    for ks in classes.values():
        rep = next(k for k in ks if k in by_key)
        t = by_key[rep]
        for k in ks:
            if k == rep:
                continue
            ratio = price[k] / price[rep] if price[rep] > 0 else math.inf
            tried.append(Tried(k, t.minutes, t.missed, t.cost_usd * ratio, t.complete,
                               f"same replay as {where(rep)} at {ratio:.2f}x its price"))
    tried.sort(key=lambda t: order.index(t.key))
    return Sweep(name, best[2], best[3], tried)


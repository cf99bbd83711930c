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
  price), then most accurate variant;
* under spot preemptions, in expectation: a careful user tunes a Deployment
  knowing the pools' preemption *rate*, not where the run's random events will
  fall, so a candidate on a spot pool is judged by its expected missed minutes and
  cost over the preemption process of its pool
  (:func:`tritonscale.sim.engine.preemption_draws`): the world without an event,
  weighted by its exact probability ``exp(-rate x duration)``, plus ``DRAWS``
  worlds drawn conditioned on at least one event (seeded by the run's seed), each
  weighted ``(1 - that) / DRAWS`` -- ``1 + DRAWS`` replays. Every spot pool sees
  the same worlds (common random numbers: the verdict between two alike spot pools
  never hinges on which one a draw hit). A candidate on an on-demand pool, which
  no event can touch, needs one replay. The winner is then reported as replayed on
  the run's own draw (one more replay when it is a spot candidate), like every
  other policy.

The sweep gives the same answer as replaying every candidate (in every world) in
full, at a fraction of the cost:

* candidates that would replay identically -- same variant, same accelerator
  (same profile), same startup and ``maxReplicas``, both spot or both not -- are
  replayed once, on the cheapest price; the others cost exactly price-ratio times
  as much and meet the same minutes;
* candidates are tried cheapest estimate first, and a replay is stopped as soon
  as it cannot win any more: when its expected missed minutes so far (the worlds
  done, plus this one's weighted) already exceed the best complete candidate's, or
  equal them and its expected cost so far plus the least it must still pay (its
  floor of replicas until the end, outside its worlds' outages) reaches that one's
  cost.
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
    preemption_draws,
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
# Preemption worlds drawn with at least one event, per spot candidate (module doc).
DRAWS = 4


def where(key: Key) -> str:
    return f"{key[0]}@{key[1]}"


@dataclass(frozen=True)
class Tried:
    """One candidate of a sweep. ``missed`` (minutes after the warm-up missing the
    SLO) and ``cost_usd`` are final when ``complete``, lower bounds otherwise."""

    key: Key
    minutes: int
    missed: float
    cost_usd: float
    complete: bool
    note: str
    # Replays it was judged on: 1, or the preemption worlds of a spot candidate
    # (``missed`` and ``cost_usd`` are then their expectation).
    replays: int = 1

    def as_dict(self) -> dict[str, object]:
        return {
            "runs_on": where(self.key),
            "minutes": self.minutes,
            "missed": round(self.missed, 4),
            "cost_usd": round(self.cost_usd, 4),
            "complete": self.complete,
            "replays": self.replays,
            "note": self.note,
        }


@dataclass
class Sweep:
    """The winner (``key``), its replay on the run's own preemption draw (``run``)
    and what each candidate did (in expectation over the preemption worlds)."""

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
    # Every spot pool is judged on the same preemption worlds (_worlds): spot pools
    # alike but for the price replay identically too.
    return (key[0], p.accelerator, p.startup_seconds, p.max_replicas, _hit(spec, key, cfg))


def _hit(spec: ScaledModelSpec, key: Key, cfg: SimConfig) -> bool:
    """Whether preemptions can hit a Deployment of ``key``."""
    return spec.pool(key[1]).is_spot and cfg.preemption_rate_per_hour > 0


def _worlds(spec: ScaledModelSpec, key: Key, cfg: SimConfig, dur: float,
            draws: int) -> list[tuple[float, SimConfig]]:
    """(weight, config) of each replay a candidate is judged on (module doc)."""
    if not _hit(spec, key, cfg):
        return [(1.0, cfg)]
    return [(w, replace(cfg, preemption_events=ev)) for w, ev in
            preemption_draws([key[1]], cfg.preemption_rate_per_hour, dur, draws, cfg.seed)]


def _up_s(events: tuple[tuple[float, str], ...] | None, outage: float, a: float,
          b: float) -> float:
    """Seconds of [a, b) outside the outages that ``events`` cause (pods of a
    preempted pool are not billed until its outage ends)."""
    if b <= a:
        return 0.0
    down = 0.0
    end = a
    for t, _pool in sorted(events or ()):
        lo, hi = max(t, end), min(t + outage, b)
        if hi > lo:
            down += hi - lo
        end = max(end, t + outage)
    return b - a - down


_EPS = 1e-9


class _Stop(Exception):
    pass


class _Check:
    """Called at every step of one replay of a sweep: raises _Stop (``stopped`` says
    why) once the candidate cannot beat the lead any more (module doc)."""

    def __init__(self, sim: Simulator, judge: _Judge,
                 lead: list[tuple[float, float, Key, SimRun | None]], key: Key,
                 n_worlds: int, j: int, weight: float, got: tuple[float, float],
                 rest: float, floor_rate: float,
                 events: tuple[tuple[float, str], ...] | None, outage: float,
                 interval: float, show: Callable[[StepRecord], None] | None) -> None:
        self.sim, self.judge, self.lead, self.key = sim, judge, lead, key
        self.n_worlds, self.weight, self.got, self.rest = n_worlds, weight, got, rest
        self.floor_rate, self.events, self.outage = floor_rate, events, outage
        self.interval, self.show = interval, show
        self.at = f" in preemption world {j + 1}/{n_worlds}" if n_worlds > 1 else ""
        self.stopped: Tried | None = None

    def __call__(self, rec: StepRecord) -> None:
        if self.show is not None:
            self.show(rec)
        if not self.lead:
            return
        best = self.lead[0]
        sim = self.sim
        end = sim.end_t - sim.t0
        t1 = min(rec.t + self.interval, end)
        missed = self.got[0] + self.weight * self.judge.update(sim, t1)
        left = self.floor_rate * _up_s(self.events, self.outage, t1, end) / 3600.0
        cost_lb = self.got[1] + self.weight * (sim.cost_usd + left) + self.rest
        if missed > best[0] + _EPS or (missed >= best[0] - _EPS and cost_lb >= best[1]):
            why = ("already missed more minutes than" if missed > best[0] + _EPS
                   else "would cost at least as much as")
            self.stopped = Tried(self.key, self.judge.minutes, missed, cost_lb, False,
                                 f"stopped at {t1 / 60:.1f} min{self.at}: {why} "
                                 f"{where(best[2])}", self.n_worlds)
            raise _Stop


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
    draws: int = DRAWS,
) -> Sweep:
    """Baseline ``name`` on its fairest (variant, pool) (module doc): the winner's
    replay on ``cfg``'s own preemption draw, and what was tried (a spot candidate in
    expectation over 1 + ``draws`` preemption worlds). Each replay starts from the
    baseline's steady state (``cfg.preroll_max_s``; None: up to DEFAULT_PREROLL_S)."""
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
    dur = float(arrivals[-1]) + 1e-6 if len(arrivals) else 0.0
    outage = cfg.preemption_outage_s
    tried: list[Tried] = []
    # The best candidate judged in full so far: (expected missed minutes, expected
    # cost, key, its replay when that is the run's own draw).
    lead: list[tuple[float, float, Key, SimRun | None]] = []
    for key in reps:
        policy = make_baseline(name, spec, arrivals, key, hpa)
        worlds = _worlds(spec, key, cfg, dur, draws)
        floor_rate = _floor_replicas(policy) * price[key]
        floors = [floor_rate * _up_s(w_cfg.preemption_events, outage, 0.0, dur) / 3600.0
                  for _w, w_cfg in worlds]
        minutes = _Judge(spec, arrivals, cfg).minutes
        if lead and lead[0][0] <= _EPS:
            best = lead[0]
            floor = sum(w * f for (w, _c), f in zip(worlds, floors, strict=True))
            if floor >= best[1]:
                tried.append(Tried(key, minutes, 0, floor, False,
                                   f"not run: its floor of replicas costs at least as much "
                                   f"as {where(best[2])}", len(worlds)))
                continue
        got_missed = 0.0
        got_cost = 0.0
        last: SimRun | None = None
        stopped: list[Tried] = []
        for j, (weight, w_cfg) in enumerate(worlds):
            policy = make_baseline(name, spec, arrivals, key, hpa)
            sim = Simulator(spec, arrivals, w_cfg)
            judge = _Judge(spec, arrivals, w_cfg)
            rest = sum(w * f for (w, _c), f in zip(worlds[j + 1:], floors[j + 1:], strict=True))
            label = f"{name} on {where(key)}"
            if len(worlds) > 1:
                label += f" (preemption world {j + 1}/{len(worlds)})"
            show = progress(label) if progress else None

            check = _Check(
                sim, judge, lead, key, len(worlds), j, weight, (got_missed, got_cost), rest,
                floor_rate, w_cfg.preemption_events, outage, float(policy.interval_s), show)
            try:
                run = sim.run(policy, check)
            except _Stop:
                assert check.stopped is not None
                stopped.append(check.stopped)
                break
            win, ok = verdicts(spec, run.arrivals, run.done, cfg.slo_window_s)
            after = win.start_s >= cfg.warmup_s
            got_missed += weight * int(np.count_nonzero(after & ~ok))
            got_cost += weight * run.cost_usd
            last = run
        if stopped:
            tried.append(stopped[0])
            continue
        note = ("replayed" if len(worlds) == 1 else
                f"expected over {len(worlds)} preemption worlds (one without an event, "
                f"weighted by its probability {worlds[0][0]:.2f}; {len(worlds) - 1} "
                f"drawn with at least one)")
        tried.append(Tried(key, minutes, got_missed, got_cost, True, note, len(worlds)))
        if not lead or got_missed < lead[0][0] - _EPS or (
                got_missed <= lead[0][0] + _EPS and got_cost < lead[0][1]):
            lead[:] = [(got_missed, got_cost, key, last if len(worlds) == 1 else None)]
    best = lead[0]
    run_own = best[3]
    if run_own is None:
        # A spot winner, judged in expectation: its replay on the run's own draw.
        policy = make_baseline(name, spec, arrivals, best[2], hpa)
        show = progress(f"{name} on {where(best[2])}") if progress else None
        run_own = Simulator(spec, arrivals, cfg).run(policy, show)
    by_key = {t.key: t for t in tried}
    for ks in classes.values():
        rep = next(k for k in ks if k in by_key)
        t = by_key[rep]
        for k in ks:
            if k == rep:
                continue
            ratio = price[k] / price[rep] if price[rep] > 0 else math.inf
            tried.append(Tried(k, t.minutes, t.missed, t.cost_usd * ratio, t.complete,
                               f"same replay as {where(rep)} at {ratio:.2f}x its price",
                               t.replays))
    tried.sort(key=lambda t: order.index(t.key))
    return Sweep(name, best[2], run_own, tried)

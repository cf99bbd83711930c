"""The online correction (the only one): learn how far reality is from the profile.

Profiles are measured once (or copied from published figures); the cluster they
run on differs (other pods on the node, a different driver, a slower storage
path, a mis-measured profile). One bounded factor per (variant, pool) scales
that profile's batch latencies in what the planner sees: above 1 the planner
sees slower replicas and plans more of them, below 1 it gives back capacity the
profile over-stated. There is no separate fleet-wide load multiplier any more
(state versions 1 and 2 had one, ``c``/``loadCorrection``; :mod:`.state` folds
it into these factors on first read).

Each step, for every placement with enough traffic and every replica Ready:

* **what is learnt** is the service-time factor ``f`` at which the performance
  model reproduces the observed latency percentile for the load that placement
  actually received (found by bisection on the model, monotone in ``f``), not
  the raw ratio observed / predicted: near saturation latency is convex in
  service time, so a latency twice the prediction at 80 % utilisation means
  replicas a little slower than profiled, not twice as slow;
* when the signals carry no per-placement latency (a source that only sees the
  whole model), one common multiplier of the current factors is solved from
  the whole model's percentile against the worst placement's prediction at an
  even split, and every running placement learns it;
* updated in log space with an EWMA (``alpha``), so one noisy window cannot
  swing it and over- and under-prediction are treated symmetrically;
* clamped to ``[min_factor, max_factor]``;
* **not learnt from a placement's own signals before it has served for the whole
  signals' window** (``settle_s``, :func:`settle`): its rate is counted over the
  whole window (a pair Ready for 15 s of a 30-s window reads as half its rate), and
  learning it raised a T4 factor from 1.02 to 1.10 in one step when the pair
  came back after a preemption, so the planner ordered a third replica;
* **not learnt while requests queue beyond what the SLO allows**
  (:func:`tritonscale.core.burst.backlog_requests` > 0, from Triton's pending
  count and queue time): that latency is a backlog draining, not slow
  replicas, and learning it inflated every later plan; nor from a percentile
  above the SLO target (the whole model's, or that placement's): Triton's
  pending count and queue time are this instant's, the percentile spans its
  window, which still holds a backlog drained since (the bundled fleet at x1500
  learnt L4 1.10 -> 1.22 from a 2.7-s p95 the step its backlog was gone, and
  ordered 16 T4 cancelled 30 s later); nor where the uncorrected model predicts
  utilisation above ``max_predicted_util``.

Profiles are keyed by accelerator, so two pools with the same accelerator (spot
and on-demand T4, say) share the more pessimistic of their factors.

State is a small JSON-able dict ``{"variant/pool": factor}`` (``correction`` in
:class:`tritonscale.core.state.AutoscalerState`) that the operator persists in
status, so a restart keeps what was learnt; ``simulate`` runs the same update
from the simulator's per-placement signals. Pure code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from tritonscale.core.burst import backlog_requests
from tritonscale.core.spec import BatchPoint, Profile, ScaledModelSpec, Variant
from tritonscale.core.types import Observation, PlacementState, finite_or_none

# predict(variant, pool, rps, ready_replicas, factor) -> (latency percentile ms,
# utilisation) of one placement with its profile's latencies scaled by ``factor``,
# or None when the model cannot say (no profile).
Predictor = Callable[[str, str, float, int, float], tuple[float, float] | None]

BISECT_STEPS = 24
Key = tuple[str, str]
# Per placement: its Ready count and since when it has served (None: since before
# the record began, e.g. a fresh state; such a placement is settled).
ReadySince = Mapping[Key, tuple[int, float | None]]


@dataclass(frozen=True)
class CorrectionSettings:
    alpha: float = 0.2
    min_factor: float = 0.5
    max_factor: float = 3.0
    # Ignore placements receiving less than this many requests/second in total.
    min_rps: float = 1.0
    # Ignore samples where the uncorrected model predicts utilisation above this.
    max_predicted_util: float = 0.9
    # Seconds a placement must have served (had Ready replicas) before its signals
    # are learnt from: the signals' window (the Prometheus source's rate() range,
    # adapters/prometheus.py, and the simulator's latency window: 60 s).
    settle_s: float = 60.0


def key(variant: str, pool: str) -> str:
    return f"{variant}/{pool}"


def _ewma(old: float, target: float, s: CorrectionSettings) -> float:
    old = min(max(old, s.min_factor), s.max_factor)
    target = min(max(target, s.min_factor), s.max_factor)
    new = math.exp((1 - s.alpha) * math.log(old) + s.alpha * math.log(target))
    return min(max(new, s.min_factor), s.max_factor)


def solve_factor(
    latency_at: Callable[[float], float | None], observed_ms: float, s: CorrectionSettings
) -> float | None:
    """The factor in ``[min_factor, max_factor]`` at which ``latency_at(f)`` equals
    ``observed_ms`` (bisection in log space; ``latency_at`` increases with ``f``;
    ``inf`` = saturated). A bound when the observation lies beyond it."""
    lo, hi = math.log(s.min_factor), math.log(s.max_factor)
    at_lo = latency_at(s.min_factor)
    if at_lo is None:
        return None
    if at_lo >= observed_ms:
        return s.min_factor
    at_hi = latency_at(s.max_factor)
    if at_hi is None:
        return None
    if at_hi <= observed_ms:
        return s.max_factor
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        lat = latency_at(math.exp(mid))
        if lat is None:
            return None
        if lat < observed_ms:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def queue_dominated(obs: Observation, target_ms: float) -> bool:
    """Requests wait beyond what a fleet meeting the SLO holds in flight: latency is
    a backlog draining, not the replicas' speed (see the module docstring)."""
    rps = finite_or_none(obs.rps)
    return backlog_requests(
        finite_or_none(obs.pending), finite_or_none(obs.queue_ms), rps or 0.0, target_ms
    ) > 0.0


def settle(
    prev: ReadySince,
    current: Sequence[PlacementState],
    now: float,
    settings: CorrectionSettings = CorrectionSettings(),
) -> tuple[dict[Key, tuple[int, float | None]], frozenset[Key]]:
    """Each current placement's Ready count and since when it has served (its
    clock starts when its Ready count leaves 0, or when it first appears beside
    placements already recorded; with no record at all, None: the history is
    unknown, as after a restart), and the placements that have served for
    ``settle_s``: the only ones whose signals are learnt.

    A placement that served for part of the signals' window has its rate counted
    over all of it (a pair Ready for 15 s of a 30-s window reads as half its rate).
    A count that changes while serving shifts each replica's share by ~1/n; at fleet
    scale counts change nearly every step, and waiting a window after each change
    left the correction nearly blind (bursty fleet at 1/h: 16 -> 13 minutes of 20)."""
    since: dict[Key, tuple[int, float | None]] = {}
    settled: set[Key] = set()
    for p in current:
        if p.desired <= 0 and p.ready <= 0:
            continue
        old = prev.get(p.key)
        t: float | None = now  # starts serving, or new beside recorded placements
        if old is None and not prev:
            t = None
        elif old is not None and (old[0] > 0 or p.ready == 0):
            t = old[1]
        since[p.key] = (p.ready, t)
        if t is None or now - t >= settings.settle_s:
            settled.add(p.key)
    return since, frozenset(settled)


def update(
    factors: Mapping[str, float],
    obs: Observation,
    predict: Predictor,
    target_ms: float,
    settings: CorrectionSettings = CorrectionSettings(),
    settled: Collection[Key] | None = None,
) -> dict[str, float]:
    """One step of the correction (see the module docstring): per placement when the
    signals have per-placement latency, else from the whole model's; nothing is
    learnt while requests queue beyond the SLO, nor from a percentile above the
    target, nor from a placement's own signals when it is not in ``settled``
    (:func:`settle`; None: every placement is)."""
    if queue_dominated(obs, target_ms) or beyond_target(obs.latency_ms, target_ms):
        return {k: float(v) for k, v in factors.items()}
    if obs.per_placement_latency_ms:
        within = {k: v for k, v in obs.per_placement_latency_ms.items()
                  if not beyond_target(v, target_ms)}
        return update_factors(factors, replace(obs, per_placement_latency_ms=within),
                              predict, settings, settled)
    # The whole model's rate counts every request, whichever placement served it.
    return update_from_model(factors, obs, predict, settings)


def beyond_target(latency_ms: float | None, target_ms: float) -> bool:
    """A latency percentile above the SLO target (see the module docstring): the
    window it was measured over holds requests that queued beyond the SLO."""
    lat = finite_or_none(latency_ms)
    return lat is not None and lat > target_ms


def _usable(pred: tuple[float, float] | None, s: CorrectionSettings) -> bool:
    if pred is None:
        return False
    ms, util = pred
    return math.isfinite(ms) and ms > 0 and util <= s.max_predicted_util


def update_factors(
    factors: Mapping[str, float],
    obs: Observation,
    predict: Predictor,
    settings: CorrectionSettings = CorrectionSettings(),
    settled: Collection[Key] | None = None,
) -> dict[str, float]:
    """Per placement: each learns the factor that explains its own latency (only
    those in ``settled``, when given)."""
    out = {k: float(v) for k, v in factors.items()}
    state = {p.key: p for p in obs.current}
    for (variant, pool), lat in obs.per_placement_latency_ms.items():
        rps = obs.per_placement_rps.get((variant, pool))
        p = state.get((variant, pool))
        if rps is None or lat is None or p is None or p.ready <= 0 or rps < settings.min_rps:
            continue
        if p.ready < p.desired:
            continue  # replicas starting: the split and the window say little
        if settled is not None and p.key not in settled:
            continue  # it has not served for the whole signals' window
        if not (math.isfinite(lat) and math.isfinite(rps)) or lat <= 0:
            continue
        n = p.ready
        if not _usable(predict(variant, pool, rps, n, 1.0), settings):
            continue

        def at(f: float, v: str = variant, pl: str = pool, r: float = rps,
               k: int = n) -> float | None:
            pr = predict(v, pl, r, k, f)
            return None if pr is None else pr[0]

        f = solve_factor(at, lat, settings)
        if f is None:
            continue
        k = key(variant, pool)
        out[k] = _ewma(out.get(k, 1.0), f, settings)
    return out


def update_from_model(
    factors: Mapping[str, float],
    obs: Observation,
    predict: Predictor,
    settings: CorrectionSettings = CorrectionSettings(),
) -> dict[str, float]:
    """No per-placement latency: one common multiplier ``g`` of the current factors
    such that the worst placement's prediction (even split over Ready replicas)
    matches the whole model's percentile; every running placement learns ``f x g``.
    Only when every replica is Ready."""
    out = {k: float(v) for k, v in factors.items()}
    lat, rps = finite_or_none(obs.latency_ms), finite_or_none(obs.rps)
    if lat is None or rps is None or lat <= 0 or rps < settings.min_rps:
        return out
    running = [p for p in obs.current if p.desired > 0]
    if not running or any(p.ready < p.desired for p in running):
        return out
    total = sum(p.ready for p in running)
    base = {p.key: out.get(key(p.variant, p.pool), 1.0) for p in running}
    for p in running:
        if not _usable(predict(p.variant, p.pool, rps * p.ready / total, p.ready, 1.0),
                       settings):
            return out

    def worst(g: float) -> float | None:
        w = 0.0
        for p in running:
            pr = predict(p.variant, p.pool, rps * p.ready / total, p.ready, base[p.key] * g)
            if pr is None:
                return None
            w = max(w, pr[0])
        return w

    # g ranges so that every factor can reach either bound.
    lo = settings.min_factor / max(base.values())
    hi = settings.max_factor / min(base.values())
    g = solve_factor(worst, lat, replace(settings, min_factor=lo, max_factor=hi))
    if g is None:
        return out
    for p in running:
        k = key(p.variant, p.pool)
        out[k] = _ewma(out.get(k, 1.0), base[p.key] * g, settings)
    return out


def _scale(profile: Profile, factor: float) -> Profile:
    return replace(
        profile,
        batches=tuple(BatchPoint(b.size, b.latency_ms * factor) for b in profile.batches),
    )


def scaled_profile(profile: Profile, factor: float) -> Profile:
    """``profile`` with its batch latencies scaled by ``factor``."""
    return profile if factor == 1.0 else _scale(profile, factor)


def corrected_spec(spec: ScaledModelSpec, factors: Mapping[str, float]) -> ScaledModelSpec:
    """The spec with each (variant, accelerator) profile scaled by its factor."""
    if not factors:
        return spec
    per_acc: dict[tuple[str, str], float] = {}
    for pool in spec.node_pools:
        for v in spec.variants:
            f = factors.get(key(v.name, pool.name))
            if f is None:
                continue
            k = (v.name, pool.accelerator)
            per_acc[k] = max(per_acc.get(k, 0.0), float(f))
    if not per_acc:
        return spec
    variants: list[Variant] = []
    for v in spec.variants:
        profiles = tuple(
            _scale(p, per_acc[(v.name, p.accelerator)])
            if (v.name, p.accelerator) in per_acc
            else p
            for p in v.profiles
        )
        variants.append(replace(v, profiles=profiles))
    return replace(spec, variants=tuple(variants))

"""Plan a two-tier cascade: the threshold and each tier's (pool, replicas), jointly.

Pure code. Every request is answered by tier 1; the fraction ``e(threshold)`` whose
confidence is below the threshold pays tier 1, the hop and tier 2. So at load L:

* tier-1 load is L, tier-2 load is e x L (``escalated`` from the spec's curve, scaled
  by the online correction of the observed escalation rate, see :func:`correct`);
* the end-to-end latency is the mixture ``(1 - e) T1 + e (T1 + hop + T2)``: its
  percentile is computed from the whole distributions (:func:`mixture_cdf`), not by
  adding percentiles, which is not a bound for the quantile of a sum;
* accuracy(threshold) >= ``slo.minAccuracy`` (a point below the floor is never chosen);
* minimum cost of both tiers, within ``maxCostPerHour`` and the pools' limits (a pool
  serving both tiers shares its ``maxReplicas``; tier 2 gets what tier 1 leaves).

The latency distribution of one replica (:func:`replica_dist`) follows the batcher the
simulator runs (:mod:`tritonscale.core.batcher`, with Triton's prefetch), from the perf
model's mean batch b and busy fraction: a request finds the instance idle (it opens or
joins a batch that waits out the queue delay), or computing a batch of S(b) that it
either joins the prepared next batch of (it arrived before the prepared batch stopped
growing), or misses (it waits one more batch when one was prepared), and then computes
in its own size-biased batch; plus the congestion queue's exponential wait (mean u S(B) /
(2 (1-u) B)). These are independent random parts, convolved numerically, so a mixture
of tiers and replicas gets a real quantile (the perf model's single-tier percentile
adds parts' quantiles instead, a conservative estimate: here that was 40-50 %
pessimistic at the median of a lightly loaded tier and 15 % optimistic at its p99).
A tier's requests are split evenly over its replicas, so a tier's distribution is the
replica-count-weighted mixture of its placements' distributions.

Search (:func:`plan_cascade`): for every point of the curve at or above the floor,
candidate tier plans come from :func:`tritonscale.core.planner.solve` at per-tier
SLOs on a grid (tier 1 gets a share of the budget ``target - hop`` at the SLO
percentile, tier 2 the rest at that or a lower percentile, since only escalated
requests see it); each pair is then checked against the true mixture percentile,
cheapest first, and the cheapest pair that holds wins. Ties go to the more accurate
point. The runner-up is the cheapest alternative at another threshold; the cost of serving
everything without the cascade (the spec's own planner) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tritonscale.core import planner as pl
from tritonscale.core.batcher import TRITON_GROWTH
from tritonscale.core.cascade_spec import Cascade, EscalationPoint
from tritonscale.core.perf import (
    _poisson_quantile,
    batch_latency_ms,
    predict_replica,
)
from tritonscale.core.pricing import mix_cost_per_hour
from tritonscale.core.spec import LatencySLO, Profile, ScaledModelSpec

Key = tuple[str, str]
FloatArray = npt.NDArray[np.float64]

# Tier 1's share of the latency budget (target - hop) when generating candidates.
SPLITS = (0.25, 0.4, 0.55, 0.7, 0.85)
# Percentiles tried for tier 2 (those at or below the SLO's percentile).
TIER2_PERCENTILES = (99.9, 99.0, 98.0, 95.0, 90.0, 80.0, 50.0)
# Quadrature of one replica's distribution: uniform part x exponential part.
_NU = 16
_NW = 64
_NS = 8  # service-time quantiles of the size-biased batch
_TOL = 1e-6


# ------------------------------------------------------------------ distributions


@dataclass(frozen=True)
class Part:
    """One way a request meets the batcher: ``service_ms[i] + width_ms x U(0,1)``, each
    offset with equal probability, the part taken with probability ``weight``."""

    weight: float
    service_ms: tuple[float, ...]
    width_ms: float


@dataclass(frozen=True)
class ReplicaDist:
    """Latency of a request on one replica: one of ``parts`` plus Exp(``mean_wait_ms``)."""

    parts: tuple[Part, ...]
    mean_wait_ms: float

    def quantile_bound(self, q: float) -> float:
        """An upper bound of the q-quantile: the largest part's top plus the wait's
        q-quantile (a mixture's quantile is at most its parts' largest)."""
        q = min(max(q, 0.0), 0.999999)
        top = max(max(p.service_ms) + p.width_ms for p in self.parts if p.weight > 0)
        return top + self.mean_wait_ms * math.log(1 / (1 - q))


def _batch_q(profile: Profile, b: float, q: float) -> float:
    big_b = float(profile.max_batch_size)
    return max(min(big_b, 1.0 + _poisson_quantile(max(b - 1.0, 0.0), q)), b)


Mixture = tuple[tuple[float, ReplicaDist], ...]  # (weight, distribution), weights sum to 1


def replica_dist(profile: Profile, rps: float, growth: float = TRITON_GROWTH
                 ) -> ReplicaDist | None:
    """One replica's latency distribution at ``rps``; None when it is overloaded.

    With the perf model's mean batch b, S = S(b), busy fraction beta, effective queue
    delay d and the batcher's growth g (a prepared batch stops growing at g x S of the
    running one), a Poisson arrival (it sees the time average):

    * finds the instance idle (1 - beta): waits U(0, d), computes in a batch of
      1 + Poisson(lambda d);
    * arrives in the first g of a running batch (beta g): it is in the prepared batch,
      waits the rest of the running one, U((1 - g) S, S);
    * arrives after the prepared batch stopped growing (beta (1 - g)): waits the rest,
      U(0, (1 - g) S), and, when a batch was prepared (probability 1 - e^(-lambda g S)),
      that batch's S too;

    then computes in its own batch, size-biased as in the perf model
    (``max(b, 1 + Poisson(b - 1))``, :data:`_NS` equal-probability quantiles).
    """
    big_b = float(profile.max_batch_size)
    if rps <= 0:
        s1 = batch_latency_ms(profile, 1.0)
        return ReplicaDist((Part(1.0, (s1 + profile.max_queue_delay_ms,), 0.0),), 0.0)
    pt = predict_replica(profile, rps, 50.0)
    if pt.utilisation >= 1.0 or not math.isfinite(pt.latency_ms):
        return None
    lam = rps / 1000.0
    d_eff = min(profile.max_queue_delay_ms, (big_b - 1.0) / lam) if big_b > 1 else 0.0
    s_b = batch_latency_ms(profile, pt.batch)
    beta = min(max(pt.busy, 0.0), 1.0)
    u = pt.utilisation
    mean_wait = u * batch_latency_ms(profile, big_b) / (2.0 * (1.0 - u) * big_b)
    qs = [(i + 0.5) / _NS for i in range(_NS)]
    own = tuple(batch_latency_ms(profile, _batch_q(profile, pt.batch, q)) for q in qs)
    idle = tuple(
        batch_latency_ms(profile, min(big_b, 1.0 + _poisson_quantile(lam * d_eff, q)))
        for q in qs
    )
    g = min(max(growth, 0.0), 1.0)
    prepared = -math.expm1(-lam * g * s_b)
    late = (1.0 - g) * s_b
    parts = (
        Part(1.0 - beta, idle, d_eff),
        Part(beta * g, tuple(late + s for s in own), g * s_b),
        Part(beta * (1.0 - g) * prepared, tuple(s_b + s for s in own), late),
        Part(beta * (1.0 - g) * (1.0 - prepared), own, late),
    )
    return ReplicaDist(tuple(p for p in parts if p.weight > _TOL), mean_wait)


def _cdf(d: ReplicaDist, x: FloatArray) -> FloatArray:
    """P(part + Exp(mean_wait) <= x), vectorised over ``x``."""
    xs = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(xs)
    total = 0.0
    for p in d.parts:
        part = np.zeros_like(xs)
        for s in p.service_ms:
            part += _cdf_part(s, p.width_ms, d.mean_wait_ms, xs)
        out += p.weight * part / len(p.service_ms)
        total += p.weight
    return out / total


def _cdf_part(service: float, c: float, m: float, x: FloatArray) -> FloatArray:
    y = x - service
    pos = np.maximum(y, 0.0)
    if c <= _TOL and m <= _TOL:
        return (y >= 0).astype(np.float64)
    if c <= _TOL:
        return np.where(y > 0, -np.expm1(-pos / m), 0.0)
    if m <= _TOL:
        return np.clip(y / c, 0.0, 1.0)
    inside = pos / c + (m / c) * np.expm1(-pos / m)
    beyond = 1.0 - (m / c) * (np.exp(-np.maximum(pos - c, 0.0) / m) - np.exp(-pos / m))
    return np.where(y <= 0, 0.0, np.where(y < c, inside, beyond))


@lru_cache(maxsize=1)
def _grid() -> tuple[FloatArray, FloatArray]:
    u = (np.arange(_NU) + 0.5) / _NU
    v = (np.arange(_NW) + 0.5) / _NW
    return u, -np.log1p(-v)  # uniform midpoints, unit-exponential quantile midpoints


# Cached per distribution: a cascade search revisits the same few tiers many times.
# Bounded: a sample set holds up to 4 x _NS x _NU x _NW points (0.5 MB), a table 64 kB.
@lru_cache(maxsize=64)
def _samples(d: ReplicaDist) -> tuple[FloatArray, FloatArray]:
    """Quadrature points of one replica's distribution and their weights (sum 1)."""
    u, w = _grid()
    if d.mean_wait_ms <= _TOL:
        w = np.zeros(1)  # no congestion wait: its quadrature points would all coincide
    xs: list[FloatArray] = []
    ws: list[FloatArray] = []
    total = sum(p.weight for p in d.parts)
    for p in d.parts:
        s = np.asarray(p.service_ms)
        pts = (s[:, None, None] + p.width_ms * u[None, :, None]
               + d.mean_wait_ms * w[None, None, :]).ravel()
        xs.append(pts)
        ws.append(np.full(pts.size, p.weight / total / pts.size))
    return np.concatenate(xs), np.concatenate(ws)


_TABLE = 4096  # points of a tabulated CDF (linear interpolation between them)


@lru_cache(maxsize=256)
def _cdf_table(d: ReplicaDist) -> tuple[FloatArray, FloatArray]:
    """``d``'s CDF on a grid up to its 1 - 1e-6 quantile bound, for interpolation: the
    convolution evaluates it at every quadrature point of the other tier."""
    xs = np.linspace(0.0, d.quantile_bound(1.0 - 1e-6), _TABLE)
    return xs, _cdf(d, xs)


def mixture_cdf(x: float, tier1: Mixture, tier2: Mixture, escalated: float,
                hop_ms: float) -> float:
    """P(end-to-end latency <= x) for the cascade (see the module docstring)."""
    xs = np.array([x], dtype=np.float64)
    f1 = sum(w * float(_cdf(d, xs)[0]) for w, d in tier1)
    if escalated <= 0 or not tier2:
        return f1
    f12 = 0.0
    for w1, d1 in tier1:
        pts, wts = _samples(d1)
        rest = x - hop_ms - pts
        for w2, d2 in tier2:
            xs, table = _cdf_table(d2)
            f12 += w1 * w2 * float((wts * np.interp(rest, xs, table, 0.0, 1.0)).sum())
    return (1.0 - escalated) * f1 + escalated * f12


def mixture_percentile(tier1: Mixture, tier2: Mixture, escalated: float, hop_ms: float,
                       percentile: float) -> float:
    """The ``percentile`` of end-to-end latency (ms), by bisection on :func:`mixture_cdf`."""
    q = percentile / 100.0
    hi = max(1.0, max((d.quantile_bound(q) for _, d in tier1), default=1.0))
    if escalated > 0 and tier2:
        hi += hop_ms + max(d.quantile_bound(q) for _, d in tier2)
    while mixture_cdf(hi, tier1, tier2, escalated, hop_ms) < q:
        hi *= 2.0
        if hi > 1e7:
            return math.inf
    lo = 0.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if mixture_cdf(mid, tier1, tier2, escalated, hop_ms) >= q:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-3:
            break
    return hi


def tier_mixture(plan: pl.Plan, profiles: Mapping[Key, Profile], load_rps: float
                 ) -> Mixture | None:
    """A tier's distribution: its replicas share ``load_rps`` evenly. None if overloaded."""
    n = plan.total
    if n == 0:
        return None if load_rps > 0 else ()
    per = load_rps / n
    out: list[tuple[float, ReplicaDist]] = []
    for k, c in plan.counts:
        d = replica_dist(profiles[k], per)
        if d is None:
            return None
        out.append((c / n, d))
    return tuple(out)


# ------------------------------------------------------------------ planning


@dataclass(frozen=True)
class CascadePlan:
    """Both tiers' mixes at one threshold, with the mixture's predicted percentile."""

    point: EscalationPoint
    escalated: float  # corrected fraction escalated
    tier1: pl.Plan
    tier2: pl.Plan
    latency_ms: float
    feasible: bool

    @property
    def cost_per_hour(self) -> float:
        return self.tier1.cost_per_hour + self.tier2.cost_per_hour

    @property
    def counts(self) -> dict[Key, int]:
        out = dict(self.tier1.counts)
        for k, n in self.tier2.counts:
            out[k] = out.get(k, 0) + n
        return out

    def describe(self) -> str:
        return (f"threshold {self.point.threshold:g}: {pl.describe(self.tier1)} -> "
                f"{pl.describe(self.tier2)}")


@dataclass(frozen=True)
class CascadeOutcome:
    chosen: CascadePlan
    within_budget: bool
    binding: str
    runner_up: str
    runner_up_cost: float | None
    without_cascade_cost: float | None  # the spec's own planner, no cascade
    load_rps: float


@dataclass(frozen=True)
class CascadeRequest:
    load_rps: float
    od_load_rps: float = 0.0
    min_replicas: int = 2
    max_replicas: int = 1_000_000
    max_cost_per_hour: float | None = None
    escalation_scale: float = 1.0
    # Points allowed (thresholds); None: every point at or above the floor.
    thresholds: frozenset[float] | None = None


def escalated(point: EscalationPoint, scale: float) -> float:
    return min(1.0, max(0.0, point.escalated * scale))


def tier_candidates(spec: ScaledModelSpec, variant: str, unavailable: Iterable[str],
                    percentile: float, target_ms: float) -> tuple[pl.Combo, ...]:
    """Every (``variant``, pool) with its capacity at a per-tier SLO (no accuracy floor)."""
    sub = replace(
        spec,
        variants=(spec.variant(variant),),
        slo=replace(spec.slo, latency=LatencySLO(percentile, max(target_ms, 1e-3))),
        cascade=None,
    )
    return pl.candidates(sub, unavailable, min_accuracy=0.0)


def candidates(spec: ScaledModelSpec, unavailable: Iterable[str] = ()) -> tuple[pl.Combo, ...]:
    """The combos a spec may run: the planner's, or for a cascade every tier's."""
    cas = spec.cascade
    if cas is None:
        return pl.candidates(spec, unavailable)
    out: list[pl.Combo] = []
    for v in cas.variants():
        out.extend(tier_candidates(spec, v, unavailable, spec.slo.latency.percentile,
                                   spec.slo.latency.target_ms))
    return tuple(out)


def initial_mix(spec: ScaledModelSpec, unavailable: Iterable[str] = ()) -> dict[Key, int]:
    """Before any signal: one replica of each tier on its cheapest usable pool."""
    cas = spec.cascade
    assert cas is not None
    gone = frozenset(unavailable)
    mix: dict[Key, int] = {}
    used: dict[str, int] = {}
    for i, v in enumerate(cas.variants()):
        # A pool's maxReplicas is shared by the tiers (tier 1 on t4-spot, max 1, left
        # no room there for tier 2).
        combos = _reduced(tier_candidates(spec, v, gone, spec.slo.latency.percentile,
                                          spec.slo.latency.target_ms), used)
        if not combos:
            continue
        best = min(combos, key=lambda c: (c.price_per_hour, -c.capacity_rps))
        n = min(max(1, spec.scaling.min_replicas - 1) if i == 0 else 1, best.pool_max)
        mix[best.key] = n
        used[best.pool] = used.get(best.pool, 0) + n
    return mix


def _reduced(combos: Sequence[pl.Combo], used: Mapping[str, int]) -> tuple[pl.Combo, ...]:
    """Combos with each pool's maxReplicas reduced by what another tier uses there."""
    if not used:
        return tuple(combos)
    return tuple(replace(c, pool_max=c.pool_max - used.get(c.pool, 0)) for c in combos
                 if c.pool_max - used.get(c.pool, 0) > 0)


def _profiles(spec: ScaledModelSpec) -> dict[Key, Profile]:
    out: dict[Key, Profile] = {}
    for v in spec.variants:
        for p in spec.node_pools:
            prof = v.profile_for(p.accelerator)
            if prof is not None:
                out[(v.name, p.name)] = prof
    return out


def _pool_use(plan: pl.Plan) -> dict[str, int]:
    used: dict[str, int] = {}
    for (_, pool), n in plan.counts:
        used[pool] = used.get(pool, 0) + n
    return used


def _tier_mins(req: CascadeRequest) -> tuple[int, int]:
    if req.min_replicas <= 0:
        return 0, 0
    return max(1, req.min_replicas - 1), 1


def _pairs_at(spec: ScaledModelSpec, cas: Cascade, point: EscalationPoint, req: CascadeRequest,
              unavailable: frozenset[str], respect_budget: bool
              ) -> list[tuple[float, pl.Plan, pl.Plan]]:
    """Candidate (tier-1 plan, tier-2 plan) pairs at one point, with their cost."""
    slo = spec.slo.latency
    e = escalated(point, req.escalation_scale)
    budget_ms = slo.target_ms - cas.hop_ms
    if budget_ms <= 0:
        return []
    m1, m2 = _tier_mins(req)
    cap = req.max_cost_per_hour if respect_budget else None
    out: dict[tuple[tuple[tuple[Key, int], ...], tuple[tuple[Key, int], ...]],
              tuple[float, pl.Plan, pl.Plan]] = {}
    p2s = [p for p in TIER2_PERCENTILES if p <= slo.percentile] or [slo.percentile]
    if slo.percentile not in p2s:
        p2s.insert(0, slo.percentile)
    for s in SPLITS:
        c1 = tier_candidates(spec, cas.first.variant, unavailable, slo.percentile, s * budget_ms)
        r1 = pl.Request(req.load_rps, req.od_load_rps, m1, max(0, req.max_replicas - m2), cap)
        t1 = pl.solve(c1, r1)
        if t1 is None:
            continue
        used = _pool_use(t1)
        for p2 in p2s:
            c2 = _reduced(tier_candidates(spec, cas.last.variant, unavailable, p2,
                                          (1.0 - s) * budget_ms), used)
            r2 = pl.Request(
                e * req.load_rps, e * req.od_load_rps, m2 if e > 0 or m2 else 0,
                max(0, req.max_replicas - t1.total),
                None if cap is None else cap - t1.cost_per_hour,
            )
            t2 = pl.solve(c2, r2)
            if t2 is None:
                continue
            out[(t1.counts, t2.counts)] = (t1.cost_per_hour + t2.cost_per_hour, t1, t2)
    return sorted(out.values(), key=lambda x: x[0])


def _check(spec: ScaledModelSpec, cas: Cascade, point: EscalationPoint, e: float,
           t1: pl.Plan, t2: pl.Plan, load: float, profiles: Mapping[Key, Profile],
           exact: bool) -> CascadePlan:
    slo = spec.slo.latency
    m1 = tier_mixture(t1, profiles, load)
    m2 = tier_mixture(t2, profiles, e * load)
    if m1 is None or m2 is None or (e > 0 and load > 0 and not m2):
        return CascadePlan(point, e, t1, t2, math.inf, False)
    if not exact:
        ok = mixture_cdf(slo.target_ms, m1, m2, e, cas.hop_ms) >= slo.percentile / 100.0 - 1e-9
        return CascadePlan(point, e, t1, t2, math.nan, ok)
    lat = mixture_percentile(m1, m2, e, cas.hop_ms, slo.percentile)
    return CascadePlan(point, e, t1, t2, lat, lat <= slo.target_ms + 1e-6)


def predicted(spec: ScaledModelSpec, point: EscalationPoint, scale: float,
              mix: Mapping[Key, int], load_rps: float) -> float:
    """The mixture percentile of a deployed mix (tiers told apart by variant)."""
    cas = spec.cascade
    assert cas is not None
    t1 = _mk_plan({k: n for k, n in mix.items() if k[0] == cas.first.variant}, spec)
    t2 = _mk_plan({k: n for k, n in mix.items() if k[0] == cas.last.variant}, spec)
    e = escalated(point, scale)
    return _check(spec, cas, point, e, t1, t2, load_rps, _profiles(spec), True).latency_ms


def holds(spec: ScaledModelSpec, point: EscalationPoint, scale: float,
          mix: Mapping[Key, int], load_rps: float, limit_ms: float) -> bool:
    """Whether ``mix`` keeps the mixture percentile within ``limit_ms`` at ``load_rps``."""
    cas = spec.cascade
    assert cas is not None
    t1 = _mk_plan({k: n for k, n in mix.items() if k[0] == cas.first.variant}, spec)
    t2 = _mk_plan({k: n for k, n in mix.items() if k[0] == cas.last.variant}, spec)
    e = escalated(point, scale)
    profiles = _profiles(spec)
    m1 = tier_mixture(t1, profiles, load_rps)
    m2 = tier_mixture(t2, profiles, e * load_rps)
    if m1 is None or m2 is None or (e > 0 and load_rps > 0 and not m2):
        return False
    if load_rps > 0 and not m1:
        return False
    q = spec.slo.latency.percentile / 100.0
    return mixture_cdf(limit_ms, m1, m2, e, cas.hop_ms) >= q - 1e-9


def _mk_plan(mix: Mapping[Key, int], spec: ScaledModelSpec) -> pl.Plan:
    return pl.Plan(tuple(sorted((k, n) for k, n in mix.items() if n > 0)),
                   mix_cost_per_hour(spec, mix), 0.0, 0.0)


def _best_at(spec: ScaledModelSpec, cas: Cascade, point: EscalationPoint, req: CascadeRequest,
             unavailable: frozenset[str], profiles: Mapping[Key, Profile], respect_budget: bool
             ) -> CascadePlan | None:
    e = escalated(point, req.escalation_scale)
    for _, t1, t2 in _pairs_at(spec, cas, point, req, unavailable, respect_budget):
        got = _check(spec, cas, point, e, t1, t2, req.load_rps, profiles, False)
        if got.feasible:
            return _check(spec, cas, point, e, t1, t2, req.load_rps, profiles, True)
    return None


def _best_effort(spec: ScaledModelSpec, cas: Cascade, point: EscalationPoint,
                 req: CascadeRequest, unavailable: frozenset[str],
                 profiles: Mapping[Key, Profile]) -> CascadePlan:
    """Nothing holds the SLO: the most capacity each tier can get (budget ignored)."""
    slo = spec.slo.latency
    e = escalated(point, req.escalation_scale)
    half = max(slo.target_ms - cas.hop_ms, 1e-3) / 2
    m1, m2 = _tier_mins(req)
    c1 = tier_candidates(spec, cas.first.variant, unavailable, slo.percentile, half)
    r1 = pl.Request(req.load_rps, 0.0, m1, max(1, req.max_replicas - max(1, m2)), None)
    t1 = pl.best_effort(c1, r1, respect_budget=False) or pl.Plan((), 0.0, math.inf, math.inf)
    c2 = _reduced(tier_candidates(spec, cas.last.variant, unavailable, slo.percentile, half),
                  _pool_use(t1))
    r2 = pl.Request(e * req.load_rps, 0.0, m2, max(1, req.max_replicas - t1.total), None)
    t2 = pl.best_effort(c2, r2, respect_budget=False) or pl.Plan((), 0.0, math.inf, math.inf)
    got = _check(spec, cas, point, e, t1, t2, req.load_rps, profiles, True)
    return replace(got, feasible=False)


# Bisection steps of :func:`_most_load` (the held load within ~0.1 % of the best).
MOST_LOAD_STEPS = 10


def _most_load(spec: ScaledModelSpec, cas: Cascade, point: EscalationPoint,
               req: CascadeRequest, unavailable: frozenset[str],
               profiles: Mapping[Key, Profile]) -> CascadePlan | None:
    """Nothing holds the SLO at the load: the plan holding the most load there is.

    Both tiers sized together for the largest load L' <= the request's that some
    plan holds within the pools' limits (budget ignored), found by bisection. Filling
    tier 1 first and giving tier 2 what is left starves tier 2: every escalated
    request then queues, and the cascade holds far less than its pools allow.
    None when not even a tiny load is held.
    """
    def at(load: float) -> CascadePlan | None:
        r = replace(req, load_rps=load, od_load_rps=min(req.od_load_rps, load))
        return _best_at(spec, cas, point, r, unavailable, profiles, False)

    lo = 0.05 * req.load_rps
    best = at(lo)
    if best is None:
        return None
    hi = req.load_rps
    for _ in range(MOST_LOAD_STEPS):
        mid = 0.5 * (lo + hi)
        got = at(mid)
        if got is None:
            hi = mid
        else:
            lo, best = mid, got
    # Judged at the request's load: it does not hold it (the caller reports Infeasible).
    got = _check(spec, cas, point, best.escalated, best.tier1, best.tier2, req.load_rps,
                 profiles, True)
    return replace(got, feasible=False)


def _without_cascade(spec: ScaledModelSpec, req: CascadeRequest, unavailable: frozenset[str]
                     ) -> pl.Plan | None:
    plain = replace(spec, cascade=None)
    combos = pl.candidates(plain, unavailable)
    return pl.solve(combos, pl.Request(req.load_rps, req.od_load_rps, max(req.min_replicas, 0),
                                       req.max_replicas, None))


def plan_cascade(spec: ScaledModelSpec, req: CascadeRequest,
                 unavailable: Iterable[str] = ()) -> CascadeOutcome:
    """The cheapest (threshold, tier-1 mix, tier-2 mix) holding the SLO; explained."""
    cas = spec.cascade
    assert cas is not None, "plan_cascade needs spec.cascade"
    gone = frozenset(unavailable)
    profiles = _profiles(spec)
    floor = spec.slo.min_accuracy
    allowed = [p for p in cas.points if p.accuracy >= floor
               and (req.thresholds is None or p.threshold in req.thresholds)]
    if not allowed:
        allowed = [max(cas.points, key=lambda p: (p.accuracy, -p.escalated))]
    within = True
    found = [b for p in allowed
             if (b := _best_at(spec, cas, p, req, gone, profiles, True)) is not None]
    if not found and req.max_cost_per_hour is not None:
        within = False
        found = [b for p in allowed
                 if (b := _best_at(spec, cas, p, req, gone, profiles, False)) is not None]
    plain = _without_cascade(spec, req, gone)
    plain_cost = plain.cost_per_hour if plain is not None else None
    if not found:
        low = min(allowed, key=lambda p: p.escalated)
        chosen = _most_load(spec, cas, low, req, gone, profiles) or _best_effort(
            spec, cas, low, req, gone, profiles)
        limit = "maxReplicas" if chosen.counts and sum(chosen.counts.values()) >= \
            req.max_replicas else "nodePools[*].maxReplicas"
        return CascadeOutcome(chosen, _in_budget(req, chosen.cost_per_hour), limit, "", None,
                              plain_cost, req.load_rps)
    if spec.slo.priority == "accuracy":
        # Spend what the budget allows on accuracy: the most accurate point that fits.
        found.sort(key=lambda b: (-b.point.accuracy, round(b.cost_per_hour, 9), b.latency_ms))
    else:
        found.sort(key=lambda b: (round(b.cost_per_hour, 9), -b.point.accuracy, b.latency_ms))
    chosen = found[0]
    alts: list[tuple[float, str]] = [(b.cost_per_hour, b.describe()) for b in found[1:]]
    ru_cost, ru_text = min(alts) if alts else (None, "")
    binding = "maxCostPerHour" if not within else _binding(
        spec, cas, chosen, req, gone, profiles)
    return CascadeOutcome(chosen, within, binding, ru_text, ru_cost, plain_cost, req.load_rps)


def _in_budget(req: CascadeRequest, cost: float) -> bool:
    return req.max_cost_per_hour is None or cost <= req.max_cost_per_hour + 1e-9


def _binding(spec: ScaledModelSpec, cas: Cascade, chosen: CascadePlan, req: CascadeRequest,
             gone: frozenset[str], profiles: Mapping[Key, Profile]) -> str:
    """minAccuracy when a point below the floor (less escalation) would be cheaper,
    else the latency SLO (it sets both tiers' replicas)."""
    floor = spec.slo.min_accuracy
    for p in cas.points:
        if p.accuracy >= floor or p.escalated >= chosen.point.escalated:
            continue
        b = _best_at(spec, cas, p, replace(req, thresholds=None), gone, profiles, True)
        if b is not None and b.cost_per_hour < chosen.cost_per_hour - 1e-9:
            return "minAccuracy"
    if req.thresholds is not None and len(req.thresholds) < len(cas.points):
        return "threshold"
    return "latency"


def ready_capacity(spec: ScaledModelSpec, ready: Mapping[Key, int],
                   unavailable: Iterable[str] = (), scale: float = 1.0) -> float:
    """The load (req/s) a cascade's Ready replicas hold at the SLO, as the planner counts.

    Tier 1 takes every request, tier 2 the least escalation the floor allows (the live
    lever sheds to it under pressure): ``min(C1, C2 / e)``, each tier's capacity
    being its Ready replicas x the slowest one's capacity at the latency budget (the
    tier's requests split evenly). The single-variant count would give a cascade no
    capacity at all: its tier-1 variant is below the floor on its own.
    """
    cas = spec.cascade
    assert cas is not None
    slo = spec.slo.latency
    budget = max(slo.target_ms - cas.hop_ms, 1e-3)
    gone = frozenset(unavailable)

    def tier(variant: str) -> float:
        caps = {c.key: c.capacity_rps
                for c in tier_candidates(spec, variant, gone, slo.percentile, budget)}
        mine = [(caps.get(k, 0.0), n) for k, n in ready.items() if k[0] == variant and n > 0]
        if not mine:
            return 0.0
        return sum(n for _, n in mine) * min(c for c, _ in mine)

    floor = spec.slo.min_accuracy
    allowed = [p for p in cas.points if p.accuracy >= floor] or list(cas.points)
    e = min(escalated(p, scale) for p in allowed)
    c1 = tier(cas.first.variant)
    return c1 if e <= 0 else min(c1, tier(cas.last.variant) / e)


def served_accuracy(spec: ScaledModelSpec, mix: Mapping[Key, int]) -> float | None:
    """Expected accuracy of a single-variant mix: requests split evenly over replicas."""
    n = sum(mix.values())
    if n <= 0:
        return None
    acc = 0.0
    for (v, _), c in mix.items():
        try:
            acc += spec.variant(v).accuracy * c / n
        except KeyError:
            return None
    return acc

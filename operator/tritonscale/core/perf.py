"""Performance model: latency at load for one (variant, accelerator) profile.

Pure code. Units: rates in requests/second at the API, milliseconds inside.

The model (checked against the request-level simulator in
``tests/unit/test_perf.py``; tolerances are stated there)
--------------------------------------------------------------------------------
One replica runs one Triton model instance behind Triton's dynamic batcher with
``max_batch_size`` B and ``max_queue_delay`` d. Requests arrive as a Poisson
stream of rate lambda: the Service (kube-proxy) sends each request to a Ready
replica chosen at random, and a random split of a Poisson stream over n
replicas gives each an independent Poisson stream of ``rps / replicas``.

* Service time of a batch of b requests, S(b): piecewise-linear interpolation
  between the profile's measured points, linear extrapolation beyond them
  (through the two nearest points; a single point means no batching gain:
  S(b) = latency * b / size), never below a tenth of the smallest point.
* Batch size: the batcher's fixed point. When the instance frees up it takes
  what has queued; if fewer than B, it waits until the oldest request has
  waited d. So a cycle lasts max(S(b), d_eff) with d_eff = min(d, (B-1)/lambda)
  (the batch fills before the delay expires), and b = clamp(m(S(b)), 1, B),
  solved by iteration, where m is the mean of a Poisson count: n = lambda*S(b)
  arrived during the previous batch, or (probability e^-n) none did and the next
  arrival opens a batch of 1 + lambda*d_eff, plus what arrives while the oldest
  still waits out d_eff (:func:`_mean_batch`). (The former max(1 + lambda*d_eff,
  lambda*S(b)) ignored that n varies: up to a quarter low at 30-55 % load, against
  the simulator and against real Triton.)
* Without congestion a request waits at most one cycle before its batch starts
  (the batch in service, then the batcher's delay) and then computes in its own
  batch, which at the p-th percentile is larger than the mean b: a request lands
  in a batch with probability proportional to the batch's size, and that
  size-biased size is taken as 1 + Poisson(b - 1), whose p-quantile is b_p. The
  percentile-p part is p * max(S(b), d_eff) + S(max(b_p, b)). (With S(b) alone
  the model was 15-25 % optimistic at p95/p99 against the simulator's exact
  batcher under Poisson arrivals; with S(b_p), -7 %..+26 % at 20-90 % of
  saturation on the bundled profiles and the test profiles.)
* Congestion: full batches serve at most mu = B / S(B); with utilisation
  u = lambda / mu the overflow queue behaves like a reflected random walk whose
  steps are (Poisson(u*B) - B) requests per cycle of S(B). Its diffusion
  (Kingman) approximation is exponential with mean u*S(B) / (2*(1-u)*B) in
  time, so the percentile-p queueing wait is that mean times ln(1/(1-p)).
  It grows without bound as u -> 1; at u >= 1 latency is infinite.
* Prefetch: Triton prepares the next batch while the instance computes and that
  batch stops growing part-way (:data:`tritonscale.core.batcher.TRITON_GROWTH`,
  g, measured on real Triton); requests it leaves behind wait one more batch:
  (1 - g) * busy^2 * max(S(b) - d_eff / 2, 0) is added (see predict_replica).
  The batcher itself, the one both this model and the simulator describe, is
  :mod:`tritonscale.core.batcher`.
* The percentile is the sum of the parts (a conservative upper estimate of
  the quantile of a sum).

:func:`capacity` inverts the model: the largest per-replica rate whose
predicted percentile meets the SLO target. It is cached per (profile, SLO), so
the planner's hot path only does arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from tritonscale.core.batcher import TRITON_GROWTH, batch_latency_ms
from tritonscale.core.spec import LatencySLO, Profile

__all__ = [
    "PerfPoint",
    "batch_latency_ms",
    "capacity",
    "max_throughput_rps",
    "predict_latency_ms",
    "predict_replica",
]


def max_throughput_rps(profile: Profile) -> float:
    """Saturation throughput of one replica (full batches back to back)."""
    b = profile.max_batch_size
    return 1000.0 * b / batch_latency_ms(profile, b)


@dataclass(frozen=True)
class PerfPoint:
    """Predicted behaviour of one replica at one arrival rate."""

    rps: float
    batch: float
    cycle_ms: float
    utilisation: float  # lambda / saturation throughput
    busy: float  # fraction of time the instance computes
    latency_ms: float  # at the requested percentile (inf if overloaded)


def _mean_batch(lam: float, s: float, d: float) -> float:
    """Mean batch of a cycle that starts when a batch of compute time ``s`` ends
    (Poisson arrivals at ``lam`` per ms, queue delay ``d``, no cap).

    n = lam*s requests arrived meanwhile (Poisson).  None: the next arrival opens a
    batch that collects lam*d more during the delay.  Some: the batcher still waits
    until the oldest (arrived at T1 after the start, T1 ~ Exp(lam) given T1 < s) has
    waited d, collecting lam*E[(T1 + d - s)+; T1 < s] more.
    """
    n = lam * s
    s0 = max(s - d, 0.0)
    extra = lam * (max(d - s, 0.0) * math.exp(-lam * s0) - d * math.exp(-n))
    extra += math.exp(-lam * s0) - math.exp(-n)
    return n + math.exp(-n) * (1.0 + lam * d) + extra


def _poisson_quantile(mean: float, q: float) -> int:
    """Smallest k with P(Poisson(mean) <= k) >= q."""
    if mean <= 0.0:
        return 0
    k = 0
    p = math.exp(-mean)
    c = p
    while c < q and k < 10_000:
        k += 1
        p *= mean / k
        c += p
    return k


def _fixed_point_batch(profile: Profile, lam: float, d_eff: float, big_b: float) -> float:
    """The batcher's fixed point b = clamp(mean batch given S(b), 1, B).

    Plain iteration from b = 1 climbs monotonically to it but crawls near
    saturation (the map's slope approaches 1), so every third step is an
    Aitken (Steffensen) extrapolation, kept inside [1, B]; the result is checked
    against one more plain step.
    """

    def g(x: float) -> float:
        return min(big_b, max(_mean_batch(lam, batch_latency_ms(profile, x), d_eff), 1.0))

    b = 1.0
    for _ in range(100):
        b1 = g(b)
        if abs(b1 - b) < 1e-7:
            return b1
        b2 = g(b1)
        if abs(b2 - b1) < 1e-7:
            return b2
        den = b2 - 2.0 * b1 + b
        nb = b - (b1 - b) ** 2 / den if abs(den) > 1e-12 else b2
        b = nb if 1.0 <= nb <= big_b and math.isfinite(nb) else b2
    return b


# Equal-probability cells of the running batch's size (gamma approximation) and of
# a request's own batch (normal approximation of 1 + Poisson): K_RUN x K_OWN points.
_K_RUN = 8
_K_OWN = 3
_Z_RUN = tuple(NormalDist().inv_cdf((i + 0.5) / _K_RUN) for i in range(_K_RUN))
_Z_OWN = tuple(NormalDist().inv_cdf((i + 0.5) / _K_OWN) for i in range(_K_OWN))
_GRID = 24  # CDF points per refinement of the quantile...
_PASSES = 3  # ...and refinements (the last one interpolated)


def _gamma_quantile(mean: float, var: float, z: float) -> float:
    """Wilson-Hilferty quantile (standard normal score ``z``) of a gamma law."""
    if var <= 0.0 or mean <= 0.0:
        return mean
    k = mean * mean / var
    t = 1.0 - 1.0 / (9.0 * k) + z * math.sqrt(1.0 / (9.0 * k))
    return (var / mean) * k * max(t, 0.0) ** 3


def _cramer_root(u: float) -> float:
    """x > 0 with u (e^x - 1) = x: the decay rate, per request, of the overflow
    queue's tail (arrivals Poisson(u B) per cycle of B served)."""
    # Both starting values exceed the root (f is convex, f(0) = 0, f'(0) < 0), so
    # Newton descends to it monotonically: the diffusion (Kingman) value, and one
    # that stays finite at light load.
    x = min(2.0 * (1.0 - u) / u, 2.0 * math.log(1.0 / u) + 2.0)
    for _ in range(60):
        slope = u * math.exp(x) - 1.0
        if slope <= 0.0:  # rounding at u -> 1, where the diffusion value is exact
            return x
        nx = x - (u * math.expm1(x) - x) / slope
        if not nx < x:
            return x
        x = nx
    return x


def _batch_latency_array(profile: Profile, b: npt.NDArray[np.float64]
                         ) -> npt.NDArray[np.float64]:
    """:func:`batch_latency_ms` over an array of batch sizes."""
    pts = profile.batches
    floor = 0.1 * pts[0].latency_ms
    if len(pts) == 1:
        return np.maximum(floor, pts[0].latency_ms * np.maximum(b, 1.0) / pts[0].size)
    size = np.array([p.size for p in pts], dtype=np.float64)
    lat = np.array([p.latency_ms for p in pts], dtype=np.float64)
    k = np.clip(np.searchsorted(size, b), 1, len(pts) - 1)
    slope = (lat[k] - lat[k - 1]) / (size[k] - size[k - 1])
    out: npt.NDArray[np.float64] = np.maximum(floor, lat[k - 1] + slope * (b - size[k - 1]))
    return out


def _mixture_quantile(profile: Profile, parts: list[tuple[float, float, float, float, float]],
                      mean_wait: float, p_wait: float, q: float) -> float:
    """q-quantile of a mixture.  Part (weight, shift, width, congested, own) is shift
    + U(0, width) + S(own batch), plus, for a congested part (1.0) with probability
    ``p_wait``, Exp(``mean_wait``); the own batch is 1 + Poisson(own - 1), taken at
    :data:`_K_OWN` equal-probability points (normal approximation)."""
    arr = np.array(parts, dtype=np.float64)
    extra = np.maximum(arr[:, 4] - 1.0, 0.0)[:, None]
    sizes = 1.0 + np.maximum(extra + np.array(_Z_OWN)[None, :] * np.sqrt(extra), 0.0)
    big_b = float(profile.max_batch_size)
    svc = _batch_latency_array(profile, np.minimum(sizes, big_b)).ravel()
    n = _K_OWN
    w = np.repeat(arr[:, 0], n)
    w = w / w.sum()
    sh = np.repeat(arr[:, 1], n) + svc
    c = np.maximum(np.repeat(arr[:, 2], n), 1e-9)
    pc = np.repeat(arr[:, 3], n) * (p_wait if mean_wait > 0.0 else 0.0)
    m = max(mean_wait, 1e-12)
    w_u = (w * (1.0 - pc))[:, None]
    w_e = (w * pc)[:, None]
    sh_c, c_c = sh[:, None], c[:, None]

    def cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        y = x[None, :] - sh_c
        pos = np.maximum(y, 0.0)
        uni = np.minimum(pos / c_c, 1.0)
        inside = pos / c_c + (m / c_c) * np.expm1(-pos / m)
        beyond = 1.0 - (m / c_c) * (np.exp(-np.maximum(y - c_c, 0.0) / m) - np.exp(-pos / m))
        conv = np.where(y <= 0.0, 0.0, np.where(y < c_c, inside, beyond))
        out: npt.NDArray[np.float64] = (w_u * uni + w_e * conv).sum(axis=0)
        return out

    lo = float(sh.min())
    hi = float((sh + c).max()) + (m * math.log(1.0 / (1.0 - q)) if mean_wait > 0 else 0.0)
    f_lo, f_hi = 0.0, 1.0
    for _ in range(_PASSES):
        xs = np.linspace(lo, hi, _GRID)
        f = cdf(xs)
        k = int(np.searchsorted(f, q))
        if k <= 0:
            return lo
        if k >= _GRID:
            return hi
        lo, hi = float(xs[k - 1]), float(xs[k])
        f_lo, f_hi = float(f[k - 1]), float(f[k])
    return lo + (hi - lo) * ((q - f_lo) / (f_hi - f_lo) if f_hi > f_lo else 1.0)


def _latency_ms(profile: Profile, lam: float, q: float, growth: float) -> float:
    """The percentile latency of the module docstring, from scratch (predict_replica
    interpolates a table of it)."""
    big_b = float(profile.max_batch_size)
    d_eff = min(profile.max_queue_delay_ms, (big_b - 1.0) / lam) if big_b > 1 else 0.0
    b = _fixed_point_batch(profile, lam, d_eff, big_b)
    s_b = batch_latency_ms(profile, b)
    busy = min(1.0, lam * s_b / b)
    s_full = batch_latency_ms(profile, big_b)
    u = lam * s_full / big_b

    def svc(n: float) -> float:
        return batch_latency_ms(profile, min(max(n, 1.0), big_b))

    # (weight, shift, width of the uniform wait, congested, mean own batch)
    parts: list[tuple[float, float, float, float, float]] = []
    # Idle instance: the request opens a batch (waits the whole delay) or joins the
    # one forming (waits what is left of it).
    idle = 1.0 - busy
    opened = 1.0 + lam * d_eff
    parts.append((idle / opened, d_eff, 0.0, 0.0, opened))
    parts.append((idle * (1.0 - 1.0 / opened), 0.0, d_eff, 0.0, opened))
    # Busy instance: the running batch's size, duration-biased.
    h = max(0.5, 0.05 * b)
    slope = (svc(b + h) - svc(b - h)) / (2.0 * h) if big_b > 1 else 0.0
    r = min(lam * slope, 0.95)
    runs = [svc(_gamma_quantile(b, b / (1.0 - r * r), z)) for z in _Z_RUN]
    total = sum(runs)
    g = min(max(growth, 0.0), 1.0) if big_b > 1 else 1.0
    for s in runs:
        w = busy * s / total
        g_eff = min(1.0, max(g, d_eff / s))
        # Arrived before the prepared batch stopped growing: in it, dispatched when
        # the running batch ends (or the prepared batch's delay expires).
        parts.append((w * g_eff, max(d_eff, s) - g_eff * s, g_eff * s, 1.0,
                      1.0 + lam * (1.0 - g) * s_b + lam * g * s))
        if g_eff < 1.0:
            # Arrived after it: waits for the rest of the running batch and then the
            # prepared batch (when one formed), and rides in the batch after that.
            nxt = lam * (1.0 - g) * s_b + lam * g * s
            formed = -math.expm1(-nxt)
            late = (1.0 - g_eff) * s
            s_nxt = svc(nxt)
            parts.append((w * (1.0 - g_eff) * formed, s_nxt, late, 1.0,
                          1.0 + lam * late + lam * g * s_nxt))
            parts.append((w * (1.0 - g_eff) * (1.0 - formed), 0.0, late, 1.0,
                          1.0 + lam * late))
    # Overflow queue: exponential with the exact (Cramer) decay rate of the bulk
    # queue's tail; present with the probability that gives it the diffusion
    # (Kingman) mean in excess of one request's share of a cycle.
    x = _cramer_root(u)
    mean_wait = s_full / (big_b * x)
    p_wait = min(1.0, u * u * x / (2.0 * (1.0 - u) * busy)) if busy > 0.0 else 0.0
    return _mixture_quantile(profile, parts, mean_wait, p_wait, q)


# The latency is tabulated per (profile, percentile, growth) over t = -ln(1 - u)
# (log latency is close to linear in t: it grows like 1/(1 - u) near saturation),
# node by node as they are first needed, and interpolated; outside the table it is
# computed directly.
_T_LO = -math.log(1.0 - 0.005)
_T_HI = -math.log(1.0 - 0.995)
_TABLE = 48


@lru_cache(maxsize=16384)
def _table_node(profile: Profile, q: float, growth: float, k: int) -> float:
    """log latency at node ``k`` of the table: u = 1 - exp(-t_k)."""
    t = _T_LO + (_T_HI - _T_LO) * k / (_TABLE - 1)
    lam = max_throughput_rps(profile) / 1000.0 * -math.expm1(-t)
    return math.log(_latency_ms(profile, lam, q, growth))


def predict_replica(
    profile: Profile, rps: float, percentile: float, growth: float = TRITON_GROWTH
) -> PerfPoint:
    """Predict one replica's latency percentile at ``rps`` requests/second
    (``growth``: the batcher's, :data:`tritonscale.core.batcher.TRITON_GROWTH`)."""
    big_b = float(profile.max_batch_size)
    d = profile.max_queue_delay_ms
    lam = max(rps, 0.0) / 1000.0  # requests per ms
    s_full = batch_latency_ms(profile, big_b)
    u = lam * s_full / big_b
    if lam <= 0.0:
        s1 = batch_latency_ms(profile, 1.0)
        return PerfPoint(0.0, 1.0, max(s1, d), 0.0, 0.0, d + s1)
    d_eff = min(d, (big_b - 1.0) / lam) if big_b > 1 else 0.0
    b = _fixed_point_batch(profile, lam, d_eff, big_b)
    s_b = batch_latency_ms(profile, b)
    cycle = max(s_b, d_eff)
    busy = min(1.0, lam * s_b / b)
    if u >= 1.0:
        return PerfPoint(rps, big_b, s_full, u, 1.0, math.inf)
    q = min(max(percentile / 100.0, 0.0), 0.999999)
    t = -math.log1p(-u)
    if _T_LO <= t <= _T_HI:
        x = (t - _T_LO) / (_T_HI - _T_LO) * (_TABLE - 1)
        k = min(int(x), _TABLE - 2)
        lo = _table_node(profile, q, growth, k)
        hi = _table_node(profile, q, growth, k + 1)
        latency = math.exp(lo + (hi - lo) * (x - k))
    else:
        latency = _latency_ms(profile, lam, q, growth)
    return PerfPoint(rps, b, cycle, u, busy, latency)


def predict_latency_ms(profile: Profile, rps: float, replicas: int, percentile: float) -> float:
    """Latency percentile (ms) with ``rps`` split evenly over ``replicas``."""
    if replicas <= 0:
        return math.inf if rps > 0 else 0.0
    return predict_replica(profile, rps / replicas, percentile).latency_ms


def capacity(profile: Profile, slo: LatencySLO) -> float:
    """Largest per-replica rate (rps) whose predicted percentile meets the target."""
    return _capacity(profile, slo.percentile, slo.target_ms)


@lru_cache(maxsize=4096)
def _capacity(profile: Profile, percentile: float, target_ms: float) -> float:
    top = max_throughput_rps(profile)

    def ok(r: float) -> bool:
        return predict_replica(profile, r, percentile).latency_ms <= target_ms

    if not ok(top * 1e-6):
        return 0.0
    # Scan down from saturation (the latency curve need not be monotone at the
    # light-load end, where the batcher's delay dominates), then bisect.
    steps = 200
    lo = 0.0
    hi = top
    for i in range(steps, 0, -1):
        r = top * i / steps
        if ok(r):
            lo = r
            hi = top * min(i + 1, steps) / steps
            break
    else:
        lo, hi = top * 1e-6, top / steps
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo

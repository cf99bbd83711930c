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
* The latency of a request is a mixture over what it finds on arrival (Poisson
  arrivals see time averages), each part a constant plus a uniform wait plus the
  compute time of its own batch; its percentile is the quantile of the mixture
  (solved numerically), not a sum of the parts' percentiles (which overshot:
  +16 %/+11 % at p95/p99 at 80 % of saturation on the real-Triton test's
  profile, +96 % at p50 with max batch 1).  With busy fraction beta = lambda *
  S(b) / b:

  - idle instance (1 - beta): it opens a batch and waits the whole delay d_eff
    (probability 1 / (1 + lambda*d_eff): one opener per batch) or joins the one
    forming and waits U(0, d_eff); its batch is 1 + lambda*d_eff;
  - busy instance (beta): the running batch's size n varies: a batch is what
    arrived during the previous one, n' ~ Poisson(lambda * S(n)), so with slope
    c = S'(b) its variance is b / (1 - (lambda*c)^2) (a branching process with
    immigration), taken as a gamma law at _K_RUN equal-probability points, each
    weighted by its duration S(n) (an arrival lands in a long batch more often).
    Triton prepares the next batch while the instance computes and that batch
    stops growing at g * S(n) (:data:`tritonscale.core.batcher.TRITON_GROWTH`,
    g, measured on real Triton) or when its own delay expires (g_eff = max(g,
    d_eff / S(n))): a request arriving before that rides in it and waits the
    rest of the running batch (and of the delay), U(max(S, d_eff) - g_eff*S,
    max(S, d_eff)); one arriving after waits U(0, (1 - g_eff) S) plus the
    prepared batch's S (when one formed: 1 - e^-m of the time, m its mean
    size), and rides in the batch after that.  A request's own batch is
    1 + Poisson(mean - 1) (size-biased: the request itself is in it), at
    _K_OWN equal-probability points.
* Congestion: full batches serve at most mu = B / S(B); with utilisation
  u = lambda / mu the overflow queue is a reflected random walk with steps of
  (Poisson(u*B) - B) requests per cycle of S(B).  Its tail is exponential with
  the exact (Cramer) decay rate x per request, u (e^x - 1) = x, so a wait of
  mean S(B) / (B x); busy arrivals meet it with the probability that gives the
  diffusion (Kingman) mean in excess of a request's own share of a cycle,
  u^2 S(B) / (2 (1 - u) B), exactly the Pollaczek-Khinchine wait for B = 1.
  It grows without bound as u -> 1; at u >= 1 latency is infinite.
  The batcher itself, the one both this model and the simulator describe, is
  :mod:`tritonscale.core.batcher`.
* Accuracy against that batcher (Poisson, one replica, 20-90 % of saturation,
  18 profiles: every example's, the real test's, max batch 1, long and no
  delay; 432 points): worst |error| 14.6 % at p50, 9.9 % at p95, 11.2 % at p99,
  18 points beyond 10 % (tests/unit/test_perf.py holds a 9-profile grid to
  18 %).  The former sum of the parts' percentiles: 96 %, 29 %, 31 %, 123
  points beyond 10 %.  Nothing in it is fitted to the simulator.
* Cost: the quantile of a 78-part mixture is too slow for the planner's inner
  loop, so it is tabulated (see the comment above :func:`_tabulated_ms`):
  per profile shape (latencies in units of S(B), so the correction factors'
  scaled profiles share a table), delay (10 columns a decade) and logit(u)
  (65 nodes), interpolated: within 0.5 % of the direct computation on 90 % of
  random checks, 2 % on 99 %, 4 % at worst (where a quantile has a kink); nodes
  computed when first needed.  benchmarks/bench_planner.py: decide() p50 as
  before (1.4 ms), p99 7 ms against 4.5-6 ms (first uses of a table column).

:func:`capacity` inverts the model: the largest per-replica rate whose
predicted percentile meets the SLO target. It is cached per (profile, SLO), so
the planner's hot path only does arithmetic.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from tritonscale.core.batcher import TRITON_GROWTH, batch_latency_ms
from tritonscale.core.spec import BatchPoint, LatencySLO, Profile

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
_GRID = 20  # CDF points per refinement of the quantile...
_PASSES = 2  # ...and refinements (the last one interpolated)


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
    u = max(u, 1e-300)
    log_u = math.log(u)
    # Both starting values exceed the root (f is convex, f(0) = 0, f'(0) < 0), so
    # Newton descends to it monotonically: the diffusion (Kingman) value, and one
    # that stays finite at light load (e^(x + ln u) = e (1 - ln u)^2 > x there).
    big = -log_u
    x = min(2.0 * (1.0 - u) / u, big + 2.0 * math.log1p(big) + 1.0)
    for _ in range(80):
        e = math.exp(x + log_u)  # u e^x
        slope = e - 1.0
        if slope <= 0.0:  # rounding at u -> 1, where the diffusion value is exact
            return x
        nx = x - (e - u - x) / slope
        if not 0.0 < nx < x:  # converged (or rounding near u = 1)
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


_Part = tuple[float, float, float, float, float]


def _mixture_quantiles(profile: Profile, mixes: list[tuple[list[_Part], float, float]],
                       q: float) -> list[float]:
    """q-quantile of each mixture (parts, mean_wait, p_wait), vectorised over them.

    Part (weight, shift, width, congested, own) is shift + U(0, width) + S(own batch),
    plus, for a congested part (1.0) with probability p_wait, Exp(mean_wait); the own
    batch is 1 + Poisson(own - 1), taken at :data:`_K_OWN` equal-probability points
    (normal approximation).  Every mixture has the same number of parts."""
    arr = np.array([m[0] for m in mixes], dtype=np.float64)  # (mixes, parts, 5)
    n_mix = arr.shape[0]
    extra = np.maximum(arr[..., 4] - 1.0, 0.0)[..., None]
    sizes = 1.0 + np.maximum(extra + np.array(_Z_OWN) * np.sqrt(extra), 0.0)
    svc = _batch_latency_array(profile, np.minimum(sizes, float(profile.max_batch_size)))
    svc = svc.reshape(n_mix, -1)
    w = np.repeat(arr[..., 0], _K_OWN, axis=1)
    w = w / w.sum(axis=1, keepdims=True)
    sh = np.repeat(arr[..., 1], _K_OWN, axis=1) + svc
    c = np.maximum(np.repeat(arr[..., 2], _K_OWN, axis=1), 1e-9)
    mean_wait = np.array([m[1] for m in mixes])
    p_wait = np.where(mean_wait > 0.0, np.array([m[2] for m in mixes]), 0.0)
    pc = np.repeat(arr[..., 3], _K_OWN, axis=1) * p_wait[:, None]
    m = np.maximum(mean_wait, 1e-12)[:, None, None]
    # With z = min(pos, width), pos = max(x - shift, 0): a uniform part's CDF is z/width,
    # a uniform + exponential part's is z/width - (m/width)(e^-(pos-z)/m - e^-pos/m).
    sh_c, c_c = sh[..., None], c[..., None]
    a_c = (w / c)[..., None]
    e_c = (w * pc * m[..., 0] / c)[..., None]

    def cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        pos = np.maximum(x[:, None, :] - sh_c, 0.0)
        z = np.minimum(pos, c_c)
        tail = np.exp((z - pos) / m) - np.exp(-pos / m)
        out: npt.NDArray[np.float64] = (a_c * z - e_c * tail).sum(axis=1)
        return out

    lo = sh.min(axis=1)
    hi = (sh + c).max(axis=1) + np.where(mean_wait > 0.0, m[:, 0, 0] * math.log(1.0 / (1.0 - q)),
                                         0.0)
    rows = np.arange(n_mix)
    f_lo = np.zeros(n_mix)
    f_hi = np.ones(n_mix)
    frac = np.linspace(0.0, 1.0, _GRID)
    for _ in range(_PASSES):
        xs = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        f = cdf(xs)
        k = np.clip((f < q).sum(axis=1), 1, _GRID - 1)  # f is non-decreasing
        lo, hi = xs[rows, k - 1], xs[rows, k]
        f_lo, f_hi = f[rows, k - 1], f[rows, k]
    span = f_hi - f_lo
    t = np.where(span > 0.0, np.clip((q - f_lo) / np.where(span > 0.0, span, 1.0), 0.0, 1.0),
                 1.0)
    return [float(v) for v in lo + (hi - lo) * t]


def _mixture(profile: Profile, lam: float, growth: float) -> tuple[list[_Part], float, float]:
    """The latency of a request at rate ``lam`` (per ms) as a mixture (see the module
    docstring): its parts, the overflow queue's mean wait and probability."""
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
    parts: list[_Part] = []
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
        # Arrived after it: waits for the rest of the running batch and then the
        # prepared batch (when one formed), and rides in the batch after that.
        nxt = lam * (1.0 - g) * s_b + lam * g * s
        formed = -math.expm1(-nxt)
        late = (1.0 - g_eff) * s
        s_nxt = svc(nxt)
        parts.append((w * (1.0 - g_eff) * formed, s_nxt, late, 1.0,
                      1.0 + lam * late + lam * g * s_nxt))
        parts.append((w * (1.0 - g_eff) * (1.0 - formed), 0.0, late, 1.0, 1.0 + lam * late))
    # Overflow queue: exponential with the exact (Cramer) decay rate of the bulk
    # queue's tail; present with the probability that gives it the diffusion
    # (Kingman) mean in excess of one request's share of a cycle.
    x = _cramer_root(u)
    mean_wait = s_full / (big_b * x)
    p_wait = min(1.0, u * u * x / (2.0 * (1.0 - u) * busy)) if busy > 0.0 else 0.0
    return parts, mean_wait, p_wait


def _latency_ms(profile: Profile, lam: float, q: float, growth: float) -> float:
    """The percentile latency at ``lam`` requests per ms, from scratch."""
    return _mixture_quantiles(profile, [_mixture(profile, lam, growth)], q)[0]


# The latency is tabulated and interpolated.  In the time unit tau = S(B) a profile
# is its shape (B, S(b)/tau) and its delay delta = d/tau, and the latency in ms is
# tau times the shape's latency at delay delta and rate lambda*tau: so a profile
# whose batch latencies are all scaled (as the planner's correction factors do)
# reuses the same table.  The table's axes are t = -ln(1 - u) (log latency is close
# to linear in it: it grows like 1/(1 - u) near saturation) and log delta (delta = 0
# and a first column at _DELTA_0 interpolated linearly); a column (one delta, all
# t) fills its nodes when first needed, each batch of nodes vectorised.  Outside
# the table the latency is computed directly.
_T_LO = math.log(0.001 / (1.0 - 0.001))
_T_HI = math.log(0.995 / (1.0 - 0.995))
_TABLE = 65  # nodes along t
_CHUNK = 12  # nodes computed at once by capacity's scan
_DELTA_0 = 1e-3  # first non-zero delay column (in units of S(B))
_DELTA_STEP = 10.0 ** (1.0 / 10.0)  # ratio between delay columns
_DELTA_COLUMNS = 81  # up to _DELTA_0 * _DELTA_STEP ** 79 (~ 8e4)
_COLUMNS = 8192  # columns kept (least recently used dropped)
_Shape = tuple[int, tuple[tuple[int, float], ...]]
_columns: OrderedDict[tuple[_Shape, float, float, int], list[float | None]] = OrderedDict()
# The operator decides on several threads (its tick workers): a lookup and its LRU
# bump, or an insert and its evictions, must not interleave with another thread's
# eviction (move_to_end of a key just evicted raises KeyError). Filling a column's
# nodes needs no lock: every thread computes the same values.
_columns_lock = threading.Lock()


def _t_node(k: int) -> float:
    return _T_LO + (_T_HI - _T_LO) * k / (_TABLE - 1)


def _u_node(k: int) -> float:
    return 1.0 / (1.0 + math.exp(-_t_node(k)))


def _delta_node(j: int) -> float:
    return 0.0 if j == 0 else _DELTA_0 * _DELTA_STEP ** (j - 1)


def _shape(profile: Profile) -> tuple[_Shape, float]:
    """The profile's shape (latencies in units of S(B), 10 significant digits, so
    that scaled copies coincide) and tau = S(B) in ms."""
    tau = batch_latency_ms(profile, float(profile.max_batch_size))
    pts = tuple((p.size, float(f"{p.latency_ms / tau:.10g}")) for p in profile.batches)
    return (profile.max_batch_size, pts), tau


def _nodes(shape: _Shape, q: float, growth: float, j: int, ks: range) -> list[float]:
    """log of the shape's latency (in units of S(B)) at delay column ``j``, nodes
    ``ks`` along t (node k is at u = 1 - exp(-t_k))."""
    key = (shape, q, growth, j)
    with _columns_lock:
        column = _columns.get(key)
        if column is None:
            column = [None] * _TABLE
            _columns[key] = column
            while len(_columns) > _COLUMNS:
                _columns.popitem(last=False)
        else:
            _columns.move_to_end(key)
    missing = [k for k in ks if column[k] is None]
    if missing:
        prof = Profile("", shape[0], tuple(BatchPoint(b, lat) for b, lat in shape[1]),
                       _delta_node(j))
        top = max_throughput_rps(prof) / 1000.0
        lams = [top * _u_node(k) for k in missing]
        values = _mixture_quantiles(prof, [_mixture(prof, lam, growth) for lam in lams], q)
        for k, v in zip(missing, values, strict=True):
            column[k] = math.log(v)
    return [v for v in (column[k] for k in ks) if v is not None]


def _delta_position(delta: float) -> tuple[int, float] | None:
    """Column j and weight w of the next one, or None beyond the table."""
    if delta <= 0.0:
        return 0, 0.0
    if delta < _DELTA_0:
        return 0, delta / _DELTA_0
    x = math.log(delta / _DELTA_0) / math.log(_DELTA_STEP) + 1.0
    j = int(x)
    if j >= _DELTA_COLUMNS - 1:
        return None if x > _DELTA_COLUMNS - 1 else (_DELTA_COLUMNS - 2, 1.0)
    return j, x - j


def _tabulated_ms(profile: Profile, u: float, q: float, growth: float) -> float | None:
    """The latency at utilisation ``u`` from the table; None outside it."""
    t = math.log(u / (1.0 - u)) if 0.0 < u < 1.0 else math.inf
    if not _T_LO <= t <= _T_HI:
        return None
    shape, tau = _shape(profile)
    pos = _delta_position(profile.max_queue_delay_ms / tau)
    if pos is None:
        return None
    j, wj = pos
    x = (t - _T_LO) / (_T_HI - _T_LO) * (_TABLE - 1)
    k = min(int(x), _TABLE - 2)
    wk = x - k
    a0, a1 = _nodes(shape, q, growth, j, range(k, k + 2))
    v = a0 + (a1 - a0) * wk
    if wj > 0.0:
        b0, b1 = _nodes(shape, q, growth, j + 1, range(k, k + 2))
        v += ((b0 + (b1 - b0) * wk) - v) * wj
    return tau * math.exp(v)


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
    latency = _tabulated_ms(profile, u, q, growth)
    if latency is None:
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
    # The highest rate meeting the target (the latency curve need not be monotone at
    # the light-load end, where the batcher's delay dominates): the table's nodes
    # (rates) from saturation down, then bisection in the segment; above and below
    # the table, a scan of 200 rates and bisection.
    lo = hi = 0.0
    shape, tau = _shape(profile)
    pos = _delta_position(profile.max_queue_delay_ms / tau)
    if pos is not None:
        q = min(max(percentile / 100.0, 0.0), 0.999999)
        columns = (pos[0], pos[0] + 1) if pos[1] > 0.0 else (pos[0],)
        computed = _TABLE  # nodes from here up are computed: in chunks, from the top

        def ensure(k: int) -> None:
            nonlocal computed
            if k < computed:
                start = max(0, k - _CHUNK + 1)
                for j in columns:
                    _nodes(shape, q, TRITON_GROWTH, j, range(start, computed))
                computed = start

        rates = [top * _u_node(k) for k in range(_TABLE)]
        ensure(_TABLE - 2)
        if not ok(rates[-1]):
            for k in range(_TABLE - 2, -1, -1):
                ensure(max(k - 1, 0))
                if ok(rates[k]):
                    lo, hi = rates[k], rates[k + 1]
                    break
    if hi == 0.0:
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

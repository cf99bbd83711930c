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


def _prefetch_ms(growth: float, busy: float, s_b: float, d_eff: float) -> float:
    return (1.0 - growth) * busy * busy * max(s_b - 0.5 * d_eff, 0.0)


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
    # The batch a request at the percentile rides in: the q-quantile of the
    # size-biased batch size, approximated by 1 + Poisson(b - 1).
    b_q = min(big_b, 1.0 + _poisson_quantile(max(b - 1.0, 0.0), q))
    base = q * cycle + batch_latency_ms(profile, max(b_q, b))
    mean_wait = u * s_full / (2.0 * (1.0 - u) * big_b)
    wait = mean_wait * math.log(1.0 / (1.0 - q))
    # Prefetch: a batch prepared while the instance computes stops growing before
    # the instance frees up (TRITON_GROWTH); what it leaves behind waits one more
    # batch.  That happens when the instance is busy as the batch forms and the
    # batch's own delay expired before the freeze: (1 - g) * busy^2 *
    # (S(b) - d_eff / 2), fit against the simulator's exact batcher (-18 %..+26 %
    # at p50, -9 %..+21 % at p95/p99, 20-90 % of saturation, bundled and test
    # profiles; tests/unit/test_perf.py).
    prefetch = _prefetch_ms(growth, busy, s_b, d_eff)
    return PerfPoint(rps, b, cycle, u, busy, base + wait + prefetch)


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

"""Triton's dynamic batcher: the one description the simulator and the model share.

Pure code.  :mod:`tritonscale.sim.engine` runs :func:`serve` on every replica's
queue; :mod:`tritonscale.core.perf` predicts the same batcher in closed form from
the same :class:`Batcher` (parameters from the profile, and the same rule).

The rule (Triton 2.51 ``DynamicBatchScheduler`` with one model instance, no
preferred batch sizes, default queue policy):

* the oldest queued request opens a batch; the batch is dispatched as soon as it
  holds ``max_batch`` requests, or once its oldest request has waited
  ``max_queue_delay`` -- whichever comes first;
* while the instance computes, the batcher prepares the next batch (Triton
  prefetches payloads: up to two per instance wait in the rate limiter's queue)
  and hands it over when the instance frees up.  Triton's code keeps adding
  requests to a prepared payload that has not started executing
  (``GetDynamicBatch`` grows a payload that is neither saturated nor executing);
  measured on Triton 2.51 (``benchmarks/bench_perf_real.py``) that growth stops
  part-way: the latencies fall between "the batch holds everything queued when the
  instance frees up" and "the batch closes when its delay expires, while the
  previous batch runs".  :data:`TRITON_GROWTH` = g says how far: the next batch
  takes the requests that arrived before ``start + g * S`` of the batch running
  when it formed (g = 1: everything until the instance frees; g = 0: nothing
  after the running batch started), and at least what its own delay collected;
* a batch of b takes ``S(b)`` seconds (the profile, :func:`service_table`).

Client patience: a request still waiting (not yet in a running batch) ``timeout``
seconds after it arrived is abandoned by its client.  What Triton then does with it
(``abandoned``, :data:`ABANDONED`), as measured on Triton 2.51 by
``tests/real/test_abandoned_real.py``:

* ``"cancelled"`` (the default): gRPC clients, whose timeout or cancellation cancels
  the request.  A cancelled request still in the batcher's queue leaves it without
  using the instance; but once the batcher has taken it into the batch it prepares
  while the instance computes, it is computed all the same, when that batch starts,
  and only its response is thrown away.  The prepared batch takes its requests from
  the head of the queue when the running batch starts, so under sustained overload
  (queue waits near the timeout) it holds requests that time out before it starts:
  most of the instance's time then goes to clients that have gone (measured: 148 of
  179 computed requests).  Triton prepares up to two batches per instance; this
  model prepares one, so it computes fewer abandoned requests than Triton does;
* ``"rejected"``: a model queue policy (``dynamic_batching { default_queue_policy {
  timeout_action: REJECT default_timeout_microseconds: ... } }``) rejects a request
  still queued at its timeout, and with such a policy Triton prepares no batch
  ahead, so no abandoned request is computed: a request leaves the queue unserved
  if it would start more than ``timeout`` after it arrived.  True when the queue
  timeout is at most the clients' timeout less one batch's compute time;
* ``"computed"``: it stays queued and takes its place in a batch like any other
  request (the instance's time is spent), only its response is thrown away.  That
  is Triton with HTTP clients: a closed connection does not cancel the request.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from tritonscale.core.spec import Profile


def batch_latency_ms(profile: Profile, b: float) -> float:
    """Compute time (ms) of one batch of ``b`` requests on ``profile``.

    Piecewise-linear between the measured points, linear extrapolation beyond them
    (through the two nearest points; a single point means no batching gain), never
    below a tenth of the smallest point."""
    pts = profile.batches
    floor = 0.1 * pts[0].latency_ms
    if len(pts) == 1:
        p = pts[0]
        return max(floor, p.latency_ms * max(b, 1.0) / p.size)
    if b <= pts[0].size:
        lo, hi = pts[0], pts[1]
    elif b >= pts[-1].size:
        lo, hi = pts[-2], pts[-1]
    else:
        k = 1
        while pts[k].size < b:
            k += 1
        lo, hi = pts[k - 1], pts[k]
    slope = (hi.latency_ms - lo.latency_ms) / (hi.size - lo.size)
    return max(floor, lo.latency_ms + slope * (b - lo.size))


def service_table(profile: Profile) -> list[float]:
    """Batch compute time in seconds, indexed by batch size 0..max_batch_size."""
    return [0.0] + [
        batch_latency_ms(profile, b) / 1000.0 for b in range(1, profile.max_batch_size + 1)
    ]


# Fraction of the running batch's compute time during which the prepared next
# batch still grows (see the module docstring).  0.5 reproduces real Triton 2.51's
# p50/p95/p99 on the sleepy test model within the 20 % goal (docs/comparison.md,
# "The performance model against a real Triton"); 1.0 would be the batcher of
# Triton's code comments, 13-26 % optimistic at p50 there.
TRITON_GROWTH = 0.5


@dataclass(frozen=True)
class Batcher:
    """One replica's batcher: max batch B, max queue delay (s), S(b) in seconds."""

    max_batch: int
    delay_s: float
    svc: tuple[float, ...]

    @classmethod
    def of(cls, profile: Profile) -> Batcher:
        return cls(
            profile.max_batch_size,
            profile.max_queue_delay_ms / 1000.0,
            tuple(service_table(profile)),
        )


# What happens to a request whose client gave up while it was queued (module doc).
Abandoned = Literal["cancelled", "rejected", "computed"]
ABANDONED: tuple[Abandoned, ...] = ("cancelled", "rejected", "computed")


class Served(NamedTuple):
    """What :func:`serve` did: the first ``left`` queued requests left the queue."""

    left: int  # requests that left the queue (computed or dropped)
    # per batch below: the batches hold the abandoned that were computed too
    t_free: float  # when the instance frees up
    starts: list[float]  # per batch: dispatch time
    dones: list[float]  # per batch: completion time
    sizes: list[int]  # per batch: requests
    busy_s: float  # compute seconds
    # Positions (in the queue) of requests whose client gave up, computed all the
    # same in their batch or not (``dropped``).
    abandoned: list[int]
    last_svc: float  # compute time of the last batch dispatched (for the next call)
    # Positions of the abandoned that left the queue without being computed.
    dropped: list[int]


def serve(
    pa: Sequence[float],
    t_free: float,
    big_b: int,
    d: float,
    svc: Sequence[float],
    end: float,
    timeout: float = math.inf,
    growth: float = 1.0,
    last_svc: float = 0.0,
    abandoned: Abandoned = "cancelled",
) -> Served:
    """Run the batcher over the queued arrivals ``pa`` (sorted) until the next
    dispatch would be at or after ``end``.  ``t_free``: when the instance frees up;
    ``last_svc``: compute time of the batch that frees it (its start is
    ``t_free - last_svc``); ``growth``: g of the module docstring; ``abandoned``:
    what Triton does with a request whose client gave up (module docstring)."""
    if abandoned not in ABANDONED:
        raise ValueError(f"abandoned: {abandoned!r} is not one of {', '.join(ABANDONED)}")
    computed = abandoned == "computed"
    rejected = abandoned == "rejected"
    n = len(pa)
    i = 0
    starts: list[float] = []
    dones: list[float] = []
    counts: list[int] = []
    abandoned_at: list[int] = []
    dropped: list[int] = []
    busy = 0.0
    while i < n:
        a = pa[i]
        s = t_free if t_free > a else a
        # When the batcher takes the oldest into a batch: at once on an idle
        # instance; on a busy one, when the running batch started (it prepares the
        # next meanwhile), or at its arrival if later.  "rejected": no batch is
        # prepared, so at its start.
        take = s
        if not rejected and t_free > a:
            take = t_free - last_svc if t_free - last_svc > a else a
        if take - a > timeout and not computed:
            # The oldest's client gave up before it was taken into a batch: drop
            # everyone whose patience runs out before then (or this segment's end).
            j = bisect_left(pa, (take if take < end else end) - timeout, i, n)
            if j > i:
                abandoned_at.extend(range(i, j))
                dropped.extend(range(i, j))
                i = j
                continue
        if s >= end:
            break
        jf = i + big_b - 1
        dl = a + d
        if dl <= s or (jf < n and pa[jf] <= s):
            # Full, or the delay has expired: dispatch when the instance frees up.
            disp = s
        else:
            disp = dl
            if jf < n and pa[jf] < dl:
                disp = pa[jf]
            if disp >= end:
                break
        hi = i + big_b if i + big_b < n else n
        close = disp
        if growth < 1.0 and disp == t_free and t_free > a:
            # Formed while the previous batch ran: it stopped growing at start + g*S
            # of that batch, or when it closed on its own (full, or delay expired).
            own = dl if jf >= n or pa[jf] >= dl else pa[jf]
            freeze = t_free - (1.0 - growth) * last_svc
            close = freeze if freeze > own else own
            if close > disp:
                close = disp
        cnt = bisect_right(pa, close, i, hi) - i
        if cnt < 1:
            cnt = 1
        if not rejected and disp - a > timeout:
            # Computed all the same; their clients had given up before it started.
            j = bisect_left(pa, disp - timeout, i, i + cnt)
            abandoned_at.extend(range(i, j))
        st = svc[cnt]
        last_svc = st
        t_free = disp + st
        busy += st
        starts.append(disp)
        dones.append(t_free)
        counts.append(cnt)
        i += cnt
    return Served(i, t_free, starts, dones, counts, busy, abandoned_at, last_svc, dropped)

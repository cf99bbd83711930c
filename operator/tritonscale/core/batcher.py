"""Triton's dynamic batcher: the one description the simulator and the model share.

Pure code.  :mod:`tritonscale.sim.engine` runs :func:`serve` on every replica's
queue; :mod:`tritonscale.core.perf` predicts the same batcher in closed form from
the same :class:`Batcher` (parameters from the profile, and the same rule).

The rule (Triton 2.51 ``DynamicBatchScheduler`` with one model instance, no
preferred batch sizes, default queue policy):

* the oldest queued request opens a batch; the batch is dispatched as soon as it
  holds ``max_batch`` requests, or once its oldest request has waited
  ``max_queue_delay`` -- whichever comes first;
* a batch whose delay has expired is handed to the instance when the instance is
  free; it then holds every request queued by that moment, up to ``max_batch``
  (Triton keeps adding requests to a dispatched payload that has not started
  executing: ``GetDynamicBatch`` returns at once while the current payload is
  neither saturated nor executing);
* a batch of b takes ``S(b)`` seconds (the profile, :func:`service_table`).

Client patience: a request still waiting (not yet in a running batch) ``timeout``
seconds after it arrived is abandoned by its client and leaves the queue without
using the instance.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

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


class Served(NamedTuple):
    """What :func:`serve` did: the first ``left`` queued requests left the queue."""

    left: int  # requests that left the queue (served or abandoned)
    t_free: float  # when the instance frees up
    starts: list[float]  # per batch: dispatch time
    dones: list[float]  # per batch: completion time
    sizes: list[int]  # per batch: requests
    busy_s: float  # compute seconds
    abandoned: list[int]  # positions (in the queue) of requests whose client gave up


def serve(
    pa: Sequence[float],
    t_free: float,
    big_b: int,
    d: float,
    svc: Sequence[float],
    end: float,
    timeout: float = math.inf,
) -> Served:
    """Run the batcher over the queued arrivals ``pa`` (sorted) until the next
    dispatch would be at or after ``end``.  ``t_free``: when the instance frees up."""
    n = len(pa)
    i = 0
    starts: list[float] = []
    dones: list[float] = []
    counts: list[int] = []
    abandoned: list[int] = []
    busy = 0.0
    while i < n:
        a = pa[i]
        s = t_free if t_free > a else a
        if s - a > timeout:
            # The oldest would start after its client gave up: drop everyone whose
            # patience runs out before the instance (or this segment's end) comes.
            j = bisect_left(pa, (s if s < end else end) - timeout, i, n)
            if j > i:
                abandoned.extend(range(i, j))
                i = j
                continue
        if s >= end:
            break
        jf = i + big_b - 1
        if jf < n and pa[jf] <= s:
            disp = s
            cnt = big_b
        else:
            dl = a + d
            if dl <= s:
                disp = s
            else:
                disp = dl
                if jf < n and pa[jf] < dl:
                    disp = pa[jf]
                if disp >= end:
                    break
            hi = i + big_b if i + big_b < n else n
            cnt = bisect_right(pa, disp, i, hi) - i
        st = svc[cnt]
        t_free = disp + st
        busy += st
        starts.append(disp)
        dones.append(t_free)
        counts.append(cnt)
        i += cnt
    return Served(i, t_free, starts, dones, counts, busy, abandoned)

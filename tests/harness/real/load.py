"""Open-loop Poisson load against a real Triton server, measured on the client side.

Arrival times are drawn up front (exponential gaps at ``rate`` per second, seeded), a
dispatcher thread releases each arrival at its time and a pool of worker threads, each
with its own tritonclient connection, sends it.  Arrivals do not wait for earlier
responses (open loop), as long as a worker is free; ``max_lateness_s`` reports how late
the worst send was so a test can tell the load it asked for from the load it got.
Bounded in count and time: it stops by itself after ``duration_s``.

A ``slow_fraction`` of the requests (chosen by the same seeded generator) asks the
sleepy model for ``slow_ms`` of extra compute, which makes the latency distribution
bimodal: its p95 then sits well inside the slow mode, far from the p50 and the mean,
so a test can tell the three apart despite a few ms of client-side noise.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Record:
    scheduled: float  # wall clock (time.time()) the arrival was due
    sent: float  # wall clock the request left
    done: float  # wall clock the response arrived
    ok: bool
    slow: bool = False

    @property
    def latency_ms(self) -> float:
        return (self.done - self.sent) * 1000.0


@dataclass(frozen=True)
class LoadResult:
    records: tuple[Record, ...]
    started: float
    ended: float

    @property
    def ok_records(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def errors(self) -> int:
        return sum(1 for r in self.records if not r.ok)

    @property
    def max_lateness_s(self) -> float:
        return max((r.sent - r.scheduled for r in self.records), default=0.0)

    def completed_between(self, start: float, end: float) -> list[Record]:
        return [r for r in self.records if r.ok and start < r.done <= end]

    def latencies_ms(self, until: float | None = None) -> list[float]:
        return [r.latency_ms for r in self.ok_records if until is None or r.done <= until]


def poisson_arrivals(
    rate: float, duration_s: float, seed: int, slow_fraction: float = 0.0
) -> list[tuple[float, bool]]:
    """(offset from start in s, slow?) of a Poisson process of ``rate`` over ``duration_s``."""
    rng = random.Random(seed)
    out: list[tuple[float, bool]] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append((t, rng.random() < slow_fraction))


def run_poisson_load(
    url: str,
    model: str,
    *,
    rate: float,
    duration_s: float,
    seed: int = 1,
    workers: int = 6,
    batch: int = 1,
    slow_fraction: float = 0.0,
    slow_ms: float = 0.0,
) -> LoadResult:
    """Send single requests of ``batch`` items to ``model`` at Poisson ``rate`` per second."""
    import tritonclient.http as httpclient

    arrivals = poisson_arrivals(rate, duration_s, seed, slow_fraction)
    work: queue.Queue[tuple[float, bool] | None] = queue.Queue()
    records: list[Record] = []
    lock = threading.Lock()

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=10, network_timeout=10)
        tensors = {}
        for slow, extra in ((False, 0.0), (True, slow_ms)):
            t = httpclient.InferInput("INPUT", [batch, 1], "FP32")
            t.set_data_from_numpy(np.full((batch, 1), extra, dtype=np.float32))
            tensors[slow] = t
        try:
            while True:
                item = work.get()
                if item is None:
                    return
                due, slow = item
                sent = time.time()
                try:
                    client.infer(model, [tensors[slow]])
                    ok = True
                except Exception:
                    ok = False
                rec = Record(due, sent, time.time(), ok, slow)
                with lock:
                    records.append(rec)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start_wall = time.time()
    start_mono = time.monotonic()
    for off, slow in arrivals:
        delay = start_mono + off - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put((start_wall + off, slow))
    remaining = start_mono + duration_s - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join(30)
    return LoadResult(tuple(sorted(records, key=lambda r: r.done)), start_wall, time.time())


def run_parallel(
    jobs: Sequence[tuple[str, str, float, int]],
    duration_s: float,
    *,
    slow_fraction: float = 0.0,
    slow_ms: float = 0.0,
) -> list[LoadResult]:
    """Run several loads ``(url, model, rate, seed)`` at the same time."""
    results: list[LoadResult | None] = [None] * len(jobs)

    def one(i: int) -> None:
        url, model, rate, seed = jobs[i]
        results[i] = run_poisson_load(
            url,
            model,
            rate=rate,
            duration_s=duration_s,
            seed=seed,
            slow_fraction=slow_fraction,
            slow_ms=slow_ms,
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 120)
    assert all(r is not None for r in results), "a load generator did not finish"
    return [r for r in results if r is not None]


def percentile(values: Sequence[float], p: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

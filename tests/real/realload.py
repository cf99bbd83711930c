"""Open-loop Poisson load against a real Triton server, measured on the client side.

Arrival times are drawn up front (exponential gaps at ``rate`` per second, seeded), a
dispatcher thread releases each arrival at its time and a pool of worker threads, each
with its own tritonclient connection, sends it.  Arrivals do not wait for earlier
responses (open loop), as long as a worker is free; ``max_lateness_s`` reports how late
the worst send was so a test can tell the load it asked for from the load it got.
Bounded in count and time: it stops by itself after ``duration_s``.
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


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> list[float]:
    """Offsets (seconds from start) of a Poisson process of ``rate`` over ``duration_s``."""
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append(t)


def run_poisson_load(
    url: str,
    model: str,
    *,
    rate: float,
    duration_s: float,
    seed: int = 1,
    workers: int = 8,
    batch: int = 1,
) -> LoadResult:
    """Send single requests of ``batch`` items to ``model`` at Poisson ``rate`` per second."""
    import tritonclient.http as httpclient

    offsets = poisson_arrivals(rate, duration_s, seed)
    work: queue.Queue[float | None] = queue.Queue()
    records: list[Record] = []
    lock = threading.Lock()

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=10, network_timeout=10)
        tensor = httpclient.InferInput("INPUT", [batch, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((batch, 1), dtype=np.float32))
        try:
            while True:
                due = work.get()
                if due is None:
                    return
                sent = time.time()
                try:
                    client.infer(model, [tensor])
                    ok = True
                except Exception:
                    ok = False
                rec = Record(due, sent, time.time(), ok)
                with lock:
                    records.append(rec)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start_wall = time.time()
    start_mono = time.monotonic()
    for off in offsets:
        delay = start_mono + off - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put(start_wall + off)
    remaining = start_mono + duration_s - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join(30)
    return LoadResult(tuple(sorted(records, key=lambda r: r.done)), start_wall, time.time())


def run_parallel(
    jobs: Sequence[tuple[str, str, float, int]], duration_s: float
) -> list[LoadResult]:
    """Run several loads ``(url, model, rate, seed)`` at the same time."""
    results: list[LoadResult | None] = [None] * len(jobs)

    def one(i: int) -> None:
        url, model, rate, seed = jobs[i]
        results[i] = run_poisson_load(url, model, rate=rate, duration_s=duration_s, seed=seed)

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

"""Request-level discrete-event simulator of a Triton fleet replaying a trace.

Pure code (numpy only). What it models, and how:

* **Arrivals** are the trace's exact timestamps (seconds), see :mod:`.trace`.
* **Load balancing**: the Kubernetes Service spreads requests over Ready
  replicas; the simulator uses strict round-robin over the Ready replicas in a
  fixed order (a deterministic stand-in for kube-proxy's random choice with
  the same even split). Replicas that are starting or draining get nothing.
* **Replica** = one Triton model instance with the dynamic batcher: when the
  instance is free and requests are queued, it dispatches at once if
  ``max_batch_size`` are waiting or the oldest has waited ``max_queue_delay``;
  otherwise it waits until either happens. A batch of b takes the profile's
  compute time S(b) (piecewise-linear interpolation, :func:`..core.perf.batch_latency_ms`).
  The batch loop is exact and event-driven per replica (a tight loop over
  batches with ``bisect`` on the replica's queue).
* **Scaling**: a policy is called every ``interval_s`` of simulated time with
  signals sampled like Prometheus scrapes (rate over a window, percentile over
  a window of completed requests, busy fraction, in-flight concurrency). New
  replicas become Ready after the pool's ``startupSeconds`` and are billed
  from the moment they are requested; removed replicas drain their queue and
  stop being billed at once. Not-Ready replicas are removed first.
* **Spot preemptions** (optional, seeded): a Poisson process per spot pool;
  an event kills every replica of the pool (queued requests are *dropped*),
  and the pool is unavailable for ``preemption_outage_s``; the Deployment's
  pods come back ``startupSeconds`` after the outage ends.
* Requests arriving while no replica is Ready are dropped.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.perf import batch_latency_ms
from tritonscale.core.spec import Profile, ScaledModelSpec
from tritonscale.core.types import PlacementState

Key = tuple[str, str]


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulated environment (not of the policy under test)."""

    seed: int = 0
    # Prometheus-like signal windows.
    rate_window_s: float = 30.0
    latency_window_s: float = 60.0
    # Spot preemptions: mean events per hour per spot pool (0 = none).
    preemption_rate_per_hour: float = 0.0
    preemption_outage_s: float = 300.0
    # Replicas of the initial plan are Ready at t=0 (a warm fleet).
    warm_start: bool = True
    # Override every pool's startup delay (the oracle uses 0).
    startup_override_s: float | None = None
    # Length of the windows used for ``windows_met``.
    slo_window_s: float = 60.0


def service_table(profile: Profile) -> list[float]:
    """Batch compute time in seconds, indexed by batch size 0..max_batch_size."""
    return [0.0] + [
        batch_latency_ms(profile, b) / 1000.0 for b in range(1, profile.max_batch_size + 1)
    ]


def _batch_loop(
    pa: list[float], t_free: float, big_b: int, d: float, svc: list[float], end: float
) -> tuple[int, float, list[float], list[int], float]:
    """Serve queued arrivals ``pa`` (sorted) until the next dispatch is >= ``end``.

    Returns (served count, time the instance frees up, completion time per
    batch, size per batch, busy seconds).
    """
    n = len(pa)
    i = 0
    dones: list[float] = []
    counts: list[int] = []
    busy = 0.0
    while i < n:
        a = pa[i]
        s = t_free if t_free > a else a
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
        dones.append(t_free)
        counts.append(cnt)
        i += cnt
    return i, t_free, dones, counts, busy


_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)


@dataclass
class Replica:
    rid: int
    key: Key
    big_b: int
    delay_s: float
    svc: list[float]
    price_per_hour: float
    ready_at: float
    bill_from: float
    t_free: float = 0.0
    pend_t: NDArray[np.float64] = field(default_factory=lambda: _EMPTY_F)
    pend_i: NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I)
    busy_s: float = 0.0


class SimView(Protocol):
    """What a policy may look at when the simulator calls it."""

    spec: ScaledModelSpec
    now: float

    def current(self) -> tuple[PlacementState, ...]: ...
    def rps(self, window_s: float | None = None) -> float: ...
    def latency_ms(self, percentile: float, window_s: float | None = None) -> float | None: ...
    def utilisation(
        self, key: Key | None = None, window_s: float | None = None
    ) -> float | None: ...
    def concurrency(self, window_s: float) -> float: ...
    def pending(self) -> float: ...
    def unavailable_pools(self) -> frozenset[str]: ...


class Policy(Protocol):
    name: str
    interval_s: float

    def initial(self, view: SimView) -> Mapping[Key, int]: ...
    def step(self, view: SimView) -> Mapping[Key, int]: ...


@dataclass
class StepRecord:
    t: float
    rps: float
    desired: dict[Key, int]
    ready: dict[Key, int]
    cost_per_hour: float
    reason: str = ""


@dataclass
class SimRun:
    """Raw outcome of one replay: per-request completion times and a time series."""

    arrivals: NDArray[np.float64]
    done: NDArray[np.float64]  # completion time; inf = dropped
    cost_usd: float
    duration_s: float
    steps: list[StepRecord]
    preemptions: list[tuple[float, str]]


class Simulator:
    def __init__(
        self,
        spec: ScaledModelSpec,
        arrivals: NDArray[np.float64],
        config: SimConfig | None = None,
    ) -> None:
        self.spec = spec
        self.cfg = config or SimConfig()
        self.arr = np.ascontiguousarray(arrivals, dtype=np.float64)
        self.n = len(self.arr)
        self.done = np.full(self.n, np.nan)
        self.end_t = float(self.arr[-1]) + 1e-6 if self.n else 0.0
        self.now = 0.0
        self.replicas: dict[Key, list[Replica]] = {}
        self.draining: list[Replica] = []
        self._rid = 0
        self._rr = 0
        self.cost_usd = 0.0
        self.outage_until: dict[str, float] = {}
        self.preemptions = self._draw_preemptions()
        self._pre_i = 0
        self.steps: list[StepRecord] = []
        self._busy_hist: list[tuple[float, dict[Key, float], dict[Key, float]]] = []
        self._profiles: dict[Key, Profile] = {}
        for v in spec.variants:
            for p in spec.node_pools:
                prof = v.profile_for(p.accelerator)
                if prof is not None:
                    self._profiles[(v.name, p.name)] = prof
        self._svc: dict[Key, list[float]] = {}
        self._pending_lo = 0

    # ------------------------------------------------------------------ setup
    def _draw_preemptions(self) -> list[tuple[float, str]]:
        rate = self.cfg.preemption_rate_per_hour
        if rate <= 0:
            return []
        rng = np.random.default_rng(self.cfg.seed + 7919)
        out: list[tuple[float, str]] = []
        for pool in self.spec.node_pools:
            if not pool.is_spot:
                continue
            t = 0.0
            while True:
                t += float(rng.exponential(3600.0 / rate))
                if t >= self.end_t:
                    break
                out.append((t, pool.name))
        out.sort()
        return out

    def startup_s(self, pool: str) -> float:
        if self.cfg.startup_override_s is not None:
            return self.cfg.startup_override_s
        return self.spec.pool(pool).startup_seconds

    # --------------------------------------------------------------- view API
    def current(self) -> tuple[PlacementState, ...]:
        out = []
        for key in sorted(self.replicas):
            reps = self.replicas[key]
            if not reps:
                continue
            ready = sum(1 for r in reps if r.ready_at <= self.now)
            out.append(PlacementState(key[0], key[1], len(reps), ready))
        return tuple(out)

    def unavailable_pools(self) -> frozenset[str]:
        return frozenset(p for p, until in self.outage_until.items() if until > self.now)

    def rps(self, window_s: float | None = None) -> float:
        w = min(window_s or self.cfg.rate_window_s, max(self.now, 1e-9))
        lo = np.searchsorted(self.arr, self.now - w, "left")
        hi = np.searchsorted(self.arr, self.now, "left")
        return float(hi - lo) / w

    def _window_latencies(self, window_s: float) -> NDArray[np.float64]:
        lo = int(np.searchsorted(self.arr, self.now - window_s, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        done = self.done[lo:hi]
        ok = done <= self.now  # NaN (in flight) and inf (dropped) are excluded
        lat: NDArray[np.float64] = (done[ok] - self.arr[lo:hi][ok]) * 1000.0
        return lat

    def latency_ms(self, percentile: float, window_s: float | None = None) -> float | None:
        lat = self._window_latencies(window_s or self.cfg.latency_window_s)
        if len(lat) == 0:
            return None
        return float(np.percentile(lat, percentile))

    def utilisation(self, key: Key | None = None, window_s: float | None = None) -> float | None:
        """Mean busy fraction of Ready replicas over the last window (DCGM-like)."""
        w = window_s or 15.0
        busy = 0.0
        rep_s = 0.0
        for t, b, r in reversed(self._busy_hist):
            if t < self.now - w - 1e-9:
                break
            for k, v in b.items():
                if key is None or k == key:
                    busy += v
            for k, n in r.items():
                if key is None or k == key:
                    rep_s += n
        if rep_s <= 0:
            return None
        return busy / rep_s

    def concurrency(self, window_s: float) -> float:
        """Mean number of in-flight requests (queued or computing) over the window."""
        lo = int(np.searchsorted(self.arr, self.now - window_s, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        a = self.arr[lo:hi]
        d = self.done[lo:hi]
        end = np.where(np.isfinite(d), np.minimum(d, self.now), self.now)
        w = min(window_s, max(self.now, 1e-9))
        return float(np.sum(end - a)) / w

    def pending(self) -> float:
        """Requests arrived and not yet completed or dropped, now (Triton's
        ``nv_inference_pending_request_count`` summed over the fleet, plus the
        batches executing: a scrape sees both as in flight)."""
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        lo = self._pending_lo
        d = self.done[lo:hi]
        waiting = np.flatnonzero(np.isnan(d) | ((d > self.now) & np.isfinite(d)))
        # Everything before the oldest waiting request is finished for good: later
        # calls start there (requests complete nearly in arrival order).
        self._pending_lo = lo + int(waiting[0]) if len(waiting) else hi
        return float(len(waiting))

    # --------------------------------------------------------------- mechanics
    def _svc_for(self, key: Key) -> list[float]:
        s = self._svc.get(key)
        if s is None:
            s = service_table(self._profiles[key])
            self._svc[key] = s
        return s

    def _new_replica(self, key: Key, ready_at: float, bill_from: float) -> Replica:
        prof = self._profiles.get(key)
        if prof is None:
            raise ValueError(f"no profile for variant {key[0]!r} on pool {key[1]!r}")
        self._rid += 1
        return Replica(
            rid=self._rid,
            key=key,
            big_b=prof.max_batch_size,
            delay_s=prof.max_queue_delay_ms / 1000.0,
            svc=self._svc_for(key),
            price_per_hour=self.spec.pool(key[1]).price_per_hour
            * max(self.spec.pool(key[1]).gpus_per_replica, 1),
            ready_at=ready_at,
            bill_from=bill_from,
            t_free=ready_at,
        )

    def apply(self, target: Mapping[Key, int], instant: bool = False) -> None:
        now = self.now
        keys = set(self.replicas) | {k for k, v in target.items() if v > 0}
        for key in sorted(keys):
            want = max(0, int(target.get(key, 0)))
            reps = self.replicas.setdefault(key, [])
            while len(reps) < want:
                pool = key[1]
                start = max(now, self.outage_until.get(pool, 0.0))
                ready = now if instant else start + self.startup_s(pool)
                reps.append(self._new_replica(key, ready, start))
            if len(reps) > want:
                # Remove not-Ready first (newest first), then Ready (newest first).
                order = sorted(reps, key=lambda r: (r.ready_at <= now, r.rid))
                drop = order[: len(reps) - want]
                ids = {r.rid for r in drop}
                self.replicas[key] = [r for r in reps if r.rid not in ids]
                for r in drop:
                    if r.ready_at <= now:
                        self._serve(r, math.inf)

    def _serve(self, r: Replica, end: float) -> float:
        if len(r.pend_t) == 0:
            return 0.0
        i, t_free, dones, counts, busy = _batch_loop(
            r.pend_t.tolist(), r.t_free, r.big_b, r.delay_s, r.svc, end
        )
        r.t_free = t_free
        if i:
            self.done[r.pend_i[:i]] = np.repeat(np.asarray(dones), np.asarray(counts))
            r.pend_t = r.pend_t[i:]
            r.pend_i = r.pend_i[i:]
        r.busy_s += busy
        return busy

    def _preempt(self, t: float, pool: str) -> None:
        until = t + self.cfg.preemption_outage_s
        self.outage_until[pool] = max(self.outage_until.get(pool, 0.0), until)
        for key, reps in self.replicas.items():
            if key[1] != pool:
                continue
            for r in reps:
                if r.ready_at <= t:
                    self._serve(r, t)  # batches already dispatched complete
                if len(r.pend_i):
                    self.done[r.pend_i] = np.inf
                r.pend_t, r.pend_i = _EMPTY_F, _EMPTY_I
                r.ready_at = until + self.startup_s(pool)
                r.t_free = r.ready_at
                r.bill_from = until

    def run_interval(self, t0: float, t1: float) -> None:
        # Billing for [t0, t1).
        for reps in self.replicas.values():
            for r in reps:
                a = max(t0, r.bill_from)
                if a < t1:
                    self.cost_usd += r.price_per_hour * (t1 - a) / 3600.0
        busy_acc: dict[Key, float] = {}
        rep_acc: dict[Key, float] = {}
        cuts = {t1}
        for reps in self.replicas.values():
            for r in reps:
                if t0 < r.ready_at < t1:
                    cuts.add(r.ready_at)
        for tp, _pool in self.preemptions[self._pre_i :]:
            if tp >= t1:
                break
            cuts.add(max(t0, tp))
        a = t0
        for b in sorted(cuts):
            if b <= a:
                continue
            while self._pre_i < len(self.preemptions) and self.preemptions[self._pre_i][0] <= a:
                pool = self.preemptions[self._pre_i][1]
                self._pre_i += 1
                self._preempt(a, pool)
            self._segment(a, b, busy_acc, rep_acc)
            a = b
        self._busy_hist.append((t1, busy_acc, {k: v for k, v in rep_acc.items()}))
        if len(self._busy_hist) > 64:
            del self._busy_hist[:32]

    def _segment(
        self, a: float, b: float, busy_acc: dict[Key, float], rep_acc: dict[Key, float]
    ) -> None:
        ready = [
            r for key in sorted(self.replicas) for r in self.replicas[key] if r.ready_at <= a
        ]
        lo = int(np.searchsorted(self.arr, a, "left"))
        hi = int(np.searchsorted(self.arr, b, "left"))
        n = hi - lo
        if not ready:
            if n:
                self.done[lo:hi] = np.inf
            return
        m = len(ready)
        if n:
            off = self._rr % m
            for j, r in enumerate(ready):
                start = lo + ((j - off) % m)
                if start >= hi:
                    continue
                idx = np.arange(start, hi, m, dtype=np.int64)
                if len(r.pend_t):
                    r.pend_t = np.concatenate((r.pend_t, self.arr[start:hi:m]))
                    r.pend_i = np.concatenate((r.pend_i, idx))
                else:
                    r.pend_t = self.arr[start:hi:m]
                    r.pend_i = idx
            self._rr = (self._rr + n) % m
        for r in ready:
            busy = self._serve(r, b)
            busy_acc[r.key] = busy_acc.get(r.key, 0.0) + busy
            rep_acc[r.key] = rep_acc.get(r.key, 0.0) + (b - a)

    def finish(self) -> None:
        for reps in self.replicas.values():
            for r in reps:
                if r.ready_at <= self.end_t:
                    self._serve(r, math.inf)
        # Anything never served (should not happen) counts as dropped.
        self.done[np.isnan(self.done)] = np.inf

    # ------------------------------------------------------------------ driver
    def run(self, policy: Policy, on_step: Callable[[StepRecord], None] | None = None) -> SimRun:
        self.now = 0.0
        init = policy.initial(self)
        self.apply(init, instant=self.cfg.warm_start)
        t = 0.0
        interval = float(policy.interval_s)
        first = True
        while t < self.end_t:
            self.now = t
            if not first:
                target = policy.step(self)
                self.apply(target)
            first = False
            t1 = min(t + interval, self.end_t)
            desired = {k: len(v) for k, v in self.replicas.items() if v}
            ready_n = {
                k: sum(1 for r in v if r.ready_at <= t) for k, v in self.replicas.items() if v
            }
            cost_rate = sum(
                r.price_per_hour for v in self.replicas.values() for r in v if r.bill_from <= t
            )
            self.run_interval(t, t1)
            lo = int(np.searchsorted(self.arr, t, "left"))
            hi = int(np.searchsorted(self.arr, t1, "left"))
            rec = StepRecord(
                t=t,
                rps=(hi - lo) / max(t1 - t, 1e-9),
                desired=desired,
                ready=ready_n,
                cost_per_hour=cost_rate,
                reason=str(getattr(policy, "last_reason", "")),
            )
            self.steps.append(rec)
            if on_step is not None:
                on_step(rec)
            t = t1
        self.now = self.end_t
        self.finish()
        return SimRun(
            arrivals=self.arr,
            done=self.done,
            cost_usd=self.cost_usd,
            duration_s=self.end_t,
            steps=self.steps,
            preemptions=list(self.preemptions),
        )

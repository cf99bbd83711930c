"""Simulate a cascade request by request: both tiers' queues, escalation, end-to-end latency.

Pure code (numpy only). Two :class:`~tritonscale.sim.engine.Simulator` instances run
in lockstep, one per tier, each with the engine's exact batcher and round-robin
Service over its own Ready replicas:

* **Tier 1** gets the trace's arrivals. When a request completes there at time d,
  the router compares its confidence with the threshold it runs at d (the last one
  the policy set): each request carries a seeded uniform draw u (its "difficulty
  rank"), and escalates iff u < escalated(threshold) x ``drift``. One draw per
  request makes a higher threshold escalate a superset, as a real confidence does;
  ``drift`` (default 1) lets the real escalation rate differ from the curve, which
  the policy's online correction must then discover.
* **Tier 2** receives each escalated request ``hopMs`` after a stage-2 thread of the
  router took it (d when no thread was short: below). Its arrivals are appended
  interval by interval (sub-step by sub-step): after tier 1 has run to t1 every
  completion before t1 is known, so every tier-2 call before t1 is too.
* **End-to-end** latency of an escalated request is its tier-2 completion minus its
  arrival; dropped at tier 1 is dropped. The router (``data/router/model.py``)
  answers each request on its own: a request that did not escalate completes with
  tier 1, whatever its tier-1 batch mates do.
* **The router's tier-2 timeout**: the router gives a tier-2 call
  ``tier2_timeout_s`` (core/cascade_render.py, 10 s) from the moment it makes it
  (the request's tier-1 completion); an escalated request whose tier-2 answer comes
  later, or never (lost with a replica), is answered with tier 1's answer at that
  deadline, one refused at once (no Ready tier-2 replica) at its call plus the
  hop: a *fallback*, credited the accuracy tier 1 has on escalated inputs
  (below). Tier 2 still computes a call the router gave up on (Triton does not
  cancel an HTTP request), so tier 2's queue keeps every escalated request (its
  own client patience is off).
* **Client timeout** (``SimConfig.client_timeout_s``) counts from the client's send
  (the request's arrival at tier 1); an escalated request answered later than that
  after its arrival is timed out. Clients send it with each request (Triton's
  ``timeout`` parameter), so the router knows it (below).
* **Router threads** (``router_threads`` per stage and pod: ``ROUTER_INSTANCES x
  ROUTER_WORKERS``, the two instances' pools taken as one): a request waits, FIFO,
  for one of its pod's stage-1 threads, which calls tier 1 (tier 1's queue and
  batcher; tier 1 computes every request a thread handed it) and is free at tier 1's
  answer; an escalated request then waits, FIFO in order of tier-1 answers, for one
  of the pod's stage-2 threads, held during its tier-2 call (until tier 2's answer
  or the 10-s timeout). When a thread takes a request whose client has gone, the
  router drops it without calling the stage's tier (``abandoned``, timed out); an
  escalated request with no tier-2 time left gets tier 1's answer at once. Stage 1
  is exact per pod (:class:`_Tier`); stage 2 shares tier 2 with every pod, so when
  a pod's stage-2 threads may all be busy, stage 2 and tier 2 advance in sub-steps
  of ``substep_s``: a thread freed by a tier-2 answer computed within the same
  sub-step is reused from the next one (at most ``substep_s`` late). ``router_peak``
  reports the most requests one pod's router held per stage (in a thread or waiting
  for one). ``router_threads=None``: unbounded threads (tier 1's queue then abandons
  a request not started within the client timeout, the engine's rule).
  The policy sees the end-to-end
  percentile, the tier-1 rate, both tiers' placements and the escalation rate
  observed over the rate window (as the router's counters would give it).
* **Accuracy** served: each answered request is credited the curve's accuracy at the
  threshold the router ran when it routed that request (threshold 0, tier 1 alone:
  tier 1's variant's accuracy).

Preemptions hit both tiers' replicas on a preempted pool (both simulators draw the
same seeded events).
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.autoscale import decide
from tritonscale.core.batcher import serve
from tritonscale.core.cascade_render import ROUTER_INSTANCES, ROUTER_WORKERS, TIER2_TIMEOUT_SECONDS
from tritonscale.core.cascade_spec import Cascade
from tritonscale.core.cascade_step import point_of
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Observation, PlacementState
from tritonscale.sim.engine import Key, Replica, SimConfig, SimRun, Simulator, StepRecord

_EMPTY = np.empty(0, dtype=np.float64)
# Stage 2 and tier 2 advance in sub-steps of this length while a pod's stage-2
# threads may all be busy (a tier-2 answer frees its thread at the next sub-step).
SUBSTEP_S = 0.5


def _add(x: Mapping[Key, float], y: Mapping[Key, float]) -> dict[Key, float]:
    return {k: x.get(k, 0.0) + y.get(k, 0.0) for k in x.keys() | y.keys()}


@dataclass
class _Stage1:
    """One pod's router stage 1: the requests whose thread called tier 1 (their entry
    times into tier 1's queue, FIFO) and when the last ``slots`` served ones left."""

    released: NDArray[np.float64]
    entry_t: list[float] = field(default_factory=list)
    entry_i: list[int] = field(default_factory=list)


class _Tier(Simulator):
    """A simulator whose arrivals grow as the tier before it releases requests, and
    (tier 1, ``slots`` set) the router's stage-1 threads in front of each pod's tier 1.

    With ``slots`` = k, a request routed to a pod waits (FIFO) for one of the pod's k
    stage-1 threads; the thread calls tier 1 (BLS: tier 1's own queue and batcher)
    and is free again at tier 1's answer. Tier 1's batches run one after another in
    arrival order, so the answers come back in entry order and the j-th request a
    pod admits gets a thread when the (j - k)-th admitted one was answered: its
    entry is max(arrival, that answer). A request whose client gave up
    (``client_timeout_s`` after its send) before a thread took it is dropped by the
    router without calling tier 1 (timed out, ``abandoned``); tier 1 computes every
    request a thread handed it (Triton does not cancel a BLS call), so tier 1's
    queue itself abandons nothing."""

    def __init__(self, spec: ScaledModelSpec, arrivals: NDArray[np.float64],
                 config: SimConfig, slots: int | None = None) -> None:
        super().__init__(spec, arrivals, config)
        if slots is not None and slots < 1:
            raise ValueError(f"router threads per stage must be >= 1; got {slots}")
        self.slots = slots
        # How long after its send the router still calls tier 1 for a request (the
        # client timeout; inf: a router that never checks, as before it did).
        self.router_patience = self._timeout
        self.rep = np.full(self.n, -1, dtype=np.int64)  # the pod (replica id) per request
        self.entered = np.full(self.n, np.nan)  # a stage-1 thread took it (or dropped it)
        self.abandoned = np.zeros(self.n, dtype=bool)  # dropped by the router: client gone
        self._stage: dict[int, _Stage1] = {}
        # Sub-steps of one policy interval record one signal sample (see run_interval).
        self.merge_samples = False

    _GROWN = ("arr", "done", "timed_out", "gpu_done", "where", "rep", "entered",
              "abandoned")

    def extend(self, times: NDArray[np.float64]) -> None:
        """Append arrivals (sorted, none before the last). The per-request arrays are
        views of buffers that double when full, so appending in many small steps
        stays linear."""
        if len(times) == 0:
            return
        n, k = self.n, len(times)
        bufs: dict[str, NDArray[Any]] = getattr(self, "_bufs", {})
        if not bufs or n + k > len(bufs["arr"]):
            cap = max(2 * (n + k), 1024)
            fill = {"arr": np.inf, "done": np.nan, "timed_out": False, "gpu_done": np.nan,
                    "where": -1, "rep": -1, "entered": np.nan, "abandoned": False}
            for name in self._GROWN:
                old: NDArray[Any] = getattr(self, name)
                buf = np.full(cap, fill[name], dtype=old.dtype)
                buf[:n] = old[:n]
                bufs[name] = buf
            self._bufs = bufs
        bufs["arr"][n:n + k] = times
        self.n = n + k
        for name in self._GROWN:
            setattr(self, name, bufs[name][:self.n])

    def pending(self) -> float:
        """Triton's pending count of the model: with router threads, only the requests
        a thread handed to tier 1 (the router's own backlog, waiting for a thread, is
        in no Triton metric the operator reads)."""
        if self.slots is None:
            return super().pending()
        horizon = 600.0 if math.isinf(self._timeout) else self._timeout + 120.0
        lo = int(np.searchsorted(self.arr, self.now - horizon, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        d = self.done[lo:hi]
        inside = self.entered[lo:hi] <= self.now  # NaN (still waiting): False
        busy = np.isnan(d) | ((d > self.now) & np.isfinite(d))
        return float(np.count_nonzero(inside & busy))

    def _append(self, r: Replica, idx: NDArray[np.int64]) -> None:
        super()._append(r, idx)
        self.rep[idx] = r.rid

    def run_interval(self, t0: float, t1: float) -> None:
        before = len(self._busy_hist)
        super().run_interval(t0, t1)
        if self.merge_samples and before and len(self._busy_hist) == before + 1:
            # One sample per policy interval, as without sub-steps.
            (_ta, b1, r1, q1, n1), (tb, b2, r2, q2, n2) = self._busy_hist[-2:]
            n12 = {k: n1.get(k, 0) + n2.get(k, 0) for k in n1.keys() | n2.keys()}
            self._busy_hist[-2:] = [(tb, _add(b1, b2), _add(r1, r2), _add(q1, q2), n12)]

    def _serve(self, r: Replica, end: float) -> tuple[float, float, int]:
        if self.slots is None:
            return super()._serve(r, end)
        k = self.slots
        st = self._stage.setdefault(r.rid, _Stage1(_EMPTY))
        n_in = len(st.entry_i)
        if n_in and (len(r.pend_i) < n_in or int(r.pend_i[0]) != st.entry_i[0]):
            # The pod lost its queue (preempted): its router's threads went with it.
            st.entry_t.clear()
            st.entry_i.clear()
            st.released = _EMPTY
            n_in = 0
        wait_t = r.pend_t[n_in:]
        wait_i = r.pend_i[n_in:]
        nw = len(wait_t)
        w = 0
        busy = qsum = 0.0
        started = 0
        dropped: list[NDArray[np.int64]] = []
        while True:
            # Threads take waiting requests in order while a thread's release is known:
            # with n in tier 1, the next m <= k - n requests get the threads the
            # last k - n ... k - n - m + 1 answered ones left (a slice of them).
            while w < nw and len(st.entry_t) < k:
                need = k - len(st.entry_t)
                m = min(nw - w, need)
                a = wait_t[w:w + m]
                rel = st.released
                at = np.arange(len(rel) - need, len(rel) - need + m)
                free_at = (np.where(at >= 0, rel[np.maximum(at, 0)], -np.inf) if len(rel)
                           else np.full(m, -np.inf))
                e = np.maximum(a, free_at)
                cut = int(np.searchsorted(e, end, "left"))  # e is sorted
                late = np.flatnonzero(e[:cut] - a[:cut] > self.router_patience)
                ok = int(late[0]) if len(late) else cut
                if ok:
                    ids = wait_i[w:w + ok]
                    self.entered[ids] = e[:ok]
                    st.entry_t.extend(e[:ok].tolist())
                    st.entry_i.extend(ids.tolist())
                    w += ok
                if ok < cut:
                    # Dropped when a thread would take it (its client had gone), the
                    # thread left free: so is every waiting request sent before
                    # e - timeout (the same release is theirs).
                    x = float(e[ok])
                    j = max(w + 1, int(np.searchsorted(wait_t, x - self.router_patience,
                                                       "left")))
                    gone = wait_i[w:j]
                    self.entered[gone] = x
                    dropped.append(gone)
                    w = j
                elif cut < m:
                    break  # the next thread is free only at or after ``end``
            if not st.entry_t:
                break
            # Every thread busy and requests waiting: a batch is known only if the
            # batcher's look-ahead (max batch) stays within the admitted requests
            # (the next one, always: the waiting enter after it is answered).
            n_in = len(st.entry_t)
            blocked = w < nw and n_in >= k
            res = serve(st.entry_t, r.t_free, r.big_b, r.delay_s, r.svc, end, math.inf,
                        self.cfg.batch_growth, r.last_svc)
            nb = len(res.sizes)
            if blocked and nb:
                pos, nb = res.sizes[0], 1
                while nb < len(res.sizes) and pos + r.big_b <= n_in:
                    pos += res.sizes[nb]
                    nb += 1
            if nb:
                sizes = res.sizes[:nb]
                pos = sum(sizes)
                dones = np.repeat(np.asarray(res.dones[:nb]), sizes)
                self.done[np.asarray(st.entry_i[:pos], dtype=np.int64)] = dones
                qsum += float(np.dot(res.starts[:nb], sizes)) - math.fsum(st.entry_t[:pos])
                started += pos
                batch_s = [r.svc[c] for c in sizes]
                busy += math.fsum(batch_s)
                st.released = np.concatenate((st.released, dones[-k:]))[-k:]
                del st.entry_t[:pos]
                del st.entry_i[:pos]
                r.t_free = res.dones[nb - 1]
                r.last_svc = batch_s[-1]
            if not blocked or nb == 0:
                break
        if dropped:
            gone = np.concatenate(dropped)
            self.done[gone] = np.inf
            self.timed_out[gone] = True
            self.abandoned[gone] = True
        ins = np.asarray(st.entry_i, dtype=np.int64)
        r.pend_i = np.concatenate((ins, wait_i[w:]))
        r.pend_t = np.concatenate((self.arr[ins], wait_t[w:]))
        r.busy_s += busy
        return busy, qsum, started


@dataclass
class CascadeRun(SimRun):
    """A replay's outcome with what the cascade did."""

    accuracy: float = math.nan
    escalated: float = math.nan  # fraction of answered requests that went to tier 2
    thresholds: tuple[tuple[float, float], ...] = ()  # (time, threshold) changes
    fallback: float = math.nan  # fraction of answered requests answered by tier 1 after
    # the router's tier-2 call failed or timed out
    # Peak requests one tier-1 pod's router held in flight, per stage (tier-1 call,
    # tier-2 call), against its threads per stage (router_threads).
    router_peak: tuple[int, int] = (0, 0)
    router_threads: int = ROUTER_INSTANCES * ROUTER_WORKERS
    # Requests the router dropped without calling the stage's tier because their
    # client had gone before a thread took them (stage 1, stage 2).
    abandoned: tuple[int, int] = (0, 0)


def fallback_accuracy(cascade: float, tier1: float, escalated: float) -> float:
    """What an escalated request answered by tier 1 (a fallback) is credited, when
    every other request is credited the curve's accuracy.

    The curve's accuracy A at a threshold escalating e is (1 - e) a_kept + e a2 and
    tier 1 alone scores A1 = (1 - e) a_kept + e a1 (a_kept, a1, a2: accuracies on the
    kept inputs, and tier 1's and tier 2's on the escalated ones), so a fraction f of
    the escalated falling back serves A - f e (a2 - a1) = A - f (A - A1): the mean
    of A over the others and A - (A - A1) / e over the fallbacks."""
    if escalated <= 0:
        return cascade
    return min(1.0, max(0.0, cascade - (cascade - tier1) / escalated))


def _peak_in_flight(start: NDArray[np.float64], end: NDArray[np.float64],
                    pod: NDArray[Any]) -> int:
    """Most intervals [start, end) of one pod that overlap at once."""
    ok = np.isfinite(start) & np.isfinite(end) & (pod >= 0)
    peak = 0
    for p in np.unique(pod[ok]):
        m = ok & (pod == p)
        t = np.concatenate((start[m], end[m]))
        step = np.concatenate((np.ones(int(m.sum())), -np.ones(int(m.sum()))))
        order = np.lexsort((step, t))  # an end before a start at the same instant
        peak = max(peak, int(np.max(np.cumsum(step[order]))) if len(t) else 0)
    return peak


class CascadeSimulator:
    """Both tiers, the router between them, and the view a policy reads."""

    def __init__(self, spec: ScaledModelSpec, arrivals: NDArray[np.float64],
                 config: SimConfig | None = None, drift: float = 1.0,
                 router_threads: int | None = ROUTER_INSTANCES * ROUTER_WORKERS,
                 substep_s: float = SUBSTEP_S, drop_gone: bool = True) -> None:
        if spec.cascade is None:
            raise ValueError("spec has no cascade")
        if not (substep_s > 0 and math.isfinite(substep_s)):
            raise ValueError(f"substep_s must be a positive number of seconds; got {substep_s}")
        self.spec = spec
        self.cas: Cascade = spec.cascade
        # The router, not the client's protocol, decides what a gone client's request
        # costs (module doc): it drops it before calling tier 1, and the tiers compute
        # whatever it handed them. SimConfig.abandoned does not apply.
        self.cfg = replace(config or SimConfig(), abandoned="cancelled")
        self.threads = router_threads
        self.substep_s = float(substep_s)
        self.t1 = _Tier(spec, arrivals, self.cfg, router_threads)
        # drop_gone=False: the router before it checked its clients (it called both
        # tiers for every request, its client there or not), for comparison.
        self.drop_gone = drop_gone
        if not drop_gone:
            self.t1.router_patience = math.inf
        # The router's tier-2 call is abandoned at its deadline, yet Triton computes it:
        # tier 2's queue never drops a request (no client patience of its own).
        self.t2 = _Tier(spec, _EMPTY, replace(self.cfg, client_timeout_s=None))
        self.tier2_timeout_s = float(TIER2_TIMEOUT_SECONDS)
        self._patience = (math.inf if self.cfg.client_timeout_s is None
                          else float(self.cfg.client_timeout_s))
        self.t2.end_t = self.t1.end_t
        self.t2.preemptions = self.t1.preemptions
        self.arr = self.t1.arr
        self.n = self.t1.n
        self.end_t = self.t1.end_t
        self.now = 0.0
        self.drift = drift
        rng = np.random.default_rng(self.cfg.seed + 104_729)
        self.u = rng.random(self.n)
        self.fwd = np.zeros(self.n, dtype=bool)  # routed (tier-1 outcome known)
        self.esc = np.zeros(self.n, dtype=bool)
        self.j2 = np.full(self.n, -1, dtype=np.int64)  # index in tier 2
        self.acc = np.full(self.n, np.nan)
        self.p_esc = np.zeros(self.n)  # the escalation probability each was routed at
        self.thr_t: list[float] = [0.0]
        self.thr_v: list[float] = [self.cas.points[0].threshold]
        # Stage 2: when a thread took each escalated request (NaN: waiting), whether it
        # called tier 2 or the router dropped it (client gone); per tier-1 pod, the
        # escalated requests waiting for a thread and those holding one in a call.
        self.s2 = np.full(self.n, np.nan)
        self.called = np.zeros(self.n, dtype=bool)
        self.drop2 = np.zeros(self.n, dtype=bool)
        self._wait2: dict[int, deque[int]] = {}
        self._calls: dict[int, list[int]] = {}
        self._out2: list[tuple[float, int]] = []  # tier-2 calls not yet arrived
        self._lo = 0  # requests before it are all routed

    # ------------------------------------------------------------- view API
    def current(self) -> tuple[PlacementState, ...]:
        self.t1.now = self.t2.now = self.now
        merged: dict[Key, PlacementState] = {}
        for sim, variant in ((self.t1, self.cas.first.variant), (self.t2, self.cas.last.variant)):
            for p in sim.current():
                if p.variant == variant:
                    merged[p.key] = p
        return tuple(merged[k] for k in sorted(merged))

    def unavailable_pools(self) -> frozenset[str]:
        self.t1.now = self.now
        return self.t1.unavailable_pools()

    def noticed_pools(self) -> dict[str, str]:
        self.t1.now = self.now
        return self.t1.noticed_pools()

    def rps(self, window_s: float | None = None) -> float:
        self.t1.now = self.now
        return self.t1.rps(window_s)

    def _e2e(self, lo: int, hi: int, client: bool = True
             ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """End-to-end completion of requests lo..hi-1 as known at ``now`` (NaN: in
        flight, inf: dropped or timed out) and which fell back to tier 1's answer."""
        d1 = self.t1.done[lo:hi]
        out = d1.copy()
        esc = self.esc[lo:hi]
        j = self.j2[lo:hi]
        s2 = self.s2[lo:hi]
        fell = np.zeros(hi - lo, dtype=bool)
        out[esc] = np.nan
        has = np.flatnonzero(esc & (j >= 0))
        if len(has):
            c2 = self.t2.done[j[has]]
            give_up = d1[has] + self.tier2_timeout_s
            refused = np.isinf(c2) & (self.t2.where[j[has]] < 0)
            late = (c2 > give_up) | (np.isnan(c2) & (self.now >= give_up)) | np.isinf(c2)
            res = np.where(late, give_up, c2)
            # Refused at once (no Ready tier-2 replica): tier 1's answer one hop after
            # the call (its thread's start; the tier-1 answer when none waited).
            sent = np.where(np.isnan(s2[has]), d1[has], s2[has])
            res[refused] = sent[refused] + self.cas.hop_ms / 1000.0
            out[has] = res
            fell[has] = late | refused
        # A thread found the tier-2 time spent: tier 1's answer then, no call.
        now_fb = esc & ~self.called[lo:hi] & ~self.drop2[lo:hi] & np.isfinite(s2)
        out[now_fb] = s2[now_fb]
        fell |= now_fb
        out[esc & self.drop2[lo:hi]] = np.inf  # the client had gone: dropped
        out[~self.fwd[lo:hi]] = np.nan  # not routed yet: still in flight
        fell &= self.fwd[lo:hi]
        # The client gave up: an answer later than its patience after it sent (not for
        # ``client=False``: when the router answered, whoever still listened).
        if client:
            out[np.isfinite(out) & (out - self.arr[lo:hi] > self._patience)] = np.inf
        return out, fell

    def held(self) -> float:
        """Requests the router holds at ``now`` (its pending gauge): sent, not yet
        answered or dropped, in a thread or waiting for one."""
        horizon = 600.0 if math.isinf(self._patience) else self._patience + 120.0
        lo = int(np.searchsorted(self.arr, self.now - horizon, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        d1 = self.t1.done[lo:hi]
        # Tier 1's answer; the drop at a stage-1 thread; gone at once (no Ready pod).
        end = np.where(np.isfinite(d1), d1, self.t1.entered[lo:hi])
        end = np.where(np.isinf(d1) & np.isnan(end), self.arr[lo:hi], end)
        esc = self.esc[lo:hi] & self.fwd[lo:hi]
        if np.any(esc):
            out, _fell = self._e2e(lo, hi, client=False)
            out = np.where(self.drop2[lo:hi], self.s2[lo:hi], out)
            end = np.where(esc, out, end)
        return float(np.count_nonzero(np.isnan(end) | (end > self.now)))

    def latency_ms(self, percentile: float, window_s: float | None = None) -> float | None:
        w = window_s or self.cfg.latency_window_s
        lo = int(np.searchsorted(self.arr, self.now - w, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        done, _fell = self._e2e(lo, hi)
        ok = done <= self.now
        if not np.any(ok):
            return None
        return float(np.percentile((done[ok] - self.arr[lo:hi][ok]) * 1000.0, percentile))

    def observe(self, percentile: float) -> Observation:
        """The operator's signals: end-to-end rate and latency, each tier's placements'
        own rate and latency, queue time and pending of both, and the escalation rate."""
        self.t1.now = self.t2.now = self.now
        o1 = self.t1.observe(percentile)
        o2 = self.t2.observe(percentile)
        # The router's own pending gauge and Triton's queue time of the router model
        # (~0: its execute returns at once), which the signal sources read for a
        # cascade (adapters/prometheus.py, adapters/triton.py).
        pending = self.held() if self.threads is not None else (
            None if o1.pending is None or o2.pending is None else o1.pending + o2.pending)
        return Observation(
            rps=o1.rps,
            latency_ms=self.latency_ms(percentile),
            current=self.current(),
            queue_ms=0.0 if self.threads is not None else o1.queue_ms,
            pending=pending,
            per_placement_rps={**o1.per_placement_rps, **o2.per_placement_rps},
            per_placement_latency_ms={**o1.per_placement_latency_ms,
                                      **o2.per_placement_latency_ms},
            unavailable_pools=o1.unavailable_pools,
            noticed_pools=o1.noticed_pools,
            escalated=self.escalated(),
        )

    def escalated(self, window_s: float | None = None) -> float | None:
        """Fraction of requests routed in the window that escalated (None: none routed)."""
        w = window_s or self.cfg.rate_window_s
        d1 = self.t1.done
        routed = self.fwd & (d1 >= self.now - w) & (d1 < self.now)
        n = int(np.count_nonzero(routed))
        if n == 0:
            return None
        return float(np.count_nonzero(routed & self.esc)) / n

    def utilisation(self, key: Key | None = None, window_s: float | None = None) -> float | None:
        if key is not None and key[0] == self.cas.last.variant:
            return self.t2.utilisation(key, window_s)
        return self.t1.utilisation(key, window_s)

    def concurrency(self, window_s: float) -> float:
        self.t1.now = self.now
        return self.t1.concurrency(window_s)

    # ------------------------------------------------------------- mechanics
    def set_threshold(self, t: float, threshold: float) -> None:
        if abs(threshold - self.thr_v[-1]) > 1e-12:
            self.thr_t.append(t)
            self.thr_v.append(threshold)

    def apply(self, target: Mapping[Key, int], instant: bool = False) -> None:
        self.t1.now = self.t2.now = self.now
        self.t1.apply({k: n for k, n in target.items() if k[0] == self.cas.first.variant},
                      instant)
        self.t2.apply({k: n for k, n in target.items() if k[0] == self.cas.last.variant},
                      instant)

    def _route(self, until: float) -> None:
        """Route tier-1 completions before ``until``: the escalated ones join their
        pod's stage-2 queue (in completion order)."""
        d1 = self.t1.done
        hi = int(np.searchsorted(self.arr, until, "left"))
        lo = self._lo
        if lo < hi:
            open_ = np.flatnonzero(~self.fwd[lo:hi])
            lo += int(open_[0]) if len(open_) else hi - lo
        self._lo = lo
        win = d1[lo:hi]
        done_inf = np.flatnonzero(~self.fwd[lo:hi] & np.isinf(win)) + lo
        self.fwd[done_inf] = True
        idx = np.flatnonzero(~self.fwd[lo:hi] & np.isfinite(win) & (win < until)) + lo
        if len(idx) == 0:
            return
        d = d1[idx]
        k = np.searchsorted(np.asarray(self.thr_t), d, "right") - 1
        thr = np.asarray(self.thr_v)[np.maximum(k, 0)]
        uniq, which = np.unique(thr, return_inverse=True)
        pts = [point_of(self.spec, float(t)) for t in uniq]
        e = np.array([min(1.0, p.escalated * self.drift) if p else 0.0 for p in pts])[which]
        a = np.array([p.accuracy if p else math.nan for p in pts])[which]
        esc = self.u[idx] < e
        self.p_esc[idx] = e
        self.fwd[idx] = True
        self.esc[idx] = esc
        self.acc[idx] = a
        go = idx[esc]
        go = go[np.argsort(d1[go], kind="stable")]
        pods = self.t1.rep[go]
        for i, pod in zip(go.tolist(), pods.tolist(), strict=True):
            self._wait2.setdefault(pod, deque()).append(i)

    def _release(self, i: int) -> float:
        """When escalated request ``i``'s stage-2 thread is free, as known now: its
        answer (tier 2's, or the timeout's), or the timeout as a bound while tier 2
        has not started it."""
        d1 = float(self.t1.done[i])
        give_up = d1 + self.tier2_timeout_s
        j = int(self.j2[i])
        if j < 0:
            return give_up
        c2 = float(self.t2.done[j])
        if math.isnan(c2):
            return give_up
        if math.isinf(c2):
            return (float(self.s2[i]) + self.cas.hop_ms / 1000.0 if self.t2.where[j] < 0
                    else give_up)
        return min(c2, give_up)

    def _stage2(self, u: float, v: float) -> None:
        """Stage-2 threads over [u, v): each pod's escalated requests take its threads
        in order. At a thread, a request whose client has gone (``client_timeout_s``
        after its send) is dropped, one with no tier-2 time left (the 10 s count from
        tier 1's answer) gets tier 1's answer at once, any other calls tier 2 (its
        arrival there one hop later). Tier 2 has run to u: an answer it gives inside
        [u, v) frees its thread from the next sub-step (at most ``substep_s`` late);
        a timeout frees it exactly."""
        k = self.threads
        new: list[tuple[float, int]] = []
        for pod, q in self._wait2.items():
            if not q:
                continue
            calls = self._calls.setdefault(pod, [])
            rel = [self._release(i) for i in calls]
            kept = [(r, i) for r, i in zip(rel, calls, strict=True) if r > u]
            calls[:] = [i for _r, i in kept]
            free: list[float] = []
            if k is not None and len(kept) + len(q) > k:
                free = [-math.inf] * (k - len(kept)) + [r for r, _i in kept]
                heapq.heapify(free)
            while q:
                i = q[0]
                d1 = float(self.t1.done[i])
                s = max(d1, u, free[0]) if free else max(d1, u)
                if s >= v:
                    break
                q.popleft()
                self.s2[i] = s
                give_up = d1 + self.tier2_timeout_s
                held = s
                if self.drop_gone and s - float(self.arr[i]) > self._patience:
                    self.drop2[i] = True
                elif s < give_up:
                    self.called[i] = True
                    calls.append(i)
                    new.append((s + self.cas.hop_ms / 1000.0, i))
                    held = give_up
                if free:
                    heapq.heapreplace(free, held)
        self._out2.extend(new)
        if not self._out2:
            return
        self._out2.sort()
        cut = next((n for n, (t, _i) in enumerate(self._out2) if t >= v), len(self._out2))
        if cut:
            times = np.fromiter((t for t, _i in self._out2[:cut]), dtype=np.float64, count=cut)
            ids = np.fromiter((i for _t, i in self._out2[:cut]), dtype=np.int64, count=cut)
            start = self.t2.n
            self.t2.extend(times)
            self.j2[ids] = np.arange(start, start + cut)
            del self._out2[:cut]

    def _calm_until(self, u: float, t1: float) -> float:
        """The end of the longest stretch from ``u`` (at most ``t1``) in which no pod
        can run out of stage-2 threads even if no call in flight ends: each pod's
        requests escalated before it fit in its idle threads, so each gets one at its
        tier-1 answer. At least one sub-step."""
        k = self.threads
        if k is None:
            return t1
        end = t1
        for pod, q in self._wait2.items():
            idle = k - len(self._calls.get(pod, ()))
            if len(q) > max(idle, 0):
                first_short = float(self.t1.done[q[max(idle, 0)]])
                end = min(end, first_short)
        return min(t1, max(end, u + self.substep_s))

    def _advance(self, t: float, t1: float) -> None:
        """Stage 2 and tier 2 over [t, t1), in steps as long as no pod's stage-2
        threads may run out, sub-steps of ``substep_s`` where they may."""
        self._route(t1)
        u = t
        n = 0
        while u < t1:
            v = self._calm_until(u, t1)
            self._stage2(u, v)
            self.t2.merge_samples = n > 0
            self.t2.run_interval(u, v)
            u = v
            n += 1
        self.t2.merge_samples = False

    def _pending2(self) -> bool:
        return bool(self._out2) or any(self._wait2.values())

    def run(self, policy: CascadePolicy) -> CascadeRun:
        self.now = 0.0
        init = policy.initial(self)
        self.set_threshold(0.0, policy.threshold)
        self.apply(init, instant=self.cfg.warm_start)
        steps: list[StepRecord] = []
        t = 0.0
        interval = float(policy.interval_s)
        first = True
        while t < self.end_t:
            self.now = t
            if not first:
                target = policy.step(self)
                self.set_threshold(t, policy.threshold)
                self.apply(target)
            first = False
            t1 = min(t + interval, self.end_t)
            cur = self.current()
            self.t1.run_interval(t, t1)
            self._advance(t, t1)
            lo = int(np.searchsorted(self.arr, t, "left"))
            hi = int(np.searchsorted(self.arr, t1, "left"))
            cost_rate = sum(
                r.price_per_hour for sim in (self.t1, self.t2)
                for v in sim.replicas.values() for r in v if r.bill_from <= t
            )
            steps.append(StepRecord(
                t=t, rps=(hi - lo) / max(t1 - t, 1e-9),
                desired={p.key: p.desired for p in cur}, ready={p.key: p.ready for p in cur},
                cost_per_hour=cost_rate, reason=policy.last_reason,
            ))
            t = t1
        self.now = self.end_t
        self.t1.finish()
        # Serve what is still queued or arriving after the trace's end (not billed: the
        # replay's cost covers its duration, as for a single tier).
        cost = self.t2.cost_usd
        t = self.end_t
        while True:
            self._route(math.inf)
            if not self._pending2():
                break
            nxt = min((float(self.t1.done[q[0]]) for q in self._wait2.values() if q),
                      default=t)
            if not self._out2 and nxt > t:
                t = nxt  # nothing in flight to tier 2 before it: skip the idle time
            self._advance(t, t + 60.0)
            t += 60.0
        self.t2.finish()
        self.t2.cost_usd = cost
        self.now = max(self.end_t, t)
        done, fell = self._e2e(0, self.n)
        self.now = self.end_t
        done[np.isnan(done)] = np.inf
        timed_out = self.t1.timed_out | (np.isinf(done) & np.isfinite(self.t1.done))
        answered = np.isfinite(done)
        acc_req = self.acc.copy()
        if np.any(fell):
            a1 = self.spec.variant(self.cas.first.variant).accuracy
            acc_req[fell] = [fallback_accuracy(float(a), a1, float(e))
                             for a, e in zip(self.acc[fell], self.p_esc[fell], strict=True)]
        acc = float(np.nanmean(acc_req[answered])) if np.any(answered) else math.nan
        esc = float(np.mean(self.esc[answered])) if np.any(answered) else math.nan
        fb = float(np.mean(fell[answered])) if np.any(answered) else math.nan
        # Requests held per pod (in a thread or waiting for one): stage 1 from arrival
        # to the tier-1 answer (or the drop), stage 2 from the tier-1 answer to the
        # router's answer (or the drop).
        pod = self.t1.rep
        d1 = self.t1.done
        stage1 = _peak_in_flight(self.arr, np.where(np.isfinite(d1), d1, self.t1.entered), pod)
        end2 = np.where(self.drop2, self.s2, done)
        stage2 = _peak_in_flight(np.where(self.esc, d1, np.nan),
                                 np.where(self.esc, end2, np.nan), pod)
        return CascadeRun(
            arrivals=self.arr, done=done, timed_out=timed_out,
            cost_usd=self.t1.cost_usd + self.t2.cost_usd,
            duration_s=self.end_t, steps=steps, preemptions=list(self.t1.preemptions),
            accuracy=acc, escalated=esc,
            thresholds=tuple(zip(self.thr_t, self.thr_v, strict=True)),
            fallback=fb, router_peak=(stage1, stage2),
            router_threads=self.threads or 0,
            abandoned=(int(np.count_nonzero(self.t1.abandoned)),
                       int(np.count_nonzero(self.drop2))),
        )


class CascadePolicy:
    """:func:`tritonscale.core.autoscale.decide` for a cascade, fed like the operator's."""

    name = "tritonscale"

    def __init__(self, spec: ScaledModelSpec, start_rps: float) -> None:
        self.spec = spec
        self.interval_s = spec.scaling.interval_seconds
        self.start_rps = start_rps
        self.state: Mapping[str, Any] | None = None
        self.last_reason = ""
        self.threshold = spec.cascade.points[0].threshold if spec.cascade else 0.0

    def _take(self, d: Any) -> dict[Key, int]:
        self.state = json.loads(json.dumps(d.state))
        self.last_reason = d.reason
        c = d.details.get("cascade") if isinstance(d.details, Mapping) else None
        if isinstance(c, Mapping) and isinstance(c.get("threshold"), (int, float)):
            self.threshold = float(c["threshold"])
        out: dict[Key, int] = d.replicas()
        return out

    def initial(self, view: CascadeSimulator) -> Mapping[Key, int]:
        d = decide(self.spec, Observation(rps=self.start_rps), None, view.now)
        mix = self._take(d)
        # The warm fleet is Ready at t=0: let the router start at the planned threshold.
        if self.spec.cascade is not None and isinstance(self.state, dict):
            tgt = d.details.get("cascade", {}).get("targetThreshold")
            if isinstance(tgt, (int, float)):
                self.threshold = float(tgt)
                self.state["thr"] = self.threshold
        return mix

    def step(self, view: CascadeSimulator) -> Mapping[Key, int]:
        return self._take(decide(self.spec, view.observe(self.spec.slo.latency.percentile),
                                 self.state, view.now))


def run_cascade(spec: ScaledModelSpec, arrivals: NDArray[np.float64], start_rps: float,
                config: SimConfig | None = None, drift: float = 1.0
                ) -> tuple[CascadeRun, float]:
    """Replay ``arrivals`` through the cascade under tritonscale; (run, wall seconds)."""
    sim = CascadeSimulator(spec, arrivals, config, drift)
    t0 = time.perf_counter()
    run = sim.run(CascadePolicy(spec, start_rps))
    return run, time.perf_counter() - t0


def steps_accuracy(spec: ScaledModelSpec, run: SimRun) -> float:
    """Expected accuracy served by single-tier replicas: per step, the Ready replicas'
    accuracies averaged (the Service splits evenly), weighted by the step's requests."""
    num = 0.0
    den = 0.0
    acc = {v.name: v.accuracy for v in spec.variants}
    for s in run.steps:
        reps = {k: n for k, n in (s.ready or s.desired).items() if n > 0 and k[0] in acc}
        total = sum(reps.values())
        if total == 0:
            continue
        a = sum(acc[k[0]] * n for k, n in reps.items()) / total
        w = max(s.rps, 0.0)
        num += a * w
        den += w
    return num / den if den > 0 else math.nan


def run_accuracy(spec: ScaledModelSpec, run: SimRun) -> float:
    """Expected accuracy a replay served, whichever simulator produced it."""
    if isinstance(run, CascadeRun):
        return run.accuracy
    return steps_accuracy(spec, run)

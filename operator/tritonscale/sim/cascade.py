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
* **Tier 2** receives each escalated request at d + ``hopMs``. Its arrivals are
  appended interval by interval: after tier 1 has run to t1 every completion before
  t1 is known, so every tier-2 arrival before t1 is too.
* **End-to-end** latency of an escalated request is its tier-2 completion minus its
  arrival; dropped at tier 1 is dropped. The router (``data/router/model.py``)
  answers each request on its own: a request that did not escalate completes with
  tier 1, whatever its tier-1 batch mates do.
* **The router's tier-2 timeout**: the router gives a tier-2 call
  ``tier2_timeout_s`` (core/cascade_render.py, 10 s) from the moment it makes it
  (the request's tier-1 completion); an escalated request whose tier-2 answer comes
  later, or never (lost with a replica), is answered with tier 1's answer at that
  deadline, one refused at once (no Ready tier-2 replica) at its tier-1 completion
  plus the hop: a *fallback*, credited the accuracy tier 1 has on escalated inputs
  (below). Tier 2 still computes a call the router gave up on (Triton does not
  cancel an HTTP request), so tier 2's queue keeps every escalated request (its
  own client patience is off).
* **Client timeout** (``SimConfig.client_timeout_s``) counts from the client's send
  (the request's arrival at tier 1): tier 1 abandons a request not started by then
  (the engine's rule), and an escalated request answered later than that after its
  arrival is timed out.
* **Router concurrency**: a router instance's execute hands requests to threads and
  returns, so the router queues nothing as long as a pod holds fewer requests in
  flight than its threads (``ROUTER_INSTANCES x ROUTER_WORKERS`` per stage:
  stage 1 during the tier-1 call, stage 2 during the tier-2 call). The run reports
  each stage's peak per pod (``router_peak``); beyond the threads a request would
  wait for one, which is not modelled (the benchmarks' peaks stay far below).
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

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.autoscale import decide
from tritonscale.core.cascade_render import ROUTER_INSTANCES, ROUTER_WORKERS, TIER2_TIMEOUT_SECONDS
from tritonscale.core.cascade_spec import Cascade
from tritonscale.core.cascade_step import point_of
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Observation, PlacementState
from tritonscale.sim.engine import Key, SimConfig, SimRun, Simulator, StepRecord

_EMPTY = np.empty(0, dtype=np.float64)


class _Tier(Simulator):
    """A simulator whose arrivals grow as the tier before it releases requests."""

    def extend(self, times: NDArray[np.float64]) -> None:
        if len(times) == 0:
            return
        k = len(times)
        self.arr = np.concatenate((self.arr, times))
        self.done = np.concatenate((self.done, np.full(k, np.nan)))
        self.timed_out = np.concatenate((self.timed_out, np.zeros(k, dtype=bool)))
        self.where = np.concatenate((self.where, np.full(k, -1, dtype=self.where.dtype)))
        self.n = len(self.arr)


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
                 config: SimConfig | None = None, drift: float = 1.0) -> None:
        if spec.cascade is None:
            raise ValueError("spec has no cascade")
        self.spec = spec
        self.cas: Cascade = spec.cascade
        self.cfg = config or SimConfig()
        self.t1 = _Tier(spec, arrivals, self.cfg)
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

    def rps(self, window_s: float | None = None) -> float:
        self.t1.now = self.now
        return self.t1.rps(window_s)

    def _e2e(self, lo: int, hi: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """End-to-end completion of requests lo..hi-1 as known at ``now`` (NaN: in
        flight, inf: dropped or timed out) and which fell back to tier 1's answer."""
        d1 = self.t1.done[lo:hi]
        out = d1.copy()
        esc = self.esc[lo:hi]
        j = self.j2[lo:hi]
        fell = np.zeros(hi - lo, dtype=bool)
        out[esc] = np.nan
        has = np.flatnonzero(esc & (j >= 0))
        if len(has):
            c2 = self.t2.done[j[has]]
            give_up = d1[has] + self.tier2_timeout_s
            refused = np.isinf(c2) & (self.t2.where[j[has]] < 0)
            late = (c2 > give_up) | (np.isnan(c2) & (self.now >= give_up)) | np.isinf(c2)
            res = np.where(late, give_up, c2)
            res[refused] = d1[has][refused] + self.cas.hop_ms / 1000.0
            out[has] = res
            fell[has] = late | refused
        out[~self.fwd[lo:hi]] = np.nan  # not routed yet: still in flight
        fell &= self.fwd[lo:hi]
        # The client gave up: an answer later than its patience after it sent.
        out[np.isfinite(out) & (out - self.arr[lo:hi] > self._patience)] = np.inf
        return out, fell

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
        pending = None if o1.pending is None or o2.pending is None else o1.pending + o2.pending
        return Observation(
            rps=o1.rps,
            latency_ms=self.latency_ms(percentile),
            current=self.current(),
            queue_ms=o1.queue_ms,
            pending=pending,
            per_placement_rps={**o1.per_placement_rps, **o2.per_placement_rps},
            per_placement_latency_ms={**o1.per_placement_latency_ms,
                                      **o2.per_placement_latency_ms},
            unavailable_pools=o1.unavailable_pools,
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
        """Route tier-1 completions before ``until - hop``; send the escalated on."""
        hop = self.cas.hop_ms / 1000.0
        d1 = self.t1.done
        new = ~self.fwd & np.isfinite(d1) & (d1 + hop < until)
        new_inf = ~self.fwd & np.isinf(d1)
        self.fwd |= new_inf
        idx = np.flatnonzero(new)
        if len(idx) == 0:
            return
        d = d1[idx]
        k = np.searchsorted(np.asarray(self.thr_t), d, "right") - 1
        thr = np.asarray(self.thr_v)[np.maximum(k, 0)]
        pts = {t: point_of(self.spec, float(t)) for t in np.unique(thr)}
        e = np.array([min(1.0, p.escalated * self.drift) if (p := pts[t]) else 0.0
                      for t in thr])
        a = np.array([p.accuracy if (p := pts[t]) else math.nan for t in thr])
        esc = self.u[idx] < e
        self.p_esc[idx] = e
        self.fwd[idx] = True
        self.esc[idx] = esc
        self.acc[idx] = a
        go = idx[esc]
        times = d1[go] + hop
        order = np.argsort(times, kind="stable")
        go, times = go[order], times[order]
        start = self.t2.n
        self.t2.extend(times)
        self.j2[go] = np.arange(start, start + len(go))

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
            self._route(t1)
            self.t2.run_interval(t, t1)
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
        self._route(math.inf)
        if self.t2.n:
            # Serve what is still queued or arriving after the trace's end (not billed:
            # the replay's cost covers its duration, as for a single tier).
            cost = self.t2.cost_usd
            tail = float(self.t2.arr[-1]) + 1.0
            if tail > self.end_t:
                self.t2.run_interval(self.end_t, tail)
            self.t2.cost_usd = cost
        self.t2.finish()
        done, fell = self._e2e(0, self.n)
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
        # Router threads held per pod: stage 1 from arrival to the tier-1 answer,
        # stage 2 from the tier-1 answer to the router's answer.
        pod = self.t1.where
        stage1 = _peak_in_flight(self.arr, self.t1.done, pod)
        stage2 = _peak_in_flight(np.where(self.esc, self.t1.done, np.nan),
                                 np.where(self.esc, done, np.nan), pod)
        return CascadeRun(
            arrivals=self.arr, done=done, timed_out=timed_out,
            cost_usd=self.t1.cost_usd + self.t2.cost_usd,
            duration_s=self.end_t, steps=steps, preemptions=list(self.t1.preemptions),
            accuracy=acc, escalated=esc,
            thresholds=tuple(zip(self.thr_t, self.thr_v, strict=True)),
            fallback=fb, router_peak=(stage1, stage2),
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

"""Request-level discrete-event simulator of a Triton fleet replaying a trace.

Pure code (numpy only). What it models, and how:

* **Arrivals** are the trace's exact timestamps (seconds), see :mod:`.trace`.
* **Load balancing** (``SimConfig.load_balancing``): ``"random"`` (default) is
  kube-proxy's iptables mode: every request picks one Ready replica uniformly at
  random (seeded), so replicas see Poisson-thinned, uneven short-term loads;
  ``"round-robin"`` is strict rotation over the Ready replicas (IPVS ``rr``, a
  flattering even split); ``"weighted"`` picks a placement with probability
  proportional to the weight the policy gives it (``Policy.route_weights``, e.g.
  Gateway API backendRef weights; placements without Ready replicas are left out
  and the rest renormalised; no weights = the random Service split), then a Ready
  replica of it at random. Replicas that are starting or draining get nothing.
* **Replica** = one Triton model instance with the dynamic batcher of
  :mod:`tritonscale.core.batcher` (the same description the performance model
  uses). The batch loop is exact and event-driven per replica (a tight loop over
  batches with ``bisect`` on the replica's queue).
* **Client patience** (``SimConfig.client_timeout_s``, default 30 s): a request
  not yet in a running batch that long after it arrived is abandoned by its
  client and counts as *timed out* (never as served, whatever happens to it
  next). What Triton does with it (``SimConfig.abandoned``, the batcher's
  ``abandoned``, measured on Triton 2.51 by tests/real/test_abandoned_real.py):
  ``"cancelled"`` (default; gRPC clients, whose timeout cancels the request) it
  leaves the queue without using the GPU, unless the batcher had already taken
  it into the batch it prepares while the instance computes: that batch is
  computed whole, and under sustained overload it holds mostly requests whose
  clients have gone; ``"rejected"`` (a model queue-policy timeout: Triton then
  prepares no batch ahead) it leaves the queue unserved; ``"computed"`` it stays
  queued and is computed in its batch like any other, delaying those behind it,
  and only its response is discarded -- Triton with HTTP clients, which cancel
  nothing. Either way the client (Knative's in-flight concurrency) stops waiting
  at arrival + timeout; Triton's pending count, busy time and queue time still
  include a request computed for a gone client until its batch has run. On the
  bursty fleet (seed 1, docs/comparison.md "Fleet scale", before ``"cancelled"``
  computed the prepared batch, i.e. as ``"rejected"`` does now) ``"computed"``
  took tritonscale from 16/20 minutes met, 26.7 % missed, $2.93/h to 10/20,
  50.1 %, $3.36/h, and the fair HPA from 16/20, 23.5 %, $3.19/h to 14/20,
  29.5 %, $16.39/h.
* **Scaling**: a policy is called every ``interval_s`` of simulated time with
  signals sampled like Prometheus scrapes (rate over a window, percentile over
  a window of completed requests, busy fraction, in-flight concurrency). New
  replicas become Ready after the pool's ``startupSeconds`` and are billed
  from the moment they are requested. Scale-down removes pods in the order of
  the ReplicaSet controller's ranking: not-Ready replicas first (newest
  first), then the Ready ones that have been Ready the shortest time. A
  removed Ready replica leaves the endpoints at once and keeps computing its
  queue; its pod is gone, and stops being billed, when the preStop sleep
  (``SimConfig.drain_s``) has passed and Triton has finished that work, at
  most ``exit_timeout_s`` after the sleep (terminationGracePeriodSeconds =
  the two, as core/render.py sets it); work still queued then is killed
  (*dropped*).
* **Steady-state start** (``SimConfig.preroll_max_s``): before the measured
  replay the policy runs on the trace's first window (``preroll_window_s``),
  replayed over and over, until its fleet is settled: at least the policy's
  ``settle_s`` (its longest memory: stabilisation windows, startups), then
  until the fleet has not changed and is all Ready for ``preroll_quiet_s``, at
  most ``preroll_max_s``. The measured replay then starts with that fleet
  Ready, the queues and signal windows as they are, and the policy's own
  state (forecast, corrections, windows) carried on; nothing of the pre-roll
  is billed or measured. ``preroll_max_s = 0`` (a bare Simulator's default):
  the replay starts from the policy's ``initial`` fleet, Ready at t=0
  (``warm_start``); :func:`tritonscale.sim.report.run_policy` pre-rolls up to
  ``DEFAULT_PREROLL_S`` unless told otherwise.
* **Spot preemptions** (optional, seeded): a Poisson process per spot pool;
  an event kills every replica of the pool (queued requests are *dropped*),
  and the pool is unavailable for ``preemption_outage_s``; the Deployment's
  pods come back ``startupSeconds`` after the outage ends. A pool with
  ``interruptionNoticeSeconds`` > 0 announces each event that long before it
  (the cloud's interruption warning: AWS EC2 spot 120 s, GCP and Azure about
  30 s): from then until the event the view lists it in ``noticed_pools`` (and
  the observation in ``Observation.noticed_pools``); its replicas serve
  normally until the event.
  ``SimConfig.preemption_events`` replays given events instead, and
  :func:`preemption_draws` draws stratified worlds of the process for outcomes in
  expectation (the fair baselines' sweep, sim/baselines.py).
* Requests arriving while no replica is Ready are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from tritonscale.core.batcher import ABANDONED, TRITON_GROWTH, Abandoned, serve, service_table
from tritonscale.core.pricing import replica_price_per_hour
from tritonscale.core.render import DEFAULT_OPTIONS
from tritonscale.core.spec import Profile, ScaledModelSpec
from tritonscale.core.types import Observation, PlacementState

Key = tuple[str, str]

LOAD_BALANCING = ("random", "round-robin", "weighted")
# The longest steady-state pre-roll of a policy replay (SimConfig.preroll_max_s).
DEFAULT_PREROLL_S = 1800.0


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
    # Exactly these (time in the measured replay, pool) events instead of the seeded
    # draw (None: drawn at preemption_rate_per_hour); see :func:`preemption_draws`.
    preemption_events: tuple[tuple[float, str], ...] | None = None
    # Replicas of the initial plan are Ready at t=0 (a warm fleet).
    warm_start: bool = True
    # Override every pool's startup delay (the oracle uses 0).
    startup_override_s: float | None = None
    # Length of the windows used for ``windows_met``.
    slo_window_s: float = 60.0
    # Windows starting in the first warmup_s seconds are reported apart.
    warmup_s: float = 300.0
    # Steady-state start (module doc): the longest pre-roll (0 = none; None = the
    # caller's default: none for a bare Simulator, DEFAULT_PREROLL_S for
    # sim.report.run_policy, i.e. `simulate` and the benchmarks), the stretch of
    # unchanged, Ready fleet that counts as settled, and the trace's first window
    # whose load is replayed.
    preroll_max_s: float | None = None
    preroll_quiet_s: float = 120.0
    preroll_window_s: float = 60.0
    # A removed Ready replica stays billed for its termination: the preStop drain,
    # then Triton finishing in-flight work for at most its exit timeout
    # (core/render.py's RenderOptions defaults).
    drain_s: float = float(DEFAULT_OPTIONS.drain_seconds)
    exit_timeout_s: float = float(DEFAULT_OPTIONS.exit_timeout_seconds)
    # How far a prepared batch grows while the previous one runs (core/batcher.py).
    batch_growth: float = TRITON_GROWTH
    # How requests are spread over Ready replicas: see LOAD_BALANCING.
    load_balancing: str = "random"
    # A request still queued this long after arrival is abandoned (None: never).
    client_timeout_s: float | None = 30.0
    # What Triton does with a request whose client gave up while it was queued
    # (core/batcher.py, measured by tests/real/test_abandoned_real.py): "cancelled"
    # (gRPC clients: it leaves the queue unserved unless the batcher had already
    # taken it into the batch it prepares), "rejected" (a model queue policy: it
    # leaves the queue unserved) or "computed" (HTTP clients: it is computed anyway,
    # only the response is discarded).
    abandoned: Abandoned = "cancelled"

    def __post_init__(self) -> None:
        if self.abandoned not in ABANDONED:
            raise ValueError(
                f"abandoned: {self.abandoned!r} is not one of {', '.join(ABANDONED)}"
            )
        if self.load_balancing not in LOAD_BALANCING:
            raise ValueError(
                f"load_balancing: {self.load_balancing!r} is not one of "
                f"{', '.join(LOAD_BALANCING)}"
            )
        t = self.client_timeout_s
        if t is not None and not (t > 0 and math.isfinite(t)):
            raise ValueError(f"client_timeout_s: {t!r} must be a positive number of seconds")
        for name in ("preroll_max_s", "preroll_quiet_s"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name}: {v!r} must be >= 0 seconds")
        w = self.preroll_window_s
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(f"preroll_window_s: {w!r} must be a positive number of seconds")
        for tp, _pool in self.preemption_events or ():
            if not (tp >= 0 and math.isfinite(tp)):
                raise ValueError(f"preemption_events: time {tp!r} must be >= 0 seconds")


def preemption_draws(
    pools: Sequence[str], rate_per_hour: float, horizon_s: float, draws: int, seed: int
) -> list[tuple[float, tuple[tuple[float, str], ...]]]:
    """Stratified draws of the spot preemption process, for an outcome in expectation.

    Each pool in ``pools`` is preempted as a Poisson process at ``rate_per_hour``
    over ``[0, horizon_s)``. Returns ``(weight, events)`` pairs whose weights sum to
    1: the world without any event, weighted by its exact probability
    ``exp(-rate x pools x horizon)``, then ``draws`` independent worlds drawn
    conditioned on at least one event, each weighted ``(1 - that) / draws``. The
    weighted mean of a replay's outcome over them is an unbiased estimate of its
    expectation over the process, with no chance of ``draws`` all-quiet samples
    hiding the risk. Seeded by ``seed`` alone, so the same call gives the same
    worlds whatever the pools are named: two pools drawn alone see the same events
    (common random numbers)."""
    if rate_per_hour <= 0 or not pools or horizon_s <= 0:
        return [(1.0, ())]
    lam = rate_per_hour * len(pools) * horizon_s / 3600.0
    p0 = math.exp(-lam)
    out: list[tuple[float, tuple[tuple[float, str], ...]]] = []
    if p0 > 0:
        out.append((p0, ()))
    rng = np.random.default_rng([seed, 0x9E3779B9])
    for _ in range(max(1, draws)):
        n = _at_least_one(lam, rng)
        times = np.sort(rng.uniform(0.0, horizon_s, n))
        marks = rng.integers(0, len(pools), n)
        events = tuple((float(t), pools[int(m)]) for t, m in zip(times, marks, strict=True))
        out.append(((1.0 - p0) / max(1, draws), events))
    return out


def _at_least_one(lam: float, rng: np.random.Generator) -> int:
    """A Poisson(``lam``) count conditioned on >= 1 (inverse CDF)."""
    p = math.exp(-lam)
    if p <= 1e-12:  # a zero is (practically) impossible
        return max(1, int(rng.poisson(lam)))
    u = float(rng.uniform(p, 1.0))
    k, cdf = 0, p
    while cdf < u and k < 100_000:
        k += 1
        p *= lam / k
        cdf += p
    return max(1, k)


def _batch_loop(
    pa: list[float], t_free: float, big_b: int, d: float, svc: list[float], end: float
) -> tuple[int, float, list[float], list[int], float]:
    """:func:`tritonscale.core.batcher.serve` without client timeouts (older callers)."""
    r = serve(pa, t_free, big_b, d, svc, end)
    return r.left, r.t_free, r.dones, r.sizes, r.busy_s


__all__ = [
    "DEFAULT_PREROLL_S", "LOAD_BALANCING", "SimConfig", "Simulator", "preemption_draws",
    "service_table",
]


_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)


def _removal_rank(r: Replica, now: float) -> tuple[bool, float, int]:
    ready = r.ready_at <= now
    return (ready, -r.ready_at if ready else 0.0, -r.rid)


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
    last_svc: float = 0.0
    bill_until: float = math.inf
    pend_t: NDArray[np.float64] = field(default_factory=lambda: _EMPTY_F)
    pend_i: NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I)
    busy_s: float = 0.0
    # Arrival of the oldest request in the last batch dispatched (abandoned="computed").
    run_head: float = math.inf


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
    def unavailable_pools(self) -> frozenset[str]: ...
    def noticed_pools(self) -> dict[str, str]: ...
    def observe(self, percentile: float) -> Observation: ...


class Policy(Protocol):
    """A scaling policy. It may also carry ``route_weights`` (a mapping
    (variant, pool) -> weight, read after every call) for ``"weighted"`` load
    balancing."""

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
    done: NDArray[np.float64]  # completion time; inf = dropped or timed out
    timed_out: NDArray[np.bool_]  # abandoned by the client while queued
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
        # Abandoned by their client (done = inf as well).
        self.timed_out = np.zeros(self.n, dtype=bool)
        # abandoned="computed": when the batch of a timed-out request completed.
        self._computed = self.cfg.abandoned == "computed"
        self.gpu_done = np.full(self.n, np.nan)
        # Index (in self.keys) of the placement each request was routed to; -1: none.
        self.where = np.full(self.n, -1, dtype=np.int16)
        self.keys: list[Key] = []
        self._key_ix: dict[Key, int] = {}
        self._rng = np.random.default_rng(self.cfg.seed + 104729)
        self.weights: dict[Key, float] = {}
        self._timeout = (
            math.inf if self.cfg.client_timeout_s is None else float(self.cfg.client_timeout_s)
        )
        self.end_t = float(self.arr[-1]) + 1e-6 if self.n else 0.0
        self.now = 0.0
        self.replicas: dict[Key, list[Replica]] = {}
        self.draining: list[Replica] = []
        self._rid = 0
        self._rr = 0
        self.cost_usd = 0.0
        self.outage_until: dict[str, float] = {}
        self._notice_s = {p.name: p.interruption_notice_seconds for p in spec.node_pools}
        self._notice_max = max(self._notice_s.values(), default=0)
        self.preemptions = self._draw_preemptions()
        self._pre_i = 0
        self.steps: list[StepRecord] = []
        # Requests lost while in flight (preempted, or killed at the end of a
        # termination grace): their indices and when they were lost.
        self._lost: list[tuple[NDArray[np.int64], float]] = []
        # Requests queued on a replica when it left the endpoints, and when: Knative's
        # autoscaler scrapes the queue-proxies of the endpoints' pods only.
        self._unseen: list[tuple[NDArray[np.int64], float]] = []
        # The measured replay starts at t0 with request n_pre (both 0 without a
        # pre-roll); the pre-roll's arrivals come first in self.arr.
        self.t0 = 0.0
        self.n_pre = 0
        self._measured: NDArray[np.float64] | None = None
        # Per interval end: busy seconds, Ready replica-seconds, queue-wait sum and count.
        self._busy_hist: list[
            tuple[float, dict[Key, float], dict[Key, float], dict[Key, float], dict[Key, int]]
        ] = []
        self._profiles: dict[Key, Profile] = {}
        for v in spec.variants:
            for p in spec.node_pools:
                prof = v.profile_for(p.accelerator)
                if prof is not None:
                    self._profiles[(v.name, p.name)] = prof
        self._svc: dict[Key, list[float]] = {}

    # ------------------------------------------------------------------ setup
    def _draw_preemptions(self, horizon: float | None = None) -> list[tuple[float, str]]:
        """Seeded preemption events over [0, horizon) (default: the replay)."""
        end = self.end_t if horizon is None else horizon
        if self.cfg.preemption_events is not None:
            return sorted((float(tp), str(p)) for tp, p in self.cfg.preemption_events
                          if tp < end)
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
                if t >= end:
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

    def noticed_pools(self) -> dict[str, str]:
        """Pools whose next preemption is announced (within their
        ``interruptionNoticeSeconds`` of now, not yet happened: an event is applied
        when the interval starting at its time runs, after that instant's policy
        step), each with the announcement (the seconds left)."""
        out: dict[str, str] = {}
        for tp, pool in self.preemptions[self._pre_i :]:
            if tp - self._notice_max > self.now:
                break
            lead = self._notice_s.get(pool, 0)
            # An event at ``now`` happens after this instant's step: still announced.
            if pool not in out and lead > 0 and tp - lead <= self.now <= tp:
                out[pool] = f"preemption announced, in {tp - self.now:.0f} s"
        return out

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
        for t, b, r, _qs, _qn in reversed(self._busy_hist):
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
        """Time-averaged in-flight requests (queued or computing) over the window, as
        Knative's queue-proxy reports them: a request counts from its arrival until
        its response (or until its client gives up, or is lost to a preemption or the
        end of a termination grace); requests refused at once (no Ready replica) never
        were in flight; requests that arrived before the window and are still in
        flight count for their time inside it. The autoscaler scrapes the pods behind
        the endpoints only: requests queued on a replica stop counting when it leaves
        them (scale-down)."""
        w = min(window_s, max(self.now, 1e-9))
        patience = 600.0 if math.isinf(self._timeout) else self._timeout
        lo = int(np.searchsorted(self.arr, self.now - w - patience - 60.0, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        a = self.arr[lo:hi]
        d = self.done[lo:hi]
        if self._computed:
            # Still queued past its client's patience: the client has gone.
            end = np.where(np.isnan(d), np.minimum(self.now, a + self._timeout), d)
        else:
            end = np.where(np.isnan(d), self.now, d)
        gone = np.isinf(d)
        if gone.any():
            to = self.timed_out[lo:hi]
            end = np.where(gone & to, a + patience, end)
            end = np.where(gone & ~to, a, end)
            # Lost while in flight (preemption, end of a termination grace): in
            # flight until then.
            for idx, t_lost in self._lost:
                sel = idx[(idx >= lo) & (idx < hi)] - lo
                if len(sel):
                    end[sel] = t_lost
        for idx, t_left in self._unseen:
            sel = idx[(idx >= lo) & (idx < hi)] - lo
            if len(sel):
                end[sel] = np.minimum(end[sel], t_left)
        end = np.minimum(end, self.now)
        start = np.maximum(a, self.now - w)
        return float(np.sum(np.clip(end - start, 0.0, None))) / w

    def pending(self) -> float:
        """Requests in flight right now (queued or computing), like Triton's
        ``nv_inference_pending_request_count`` summed over replicas."""
        horizon = 600.0 if math.isinf(self._timeout) else self._timeout + 120.0
        since = self.now - horizon
        if self._computed:
            # Triton still holds requests whose clients have gone, however old.
            for r in [*(r for v in self.replicas.values() for r in v), *self.draining]:
                if len(r.pend_t):
                    since = min(since, float(r.pend_t[0]))
                since = min(since, r.run_head)
        lo = int(np.searchsorted(self.arr, since, "left"))
        hi = int(np.searchsorted(self.arr, self.now, "left"))
        d = self.done[lo:hi]
        routed = self.where[lo:hi] >= 0
        busy = np.isnan(d) | ((d > self.now) & np.isfinite(d))
        # Computed for a client that had gone: pending until its batch has run.
        busy |= self.gpu_done[lo:hi] > self.now
        return float(np.count_nonzero(routed & busy))

    def queue_ms(self, window_s: float | None = None) -> float | None:
        """Mean scheduler-queue wait (ms) of requests whose batch started in the window."""
        w = window_s or self.cfg.rate_window_s
        qs = 0.0
        qn = 0
        for t, _b, _r, s, n in reversed(self._busy_hist):
            if t < self.now - w - 1e-9:
                break
            qs += sum(s.values())
            qn += sum(n.values())
        return 1000.0 * qs / qn if qn else None

    def observe(self, percentile: float) -> Observation:
        """What the operator's signal sources report (adapters/signals.py), from the
        replay: arrival rate and latency at ``percentile`` for the whole model and
        per (variant, pool), queue time, pending requests, what exists, lost pools."""
        now = self.now
        rw = min(self.cfg.rate_window_s, max(now, 1e-9))
        lo = int(np.searchsorted(self.arr, now - rw, "left"))
        hi = int(np.searchsorted(self.arr, now, "left"))
        per_rps: dict[Key, float] = {}
        if hi > lo and self.keys:
            cnt = np.bincount(self.where[lo:hi] + 1, minlength=len(self.keys) + 1)
            for ix, k in enumerate(self.keys):
                if cnt[ix + 1]:
                    per_rps[k] = float(cnt[ix + 1]) / rw
        lw = self.cfg.latency_window_s
        lo = int(np.searchsorted(self.arr, now - lw, "left"))
        done = self.done[lo:hi]
        ok = done <= now
        lat = (done[ok] - self.arr[lo:hi][ok]) * 1000.0
        wh = self.where[lo:hi][ok]
        per_lat: dict[Key, float] = {}
        for ix, k in enumerate(self.keys):
            sel = lat[wh == ix]
            if len(sel):
                per_lat[k] = float(np.percentile(sel, percentile))
        return Observation(
            rps=self.rps(),
            latency_ms=float(np.percentile(lat, percentile)) if len(lat) else None,
            current=self.current(),
            queue_ms=self.queue_ms(),
            pending=self.pending(),
            per_placement_rps=per_rps,
            per_placement_latency_ms=per_lat,
            unavailable_pools=self.unavailable_pools(),
            noticed_pools=self.noticed_pools(),
        )

    # --------------------------------------------------------------- mechanics
    def _ix(self, key: Key) -> int:
        ix = self._key_ix.get(key)
        if ix is None:
            ix = len(self.keys)
            self.keys.append(key)
            self._key_ix[key] = ix
        return ix

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
            price_per_hour=replica_price_per_hour(self.spec.pool(key[1])),
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
                # The ReplicaSet controller's ranking of pods to delete
                # (controller_utils.go ActivePodsWithRanks): not Ready before Ready;
                # among Ready ones, Ready for less time first; then newer first.
                order = sorted(reps, key=lambda r: _removal_rank(r, now))
                drop = order[: len(reps) - want]
                ids = {r.rid for r in drop}
                self.replicas[key] = [r for r in reps if r.rid not in ids]
                for r in drop:
                    if r.ready_at <= now:
                        self._terminate(r)

    def _terminate(self, r: Replica) -> None:
        """A Ready replica deleted now: out of the endpoints at once, it keeps
        computing its queue through the preStop sleep; Triton then exits when that
        work is done, at most ``exit_timeout_s`` later (the kubelet kills the pod at
        the end of terminationGracePeriodSeconds = drain + exit timeout). Billed
        until the pod is gone; requests not finished by then are lost."""
        now = self.now
        idx = r.pend_i
        if len(idx):
            self._unseen.append((idx, now))
        self._serve(r, math.inf)
        drain, grace = self.cfg.drain_s, self.cfg.drain_s + self.cfg.exit_timeout_s
        r.bill_until = now + max(drain, min(r.t_free - now, grace))
        if len(idx):
            d = self.done[idx]
            late = idx[np.isfinite(d) & (d > now + grace)]
            if len(late):
                self.done[late] = np.inf
                self._lost.append((late, now + grace))
            g = self.gpu_done[idx]
            self.gpu_done[idx[g > now + grace]] = now + grace
        if r.bill_until > r.bill_from:
            self.draining.append(r)

    def _serve(self, r: Replica, end: float) -> tuple[float, float, int]:
        """Run ``r``'s batcher up to ``end``: (busy seconds, queue-wait sum, started)."""
        if len(r.pend_t) == 0:
            return 0.0, 0.0, 0
        res = serve(
            r.pend_t.tolist(), r.t_free, r.big_b, r.delay_s, r.svc, end, self._timeout,
            self.cfg.batch_growth, r.last_svc, self.cfg.abandoned,
        )
        r.t_free = res.t_free
        r.last_svc = res.last_svc
        qsum = 0.0
        started = 0
        i = res.left
        if i:
            # The batches hold every request that left the queue but the dropped
            # ones; those whose client had gone before their batch started were
            # computed all the same (their response is discarded): timed out.
            idx = r.pend_i[:i]
            arr = r.pend_t[:i]
            if res.dropped:
                kept = np.ones(i, dtype=bool)
                kept[np.asarray(res.dropped, dtype=np.int64)] = False
                idx, arr = idx[kept], arr[kept]
            if len(idx):
                sizes = np.asarray(res.sizes)
                self.done[idx] = np.repeat(np.asarray(res.dones), sizes)
                qsum = float(np.sum(np.repeat(np.asarray(res.starts), sizes) - arr))
                started = len(idx)
                r.run_head = float(arr[len(arr) - res.sizes[-1]])
            if res.abandoned:
                ab = r.pend_i[:i][np.asarray(res.abandoned, dtype=np.int64)]
                computed = ab[np.isfinite(self.done[ab])]  # not dropped
                self.gpu_done[computed] = self.done[computed]
                self.done[ab] = np.inf
                self.timed_out[ab] = True
            r.pend_t = r.pend_t[i:]
            r.pend_i = r.pend_i[i:]
        r.busy_s += res.busy_s
        return res.busy_s, qsum, started

    def _preempt(self, t: float, pool: str) -> None:
        until = t + self.cfg.preemption_outage_s
        self.outage_until[pool] = max(self.outage_until.get(pool, 0.0), until)
        for key, reps in self.replicas.items():
            if key[1] != pool:
                continue
            for r in reps:
                if r.ready_at <= t:
                    self._serve(r, t)  # batches already dispatched complete
                if self._computed and len(r.pend_i):
                    # Those whose client had already gone are timed out, not lost.
                    gone = r.pend_t < t - self._timeout
                    if gone.any():
                        self.done[r.pend_i[gone]] = np.inf
                        self.timed_out[r.pend_i[gone]] = True
                        r.pend_t, r.pend_i = r.pend_t[~gone], r.pend_i[~gone]
                if len(r.pend_i):
                    self.done[r.pend_i] = np.inf
                    self._lost.append((r.pend_i, t))
                r.pend_t, r.pend_i = _EMPTY_F, _EMPTY_I
                r.ready_at = until + self.startup_s(pool)
                r.t_free = r.ready_at
                r.bill_from = until

    def run_interval(self, t0: float, t1: float) -> None:
        # Billing for [t0, t1), terminating replicas until their pods are gone.
        for reps in self.replicas.values():
            for r in reps:
                a = max(t0, r.bill_from)
                if a < t1:
                    self.cost_usd += r.price_per_hour * (t1 - a) / 3600.0
        for r in self.draining:
            a = max(t0, r.bill_from)
            b = min(t1, r.bill_until)
            if a < b:
                self.cost_usd += r.price_per_hour * (b - a) / 3600.0
        self.draining = [r for r in self.draining if r.bill_until > t1]
        busy_acc: dict[Key, float] = {}
        rep_acc: dict[Key, float] = {}
        q_acc: dict[Key, float] = {}
        qn_acc: dict[Key, int] = {}
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
            self._segment(a, b, busy_acc, rep_acc, q_acc, qn_acc)
            a = b
        self._busy_hist.append((t1, busy_acc, rep_acc, q_acc, qn_acc))
        if len(self._busy_hist) > 64:
            del self._busy_hist[:32]

    def _segment(
        self,
        a: float,
        b: float,
        busy_acc: dict[Key, float],
        rep_acc: dict[Key, float],
        q_acc: dict[Key, float],
        qn_acc: dict[Key, int],
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
        if n:
            self._route(ready, lo, hi)
        for r in ready:
            busy, qs, qn = self._serve(r, b)
            busy_acc[r.key] = busy_acc.get(r.key, 0.0) + busy
            rep_acc[r.key] = rep_acc.get(r.key, 0.0) + (b - a)
            q_acc[r.key] = q_acc.get(r.key, 0.0) + qs
            qn_acc[r.key] = qn_acc.get(r.key, 0) + qn

    def _route_probabilities(self, ready: list[Replica]) -> NDArray[np.float64] | None:
        """Per Ready replica, the chance a request goes to it (None: uniform)."""
        if self.cfg.load_balancing != "weighted" or not self.weights:
            return None
        per_key: dict[Key, int] = {}
        for r in ready:
            per_key[r.key] = per_key.get(r.key, 0) + 1
        p = np.array(
            [max(self.weights.get(r.key, 0.0), 0.0) / per_key[r.key] for r in ready],
            dtype=np.float64,
        )
        total = float(p.sum())
        if not (total > 0 and math.isfinite(total)):
            return None
        out: NDArray[np.float64] = p / total
        return out

    def _append(self, r: Replica, idx: NDArray[np.int64]) -> None:
        if len(r.pend_t):
            r.pend_t = np.concatenate((r.pend_t, self.arr[idx]))
            r.pend_i = np.concatenate((r.pend_i, idx))
        else:
            r.pend_t = self.arr[idx]
            r.pend_i = idx
        self.where[idx] = self._ix(r.key)

    def _route(self, ready: list[Replica], lo: int, hi: int) -> None:
        """Send arrivals ``lo..hi-1`` to Ready replicas (see LOAD_BALANCING)."""
        m = len(ready)
        n = hi - lo
        if self.cfg.load_balancing == "round-robin":
            off = self._rr % m
            for j, r in enumerate(ready):
                start = lo + ((j - off) % m)
                if start < hi:
                    self._append(r, np.arange(start, hi, m, dtype=np.int64))
            self._rr = (self._rr + n) % m
            return
        p = self._route_probabilities(ready)
        choice = self._rng.integers(0, m, n) if p is None else self._rng.choice(m, n, p=p)
        order = np.argsort(choice, kind="stable").astype(np.int64) + lo
        bounds = np.concatenate(([0], np.cumsum(np.bincount(choice, minlength=m))))
        for j, r in enumerate(ready):
            if bounds[j + 1] > bounds[j]:
                self._append(r, order[bounds[j] : bounds[j + 1]])

    def finish(self) -> None:
        for reps in self.replicas.values():
            for r in reps:
                if r.ready_at <= self.end_t:
                    self._serve(r, math.inf)
        # Anything never served (should not happen) counts as dropped.
        self.done[np.isnan(self.done)] = np.inf

    # ------------------------------------------------------------------ driver
    def _take_weights(self, policy: Policy) -> None:
        w = getattr(policy, "route_weights", None)
        if isinstance(w, Mapping):
            self.weights = {
                (str(k[0]), str(k[1])): float(v)
                for k, v in w.items()
                if math.isfinite(float(v)) and float(v) >= 0
            }

    # -------------------------------------------------------------- pre-roll
    def _start_preroll(self, length: float) -> None:
        """Put ``length`` seconds of the trace's first window, repeated, before the
        measured arrivals (cut at the settling time by :meth:`_begin_measure`)."""
        self._measured = self.arr
        w = self.cfg.preroll_window_s
        a0 = float(self.arr[0]) if self.n else 0.0
        first = self.arr[: int(np.searchsorted(self.arr, a0 + w, "left"))] - a0
        reps = math.ceil(length / w - 1e-9)
        tile = (first[None, :] + (np.arange(reps, dtype=np.float64) * w)[:, None]).ravel()
        tile = tile[tile < length]
        self._set_arrivals(np.concatenate((tile, self._measured + length)), 0)
        self.preemptions = []  # none while settling

    def _set_arrivals(self, arr: NDArray[np.float64], keep: int) -> None:
        """New arrivals after the first ``keep`` (whose outcomes are kept)."""
        n = len(arr)
        done = np.full(n, np.nan)
        timed_out = np.zeros(n, dtype=bool)
        gpu_done = np.full(n, np.nan)
        where = np.full(n, -1, dtype=np.int16)
        if keep:
            done[:keep] = self.done[:keep]
            timed_out[:keep] = self.timed_out[:keep]
            gpu_done[:keep] = self.gpu_done[:keep]
            where[:keep] = self.where[:keep]
        self.gpu_done = gpu_done
        self.arr, self.done, self.timed_out, self.where, self.n = (
            arr, done, timed_out, where, n
        )
        self.end_t = float(arr[-1]) + 1e-6 if n else 0.0

    def _begin_measure(self, t: float) -> None:
        """The fleet is settled at ``t``: the measured replay starts here, with every
        replica Ready, nothing billed so far, the spot preemptions drawn for it."""
        assert self._measured is not None
        keep = int(np.searchsorted(self.arr, t, "left"))
        self._set_arrivals(np.concatenate((self.arr[:keep], self._measured + t)), keep)
        self.t0, self.n_pre = t, keep
        for reps in self.replicas.values():
            for r in reps:
                if r.ready_at > t:
                    r.ready_at = r.t_free = t
                r.bill_from = max(r.bill_from, t)
        self.draining = []
        self.cost_usd = 0.0
        self.steps = []
        self.preemptions = [
            (tp + t, pool) for tp, pool in self._draw_preemptions(self.end_t - t)
        ]
        self._pre_i = 0

    def _fleet(self, t: float) -> tuple[dict[Key, int], bool]:
        """Replicas per placement, and whether all of them are Ready at ``t``."""
        counts = {k: len(v) for k, v in self.replicas.items() if v}
        ready = all(r.ready_at <= t for v in self.replicas.values() for r in v)
        return counts, ready

    # ------------------------------------------------------------------ driver
    def run(self, policy: Policy, on_step: Callable[[StepRecord], None] | None = None) -> SimRun:
        interval = float(policy.interval_s)
        pre_max = self.cfg.preroll_max_s or 0.0
        if pre_max > 0 and self.n:
            pre_max = math.ceil(pre_max / interval - 1e-9) * interval
            self._start_preroll(pre_max)
        measuring = self._measured is None
        settle = min(float(getattr(policy, "settle_s", 0.0)), pre_max)
        quiet = self.cfg.preroll_quiet_s
        self.now = 0.0
        init = policy.initial(self)
        self._take_weights(policy)
        self.apply(init, instant=self.cfg.warm_start or not measuring)
        t = 0.0
        first = True
        # The fleet last seen, and since when it has been unchanged and all Ready.
        fleet: dict[Key, int] = {}
        calm: float | None = None
        while t < self.end_t:
            self.now = t
            if not first:
                target = policy.step(self)
                self._take_weights(policy)
                self.apply(target)
            first = False
            if not measuring:
                now_fleet, all_ready = self._fleet(t)
                if now_fleet != fleet or not all_ready:
                    calm = None
                elif calm is None:
                    calm = t
                fleet = now_fleet
                if t >= pre_max - 1e-9 or (
                    t >= settle - 1e-9 and calm is not None and t - calm >= quiet - 1e-9
                ):
                    self._begin_measure(t)
                    measuring = True
            t1 = min(t + interval, self.end_t)
            if not measuring:
                t1 = min(t1, pre_max)
            desired = {k: len(v) for k, v in self.replicas.items() if v}
            ready_n = {
                k: sum(1 for r in v if r.ready_at <= t) for k, v in self.replicas.items() if v
            }
            cost_rate = sum(
                r.price_per_hour for v in self.replicas.values() for r in v if r.bill_from <= t
            ) + sum(r.price_per_hour for r in self.draining if r.bill_from <= t < r.bill_until)
            self.run_interval(t, t1)
            if measuring:
                lo = int(np.searchsorted(self.arr, t, "left"))
                hi = int(np.searchsorted(self.arr, t1, "left"))
                rec = StepRecord(
                    t=t - self.t0,
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
        if self._measured is None:
            arrivals, done, timed_out = self.arr, self.done, self.timed_out
        else:
            # The trace's own times (exact), completions on that clock.
            arrivals = self._measured
            done = self.done[self.n_pre :] - self.t0
            timed_out = self.timed_out[self.n_pre :]
        return SimRun(
            arrivals=arrivals,
            done=done,
            timed_out=timed_out,
            cost_usd=self.cost_usd,
            duration_s=self.end_t - self.t0,
            steps=self.steps,
            preemptions=[(tp - self.t0, pool) for tp, pool in self.preemptions],
        )

"""Policies the simulator can drive: tritonscale itself and the baselines.

* ``tritonscale``: :func:`tritonscale.core.autoscale.decide`, the same function
  the operator calls, fed with scraped signals; nothing of the policy lives here.
* ``hpa``: the Kubernetes HorizontalPodAutoscaler v2 algorithm with its default
  behavior (kube-controller-manager ``replica_calculator.go`` and
  ``horizontal.go``): every 15 s, ``desired = ceil(ready * metric / target)``
  unless within the 10% tolerance; not-yet-Ready pods count as 0% utilisation
  when scaling up (and never flip the direction); the recommendation is
  stabilised (scale-down: max over 300 s; scale-up: no window); scale-up is
  limited per 15 s period to max(+100%, +4 pods); scale-down up to 100%.
  One Deployment: one variant on one pool (``sim.baselines`` finds the fairest
  one by default; ``default_deployment`` is what users typically pick). Metric:
  ``utilisation`` (busy fraction of the GPU, like DCGM's GPU utilisation,
  averaged over Ready pods) or ``latency`` (the observed SLO percentile as an
  Object metric with a Value target).
* ``kpa``: Knative's autoscaler (``pkg/autoscaler/scaling/autoscaler.go``): every
  2 s, average in-flight concurrency over the 60 s stable window and the 6 s
  panic window; desired = observed / target concurrency per pod (rates limited
  to x1000 up and /2 down per tick); panic when the panic-window demand reaches
  200% of the Ready pods' target, during which it never scales down, until 60 s
  without that condition. Target concurrency per pod: the in-flight concurrency
  of one replica serving 70% (Knative's default target utilisation) of its SLO
  capacity (Little's law: that rate x the median latency there). Concurrency is
  not linear in rate under batching, so 70% of the concurrency at capacity
  would under-provision. The observed concurrency is what Knative's queue-proxy
  reports: requests in flight at the pod, queued in Triton or computing, summed
  over the pods behind the endpoints (``Simulator.concurrency``).
* ``static-peak``: the HPA's Deployment with a fixed replica count sized for
  the trace's peak 1-minute rate x (1 + headroom).
* ``oracle``: knows every future arrival and starts replicas instantly; each
  interval gets the cheapest mix (same planner, same constraints incl. spot
  protection) that the *simulator* shows meeting the SLO over that interval
  (:class:`OraclePolicy`), not the one the performance model promises: what no
  policy can beat on cost while meeting the SLO, where the pools can.
* ``foresight``: the same sizing, run with the pools' real startup times: it
  requests each pool's capacity that pool's startupSeconds ahead of the load that
  needs it (:meth:`OraclePolicy.lead`), and moves onto pairs the previous
  interval's plan does not use only where the move pays for their startups: what
  perfect knowledge of the arrivals achieves on this fleet when every replica pays
  its real startup (an achievable schedule, not a proven optimum).

Spot interruption notices (``interruptionNoticeSeconds``): ``tritonscale`` gets
them through its observation (``Observation.noticed_pools``, as the operator from
the nodes' taints); ``oracle`` and ``foresight`` plan off a noticed pool from the
notice on, as from an unavailable one (foresight keeps its Ready replicas there
until the replacement is Ready, as any policy's make-before-break would). The
one-Deployment baselines (``hpa``, ``kpa``, ``static-peak``) cannot move to
another pool, so a notice changes nothing for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tritonscale.core import perf
from tritonscale.core import planner as pl
from tritonscale.core.autoscale import decide
from tritonscale.core.pricing import mix_cost_per_hour, replica_price_per_hour
from tritonscale.core.routing import route_weights
from tritonscale.core.spec import NodePool, Profile, ScaledModelSpec, Variant
from tritonscale.core.types import Observation, PlacementState
from tritonscale.sim.engine import Key, SimConfig, Simulator, SimView

POLICIES = ("tritonscale", "hpa", "kpa", "static-peak", "oracle", "foresight")


def gateway_weights(
    spec: ScaledModelSpec, view: SimView, target: Mapping[Key, int], instant: bool = False
) -> dict[Key, float] | None:
    """``spec.routing.mode: gateway``: the backendRef weights the operator would apply
    for this step (:func:`tritonscale.core.routing.route_weights`: Ready replicas x
    capacity; a placement gets weight once Ready), for the engine's ``weighted`` load
    balancing. ``instant``: the target's replicas are Ready at once (the oracle).
    None in service mode (the Service's split)."""
    if not spec.routing.weighted:
        return None
    cur = {s.key: s for s in view.current()}
    states = [
        PlacementState(k[0], k[1], n, n if instant else min(cur[k].ready, n) if k in cur else 0)
        for k, n in sorted(target.items()) if n > 0
    ]
    states += [s for k, s in sorted(cur.items()) if target.get(k, 0) <= 0]  # still serving
    return {k: float(w) for k, w in route_weights(spec, states).items()}


def initial_rate(arrivals: NDArray[np.float64], window_s: float = 60.0) -> float:
    """Mean rate of the trace's first window: the load the warm fleet was sized for."""
    if len(arrivals) == 0:
        return 0.0
    n = int(np.searchsorted(arrivals, arrivals[0] + window_s, "left"))
    return n / window_s


# ------------------------------------------------------------------ tritonscale
class TritonscalePolicy:
    """Drives :func:`tritonscale.core.autoscale.decide` exactly as the operator does."""

    name = "tritonscale"

    def __init__(self, spec: ScaledModelSpec, start_rps: float) -> None:
        self.spec = spec
        self.interval_s = spec.scaling.interval_seconds
        self.start_rps = start_rps
        self.state: Mapping[str, Any] | None = None
        self.last_reason = ""
        self.decisions = 0
        # Gateway mode: backendRef weights per placement (read by the engine).
        self.route_weights: dict[Key, float] | None = None
        # Its longest memory (engine pre-roll): the scale-down stabilisation window
        # after the slowest pool's startup.
        self.settle_s = spec.scaling.scale_down_stabilization_seconds + max(
            (p.startup_seconds for p in spec.node_pools), default=0.0
        )

    def initial(self, view: SimView) -> Mapping[Key, int]:
        d = decide(self.spec, Observation(rps=self.start_rps), None, view.now)
        self.state = json.loads(json.dumps(d.state))
        self.last_reason = d.reason
        self.route_weights = gateway_weights(self.spec, view, d.replicas(), instant=True)
        return d.replicas()

    def step(self, view: SimView) -> Mapping[Key, int]:
        # The operator's signals: whole-model and per-placement rate and latency,
        # queue time and pending requests (adapters/signals.py), from the replay.
        obs = view.observe(self.spec.slo.latency.percentile)
        d = decide(self.spec, obs, self.state, view.now)
        # The operator persists the state as JSON in status between steps: so do we.
        self.state = json.loads(json.dumps(d.state))
        self.last_reason = d.reason
        self.decisions += 1
        self.route_weights = gateway_weights(self.spec, view, d.replicas())
        return d.replicas()


# --------------------------------------------------------------------- helpers
def default_deployment(spec: ScaledModelSpec) -> tuple[Variant, NodePool]:
    """The user's one-Deployment choice: best accuracy on the cheapest on-demand pool."""
    for v in sorted(spec.eligible_variants(), key=lambda v: -v.accuracy):
        pools = [p for p in spec.node_pools if v.profile_for(p.accelerator) is not None]
        od = [p for p in pools if not p.is_spot] or pools
        if od:
            return v, min(od, key=replica_price_per_hour)
    raise ValueError("no variant has a profile for any node pool")


def single_deployment(
    spec: ScaledModelSpec, variant: str | None = None, pool: str | None = None
) -> tuple[Variant, NodePool, Profile]:
    """The one (variant, pool) a baseline runs: the user's choice, else the default.

    Raises ValueError (naming the choice) when the names are unknown or the variant
    has no profile for the pool's accelerator."""
    v0, p0 = default_deployment(spec)
    try:
        v = spec.variant(variant) if variant else v0
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}") from None
    try:
        p = spec.pool(pool) if pool else p0
    except KeyError:
        raise ValueError(f"unknown node pool {pool!r}") from None
    prof = v.profile_for(p.accelerator)
    if prof is None:
        raise ValueError(
            f"variant {v.name!r} has no profile for node pool {p.name!r}'s accelerator "
            f"{p.accelerator!r}"
        )
    return v, p, prof


def replicas_for(
    spec: ScaledModelSpec, variant: Variant, pool: NodePool, rps: float
) -> int:
    """Fewest replicas of one (variant, pool) meeting the SLO at ``rps``."""
    prof = variant.profile_for(pool.accelerator)
    if prof is None:
        raise ValueError(f"{variant.name} has no profile for {pool.accelerator}")
    cap = perf.capacity(prof, spec.slo.latency)
    if rps <= 0:
        return max(1, spec.scaling.min_replicas)
    return max(1, spec.scaling.min_replicas, math.ceil(rps / cap - 1e-9)) if cap > 0 else 1


def _replicas_for_utilisation(prof: Any, rps: float, target: float, cap: int) -> int:
    for n in range(1, cap + 1):
        if perf.predict_replica(prof, rps / n, 99.0).busy <= target:
            return n
    return cap


# -------------------------------------------------------------------------- HPA
@dataclass
class HPAConfig:
    metric: str = "utilisation"  # or "latency"
    target: float = 0.7  # utilisation fraction, or latency in ms
    tolerance: float = 0.1
    sync_period_s: float = 15.0
    scale_down_window_s: float = 300.0
    scale_up_window_s: float = 0.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0
    min_replicas: int = 1
    # None: the pool's maxReplicas.
    max_replicas: int | None = None

    @property
    def upper(self) -> int:
        return 10 if self.max_replicas is None else self.max_replicas


@dataclass
class HPAState:
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_events: list[tuple[float, int]] = field(default_factory=list)  # (t, +-delta)


def hpa_raw_recommendation(
    cfg: HPAConfig,
    current: int,
    ready: int,
    metric: float | None,
    per_ready_usage: float | None = None,
) -> int:
    """The replica calculator: desired replicas before behaviors (None metric: hold)."""
    if metric is None or current == 0:
        return current
    ratio = metric / cfg.target
    unready = max(0, current - ready)
    if cfg.metric == "latency":
        # Object metric, Value target: ratio applied to the Ready pod count.
        if abs(ratio - 1.0) <= cfg.tolerance:
            return current
        return math.ceil(ratio * max(ready, 1))
    # Resource-style utilisation averaged over Ready pods.
    if ready == 0:
        return current
    if unready == 0 or ratio <= 1.0:
        if abs(ratio - 1.0) <= cfg.tolerance:
            return current
        return math.ceil(ratio * ready)
    # Scaling up with unready pods: they count as 0% usage.
    new_ratio = metric * ready / (cfg.target * (ready + unready))
    if abs(new_ratio - 1.0) <= cfg.tolerance or new_ratio < 1.0:
        return current
    return math.ceil(new_ratio * (ready + unready))


def hpa_normalize(
    cfg: HPAConfig, st: HPAState, current: int, raw: int, now: float
) -> int:
    """Stabilisation windows, then the scale-up/down rate policies, then min/max."""
    up_rec = raw
    down_rec = raw
    for t, r in st.recommendations:
        if t > now - cfg.scale_up_window_s:
            up_rec = min(up_rec, r)
        if t > now - cfg.scale_down_window_s:
            down_rec = max(down_rec, r)
    keep = max(cfg.scale_up_window_s, cfg.scale_down_window_s)
    st.recommendations = [(t, r) for t, r in st.recommendations if t > now - keep]
    st.recommendations.append((now, raw))
    desired = current
    if desired < up_rec:
        desired = up_rec
    if desired > down_rec:
        desired = down_rec
    if desired > current:
        added = sum(d for t, d in st.scale_events if d > 0 and t > now - cfg.scale_up_period_s)
        start = current - added
        limit = max(
            start + cfg.scale_up_pods,
            math.ceil(start * (1.0 + cfg.scale_up_percent / 100.0)),
        )
        desired = min(desired, limit, cfg.upper)
    elif desired < current:
        removed = -sum(
            d for t, d in st.scale_events if d < 0 and t > now - cfg.scale_down_period_s
        )
        start = current + removed
        limit = math.ceil(start * (1.0 - cfg.scale_down_percent / 100.0))
        desired = max(desired, limit, cfg.min_replicas)
    desired = max(cfg.min_replicas, min(cfg.upper, desired))
    if desired != current:
        st.scale_events.append((now, desired - current))
    horizon = max(cfg.scale_up_period_s, cfg.scale_down_period_s)
    st.scale_events = [(t, d) for t, d in st.scale_events if t > now - horizon]
    return desired


class HPAPolicy:
    name = "hpa"

    def __init__(
        self,
        spec: ScaledModelSpec,
        start_rps: float,
        cfg: HPAConfig | None = None,
        variant: str | None = None,
        pool: str | None = None,
    ) -> None:
        self.variant, self.pool, self.profile = single_deployment(spec, variant, pool)
        self.key: Key = (self.variant.name, self.pool.name)
        cfg = cfg or HPAConfig()
        if cfg.max_replicas is None:
            cfg = replace(cfg, max_replicas=self.pool.max_replicas)
        self.cfg = cfg
        self.spec = spec
        self.interval_s = self.cfg.sync_period_s
        # Its longest memory: the scale-down window, then the pods' startup.
        self.settle_s = cfg.scale_down_window_s + cfg.sync_period_s + self.pool.startup_seconds
        self.st = HPAState()
        self.start_rps = start_rps
        self.last_reason = ""

    def initial(self, view: SimView) -> Mapping[Key, int]:
        if self.cfg.metric == "utilisation":
            n = _replicas_for_utilisation(
                self.profile, self.start_rps, self.cfg.target, self.cfg.upper
            )
        else:
            n = replicas_for(self.spec, self.variant, self.pool, self.start_rps)
        n = max(self.cfg.min_replicas, min(self.cfg.upper, n))
        return {self.key: n}

    def step(self, view: SimView) -> Mapping[Key, int]:
        cur = {p.key: p for p in view.current()}
        ps = cur.get(self.key)
        current = ps.desired if ps else 0
        ready = ps.ready if ps else 0
        if self.cfg.metric == "utilisation":
            metric = view.utilisation(self.key, self.cfg.sync_period_s)
        else:
            metric = view.latency_ms(self.spec.slo.latency.percentile)
        raw = hpa_raw_recommendation(self.cfg, current, ready, metric)
        desired = hpa_normalize(self.cfg, self.st, current, raw, view.now)
        self.last_reason = "metric" if metric is not None else "no-metric"
        return {self.key: desired}


# -------------------------------------------------------------------------- KPA
@dataclass
class KPAConfig:
    tick_s: float = 2.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0  # 200% of target
    target_utilisation: float = 0.7
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    min_replicas: int = 1
    max_replicas: int = 10


class KPAPolicy:
    name = "kpa"

    def __init__(
        self,
        spec: ScaledModelSpec,
        start_rps: float,
        cfg: KPAConfig | None = None,
        variant: str | None = None,
        pool: str | None = None,
    ) -> None:
        self.variant, self.pool, prof = single_deployment(spec, variant, pool)
        self.key: Key = (self.variant.name, self.pool.name)
        self.cfg = cfg or KPAConfig(max_replicas=self.pool.max_replicas)
        self.spec = spec
        self.interval_s = self.cfg.tick_s
        # Concurrency of one replica serving target_utilisation x its SLO capacity
        # (Little's law with the median latency there).
        rate = self.cfg.target_utilisation * perf.capacity(prof, spec.slo.latency)
        median_ms = perf.predict_replica(prof, rate, 50.0).latency_ms
        self.target = max(0.01, rate * median_ms / 1000.0)
        self.start_rps = start_rps
        self.settle_s = self.cfg.stable_window_s * 2 + self.pool.startup_seconds
        self.panic_since: float | None = None
        self.max_panic_pods = 0
        self.last_reason = ""

    def initial(self, view: SimView) -> Mapping[Key, int]:
        n = replicas_for(self.spec, self.variant, self.pool, self.start_rps)
        return {self.key: max(self.cfg.min_replicas, min(self.cfg.max_replicas, n))}

    def desired(self, stable: float, panic: float, ready: int, now: float) -> int:
        """One Knative autoscaler tick (exposed for tests)."""
        c = self.cfg
        ready_pods = max(1, ready)
        max_up = math.ceil(c.max_scale_up_rate * ready_pods)
        max_down = math.floor(ready_pods / c.max_scale_down_rate)
        dspc = math.ceil(min(max(stable / self.target, max_down), max_up))
        dppc = math.ceil(min(max(panic / self.target, max_down), max_up))
        # autoscaler.go: isOverPanicThreshold := dppc/readyPodsCount >= PanicThreshold,
        # dppc = ceil(observedPanicValue / target) before the rate limits.
        over = math.ceil(panic / self.target) / ready_pods >= c.panic_threshold
        if over:
            # Start panicking, or extend the panic while the condition holds.
            self.panic_since = now
        elif self.panic_since is not None and self.panic_since + c.stable_window_s < now:
            # The surge has made its way into the stable window: stop panicking.
            self.panic_since = None
            self.max_panic_pods = 0
        want = dspc
        if self.panic_since is not None:
            want = max(want, dppc)
            # No scale-down while panicking.
            if want > self.max_panic_pods:
                self.max_panic_pods = want
            else:
                want = self.max_panic_pods
            self.last_reason = "panic"
        else:
            self.last_reason = "stable"
        return max(c.min_replicas, min(c.max_replicas, want))

    def step(self, view: SimView) -> Mapping[Key, int]:
        cur = {p.key: p for p in view.current()}
        ps = cur.get(self.key)
        ready = ps.ready if ps else 0
        stable = view.concurrency(self.cfg.stable_window_s)
        panic = view.concurrency(self.cfg.panic_window_s)
        return {self.key: self.desired(stable, panic, ready, view.now)}


# ------------------------------------------------------------------ static-peak
class StaticPeakPolicy:
    name = "static-peak"

    def __init__(
        self,
        spec: ScaledModelSpec,
        peak_rps: float,
        variant: str | None = None,
        pool: str | None = None,
    ) -> None:
        v, p, _prof = single_deployment(spec, variant, pool)
        self.key: Key = (v.name, p.name)
        need = replicas_for(spec, v, p, peak_rps * (1 + spec.scaling.headroom))
        self.n = min(p.max_replicas, need)
        self.interval_s = 60.0
        self.last_reason = "static"

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return {self.key: self.n}

    def step(self, view: SimView) -> Mapping[Key, int]:
        return {self.key: self.n}


# ----------------------------------------------------------------------- oracle
# Load multipliers the oracle tries when sizing a window on the simulator.
ORACLE_MARGINS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5, 2.0, 3.0)


class _Hold:
    name = "hold"

    def __init__(self, plan: Mapping[Key, int], interval_s: float) -> None:
        self.plan = plan
        self.interval_s = interval_s
        self.route_weights: dict[Key, float] | None = None

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return self.plan

    def step(self, view: SimView) -> Mapping[Key, int]:
        return self.plan


class OraclePolicy:
    """References with perfect knowledge of the arrivals (see the module docstring).

    Every interval is sized on the simulator itself: the planner's cheapest mix for
    the interval's actual rate x m, for the smallest m in :data:`ORACLE_MARGINS`
    (bisected) whose replay of that interval alone -- replicas Ready, queues empty,
    the same load balancing, batcher and client timeout -- meets the SLO
    percentile; the largest m when none does (the pools' capacity binds).  As the
    percentile of a minute is at most the largest percentile of its intervals, every
    minute then meets the SLO, up to queues carried across interval boundaries.

    ``lookahead_s = 0`` is ``oracle`` (run with zero startup: what no policy can
    beat on cost).  ``lookahead_s`` = the pools' longest startup is ``foresight``
    (run with the real startups): it holds, for each (variant, pool), the most any
    interval from now to that pool's own startup ahead needs (at most
    ``lookahead_s``; no interval after the last arrival), so capacity requested now
    is Ready when that load comes, and billed no earlier than it must be. Its
    interval plans stay on the previous interval's pairs (the cheapest plan there
    the replay accepts) unless the oracle's move off them saves, over the intervals
    it stays cheaper (up to the stabilisation window), more than the new replicas'
    startups cost (:meth:`_stay`): the oracle's flips between near-equal mixes
    (16 T4-spot at $3.22/h, 8 L4-spot at $3.34/h) each cost foresight a fleet
    billed through its startup and, in ``service`` routing, both fleets meanwhile.
    """

    name = "oracle"

    def __init__(
        self,
        spec: ScaledModelSpec,
        arrivals: NDArray[np.float64],
        config: SimConfig | None = None,
        lookahead_s: float = 0.0,
        name: str = "oracle",
    ) -> None:
        self.spec = spec
        self.arr = arrivals
        self.interval_s = spec.scaling.interval_seconds
        self.last_reason = name
        self.name = name
        self.lookahead_s = lookahead_s
        self.route_weights: dict[Key, float] | None = None
        base = config or SimConfig()
        self.check_cfg = SimConfig(
            seed=base.seed,
            load_balancing=base.load_balancing,
            client_timeout_s=base.client_timeout_s,
            abandoned=base.abandoned,
            batch_growth=base.batch_growth,
            startup_override_s=0.0,
            warmup_s=0.0,
            preroll_max_s=0.0,
        )
        self._sized: dict[tuple[int, frozenset[str]], dict[Key, int]] = {}
        self._free: dict[tuple[int, frozenset[str]], dict[Key, int]] = {}
        self.startup_override_s = base.startup_override_s
        self._lead_max = max((self.lead(p.name) for p in spec.node_pools), default=0)
        self.windows_sized = 0

    def _plan(self, rate: float, unavailable: frozenset[str]) -> dict[Key, int]:
        return self._plan_on(rate, unavailable, None)

    def _plan_on(
        self, rate: float, unavailable: frozenset[str], keys: frozenset[Key] | None
    ) -> dict[Key, int]:
        """The planner's cheapest mix for ``rate`` (on ``keys`` only, if given)."""
        sc = self.spec.scaling
        combos = [c for c in pl.candidates(self.spec, unavailable)
                  if keys is None or c.key in keys]
        req = pl.Request(
            load_rps=rate,
            od_load_rps=rate if sc.spot_protection else 0.0,
            min_replicas=sc.min_replicas,
            max_replicas=sc.max_replicas,
            max_cost_per_hour=self.spec.slo.max_cost_per_hour,
            weighted=self.spec.routing.weighted,
        )
        plan = (
            pl.solve(combos, req)
            or pl.solve(combos, req, respect_budget=False)
            or pl.best_effort(combos, req, respect_budget=False)
        )
        mix = dict(plan.counts) if plan is not None else {}
        return mix

    def _meets(self, plan: Mapping[Key, int], lo: int, hi: int, t0: float) -> bool:
        if hi <= lo:
            return True
        if not plan:
            return False
        arr = self.arr[lo:hi] - t0
        hold = _Hold(plan, self.interval_s)
        if self.spec.routing.weighted:
            ready = [PlacementState(k[0], k[1], n, n) for k, n in sorted(plan.items()) if n > 0]
            hold.route_weights = {k: float(w) for k, w in route_weights(self.spec, ready).items()}
        run = Simulator(self.spec, arr, self.check_cfg).run(hold)
        lat = (run.done - run.arrivals) * 1000.0
        slo = self.spec.slo.latency
        k = max(0, math.ceil(slo.percentile / 100.0 * len(lat)) - 1)
        return float(np.partition(lat, k)[k]) <= slo.target_ms

    def _bounds(self, k: int) -> tuple[int, int, float]:
        t0 = k * self.interval_s
        lo = int(np.searchsorted(self.arr, t0, "left"))
        hi = int(np.searchsorted(self.arr, t0 + self.interval_s, "left"))
        return lo, hi, t0

    def _sized_plan(
        self, k: int, unavailable: frozenset[str], keys: frozenset[Key] | None = None
    ) -> dict[Key, int] | None:
        """The cheapest plan (on ``keys`` only, if given) whose replay of interval
        ``k`` meets the SLO, over the margins bisected; None if none does."""
        lo, hi, t0 = self._bounds(k)
        rate = (hi - lo) / self.interval_s
        best: dict[Key, int] | None = None
        a, b = 0, len(ORACLE_MARGINS) - 1
        tried: dict[tuple[tuple[Key, int], ...], bool] = {}
        while a <= b:
            mid = (a + b) // 2
            if keys is None:
                plan = self._plan(rate * ORACLE_MARGINS[mid], unavailable)
            else:
                plan = self._plan_on(rate * ORACLE_MARGINS[mid], unavailable, keys)
            sig = tuple(sorted(plan.items()))
            ok = tried.get(sig)
            if ok is None:
                ok = self._meets(plan, lo, hi, t0)
                tried[sig] = ok
            if ok:
                best = plan
                b = mid - 1
            else:
                a = mid + 1
        return best

    def _cheapest(self, k: int, unavailable: frozenset[str]) -> dict[Key, int]:
        """The oracle's plan for interval ``k``: the cheapest the replay accepts, else
        the plan for the largest margin (the pools' capacity binds). Cached."""
        got = self._free.get((k, unavailable))
        if got is None:
            lo, hi, _ = self._bounds(k)
            got = self._sized_plan(k, unavailable)
            if got is None:
                got = self._plan((hi - lo) / self.interval_s * ORACLE_MARGINS[-1],
                                 unavailable)
            self._free[(k, unavailable)] = got
            self.windows_sized += 1
        return got

    def window_plan(self, k: int, unavailable: frozenset[str]) -> dict[Key, int]:
        """The plan held for interval ``k`` (cached): the oracle's, or, with a
        look-ahead, the previous interval's pairs when moving off them does not pay."""
        got = self._sized.get((k, unavailable))
        if got is not None:
            return got
        best = self._cheapest(k, unavailable)
        if self.lookahead_s > 0 and k > 0:
            best = self._stay(k, unavailable, best)
        self._sized[(k, unavailable)] = best
        return best

    def _stay(
        self, k: int, unavailable: frozenset[str], best: dict[Key, int]
    ) -> dict[Key, int]:
        """Foresight: a plan that starts replicas on pairs the previous interval's
        plan does not use pays their startups (billed, not serving) and, in
        ``service`` routing, holds both fleets meanwhile. It is taken only if what
        it saves per hour, over the intervals it stays the cheaper way (up to the
        stabilisation window), pays for those startups; otherwise interval ``k``
        gets the cheapest plan on the previous pairs that the replay accepts."""
        prev = self.window_plan(k - 1, unavailable)
        have = frozenset(key for key, n in prev.items() if n > 0)
        new = {key: n for key, n in best.items() if n > 0 and key not in have}
        if not have or not new:
            return best
        stay = self._sized_plan(k, unavailable, have)
        if stay is None:
            return best
        start = sum(
            n * replica_price_per_hour(self.spec.pool(key[1])) * self._startup(key[1])
            for key, n in new.items()) / 3600.0
        if start <= 0:
            return best
        # The intervals from k on whose oracle plan leaves the previous pairs.
        last = int(self.arr[-1] // self.interval_s) if len(self.arr) else k
        span = math.ceil(self.spec.scaling.scale_down_stabilization_seconds / self.interval_s)
        run = 0
        for j in range(k, min(last, k + span - 1) + 1):
            if all(key in have for key, n in self._cheapest(j, unavailable).items() if n > 0):
                break
            run += 1
        saved = (mix_cost_per_hour(self.spec, stay) - mix_cost_per_hour(self.spec, best)) \
            * run * self.interval_s / 3600.0
        return best if saved > start else stay

    def _startup(self, pool: str) -> float:
        s = self.startup_override_s
        return self.spec.pool(pool).startup_seconds if s is None else s

    def lead(self, pool: str) -> int:
        """Intervals ahead of its need a replica on ``pool`` is requested: the pool's
        startup in the replay (at most ``lookahead_s``), so it is Ready when needed."""
        return math.ceil(min(self.lookahead_s, self._startup(pool)) / self.interval_s - 1e-9)

    def _target(self, now: float, unavailable: frozenset[str]) -> Mapping[Key, int]:
        k0 = int(now // self.interval_s + 1e-9)
        # Intervals after the last arrival are not replayed: nothing is sized for them.
        last = int(self.arr[-1] // self.interval_s) if len(self.arr) else k0
        out: dict[Key, int] = {}
        for k in range(k0, max(k0, last) + 1):
            if k > k0 and k - k0 > self._lead_max:
                break
            for key, n in self.window_plan(k, unavailable).items():
                # A pool's replicas are ordered its own startup ahead, no earlier.
                if k - k0 <= self.lead(key[1]):
                    out[key] = max(out.get(key, 0), n)
        return out

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return self.step(view)

    def _hold_until_ready(
        self, view: SimView, mix: Mapping[Key, int], unavailable: frozenset[str],
        down: frozenset[str],
    ) -> dict[Key, int]:
        """Foresight's make-before-break. Ordering ahead, it has what the current
        interval needs Ready, except where it could not see the need coming: a
        spot pool back from a preemption's outage (the intervals' plans move onto
        it at once), replicas lost. Then the Ready replicas the target drops stay
        until the current interval's plan is Ready, as any policy's would: on the
        bursty fleet (seed 1, 1 preemption/h) it dropped 4 L4-spot replicas when
        t4-spot came back, ordered 9 T4-spot, and had nothing Ready for 120 s.
        ``unavailable``: the pools planned off (down or under an interruption
        notice); ``down``: those whose replicas cannot serve (a noticed pool's Ready
        replicas are held like any other until their replacement is Ready)."""
        out = dict(mix)
        k0 = int(view.now // self.interval_s + 1e-9)
        need = self.window_plan(k0, unavailable)
        cur = {s.key: s for s in view.current()}
        if all((cur[k].ready if k in cur else 0) >= n for k, n in need.items()):
            return out
        for k, s in cur.items():
            if k[1] not in down and s.ready > out.get(k, 0):
                out[k] = s.ready
        return out

    def step(self, view: SimView) -> Mapping[Key, int]:
        # A pool under an interruption notice is planned off at once, as an unavailable
        # one; its Ready replicas still serve until the event.
        down = view.unavailable_pools()
        unavailable = down | frozenset(view.noticed_pools())
        mix: Mapping[Key, int] = self._target(view.now, unavailable)
        if self.lookahead_s > 0:
            mix = self._hold_until_ready(view, mix, unavailable, down)
        self.route_weights = gateway_weights(
            self.spec, view, mix, instant=self.lookahead_s <= 0.0
        )
        return mix

"""Bursts and cold starts: volatility headroom, backlog drain and a panic path.

Pure code. :func:`assess` turns one step's signals and a short history kept in the
autoscaler state into three adjustments of the load the planner plans for
(:func:`tritonscale.core.autoscale.decide` applies them):

1. **Volatility headroom.** New capacity takes ``H`` = the startup horizon of the
   pools in use (slowest ``startupSeconds`` + one interval) to become Ready, so the
   fleet must hold whatever the load can rise to within ``H``. The rule measures
   it on the load's recent past: over the last ``max(600 s, 5 H)`` (plus the
   scale-down window ``D``) of per-step rates, at every step ``t`` the rise
   ``max(rate over (t, t + H]) / max(rate over [t - D, t]) - 1`` -- the rise above
   what the scale-down window still holds, so a return from a lull is no rise --
   and takes its median (the typical rise: a rare burst does not set the
   headroom, a sustained ramp does). Headroom = that rise, at least
   ``scaling.headroom`` (the constant floor) and at most ``scaling.maxHeadroom``.
   Until the measured rises span four horizons (and at least 8 steps), the floor
   applies: the median of a shorter history is one event's (the ramp a fleet just
   met would double the headroom for the next window on its own).
2. **Backlog drain.** Requests waiting beyond what a fleet meeting the SLO holds
   in flight (Little's law: arrival rate x latency target) are a backlog; capacity
   sized for the arrival rate alone never drains it (only the headroom does,
   slowly). New capacity is Ready only after ``H``, by when the Ready fleet has
   drained ``(capacity - lasting) x H`` of it (or, overloaded, added to it), so
   the fleet needs ``max(0, backlog - (capacity - lasting) x H) / drainSeconds``
   above the lasting rate (4.): the backlog left when new capacity is Ready
   drains within ``scaling.drainSeconds``. Clients that give up after
   ``scaling.clientTimeoutSeconds`` (``T``) are no longer waiting then for what they
   sent before ``now + H - T``: the backlog left is at most the arrivals at the
   lasting rate over ``min(H, T)`` plus, when ``T > H``, the part of today's
   backlog sent in the last ``T - H`` seconds (:func:`backlog_left`); no replica
   is ordered for requests that will have timed out (unset: patient clients).
   And when ``T < H`` and the Ready fleet holds the lasting rate, every request
   queued now is served or gone by ``now + T``; what waits then (at most the
   lasting rate x ``T``) drains at the fleet's spare capacity for the ``H - T``
   left: a burst's queue that the Ready fleet clears before new capacity could be
   Ready orders none (capacity Ready after the queue is gone is waste). Replicas
   already starting count too: their capacity drains from when they are Ready (at
   most their pool's ``startupSeconds`` less one interval from now: they were
   ordered at an earlier step).
   ``decide`` plans for the larger of the stabilised load
   and ``rps x (1 + headroom) + drain`` (the look-ahead's margin above the current
   rate drains the backlog until the forecast's rise comes; the two are not summed).
   This term comes after the stabilisation windows, so it leaves as soon as the
   backlog does. ``capacity`` is the Ready replicas'
   capacity at the SLO as the planner counts it. Backlog =
   ``max(pending - rps x target, rps x (queue - target / 2))`` from Triton's
   ``nv_inference_pending_request_count`` and ``nv_inference_queue_duration_us``
   (the larger estimate; either may be unknown).
3. **Panic** (like Knative's KPA panic mode): a backlog above one second of
   arrivals, or an observed latency above the target, starts (or extends) a panic
   of ``scaling.panicSeconds``. While panicking the planning load never falls (no
   scale-down on a stale forecast or a window that has not seen the surge yet),
   and, when Triton's backlog signals are unknown (latency is the only evidence),
   the load is at least the lasting rate scaled by the latency overshoot
   (``lasting x min(2, latency / target)``): the policy does not wait for the
   forecast to catch up.
4. **Lasting rate.** Capacity ordered now is Ready after ``H``: it serves only
   the part of the current rate still there by then. A rate counts once it has
   *persisted* for ``PERSISTENCE`` x ``H`` (half the startup horizon of the pools
   that would be ordered), measured in time, not in steps, so the rule scales with
   the pools' startup and the decision interval. Two ways to persist:

   - *held*: the lowest rate of the last ``PERSISTENCE x H`` (the level the rate
     has stayed at or above all that time);
   - *rising*: a held level that itself rose over the ``PERSISTENCE x H`` before
     (a ramp, or a step seen through a rate window longer than the startup, which
     looks like one), extrapolated over ``H``: ``held + rise x H / (PERSISTENCE x
     H)``. A burst shorter than ``PERSISTENCE x H`` moves neither: the held level
     and the one before are the rate it rose from.

   A *cluster of bursts* is no level: a held level more than ``1 + maxHeadroom``
   times the highest one that held within the scale-down window before it, whose
   rate still swings by more than that factor within ``PERSISTENCE x H`` (bursts
   with gaps, not a step), counts only as far as it has held for the whole ``H``
   (:func:`held_levels`). On the bursty fleet (seed 2) a cluster of 12x bursts
   lasting 105 s, against ``H`` = 135 s, was held at 10x the level for 67 s and
   planned for in full: 54 replicas, Ready after the cluster. A steady step
   (within that factor over ``PERSISTENCE x H``) still counts after
   ``PERSISTENCE x H``.

   The lasting rate is the current rate, at most the larger of that and the
   forecast's look-ahead (Holt's level and trend, which is not shown a rate above
   ``1 + maxHeadroom`` times the highest one that persisted within the
   scale-down window until it persists itself: :func:`persisted_level`).
   :func:`decide <tritonscale.core.autoscale.decide>` plans the current rate, the
   drain and the panic floor from it, so a miss of the SLO on the Ready fleet
   still orders capacity for the current rate whenever that rate has lasted long
   enough for capacity ordered now to still meet it. On the
   bursty fleet (benchmarks/bench_policies.py; ``H`` = 135-255 s, 15-s
   decisions) a rate counts after 67-127 s: a 10-30 s burst at 12x the mean, which
   planned at its current rate ordered up to 54 replicas Ready after it was over,
   orders nothing for its rate. In the closed loop (tests/e2e/test_closed_loop.py:
   5-s startup, 2-s decisions, ``H`` = 7 s) a rate counts after 3.5 s: a step is
   planned in full at its second observation, and a climb seen through the 10-s
   rate window as soon as it is seen (it has been rising for longer than 3.5 s).

State (keys in the autoscaler state): ``vh`` per-step rate history
``[[t, rps], ...]``, ``pz`` the time the panic ends (or absent).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Observation, finite_or_none

RISE_QUANTILE = 0.5
MIN_HISTORY_S = 600.0
# Fewer measured rises than this: the floor applies (one ramp is not a distribution).
MIN_RISES = 8
# ... and they must span this many startup horizons.
MIN_HORIZONS = 4.0
MAX_LATENCY_BOOST = 2.0
# A backlog above this many seconds of arrivals starts a panic.
PANIC_BACKLOG_S = 1.0
# A rate is planned for once it has persisted this fraction of the startup horizon
# H (module doc, 4.): capacity ordered for a shorter burst is Ready after it ends.
PERSISTENCE = 0.5


@dataclass(frozen=True)
class BurstAssessment:
    """What :func:`assess` found, for the planning load and the explanation."""

    headroom: float  # fraction added to max(forecast, rps)
    volatility: float | None  # measured rise quantile, None until enough history
    backlog: float  # requests beyond what a fleet meeting the SLO holds in flight
    drain_rps: float  # added to the planning load to drain the backlog
    panic: bool
    panic_rps: float  # floor of the pre-headroom load while panicking (0 otherwise)
    lasting_rps: float  # the part of the current rate expected to outlast a startup
    history: list[list[float]]
    panic_until: float | None

    def details(self) -> dict[str, Any]:
        return {
            "headroom": round(self.headroom, 4),
            "volatility": None if self.volatility is None else round(self.volatility, 4),
            "backlog": round(self.backlog, 1),
            "drain_rps": round(self.drain_rps, 3),
            "panic": self.panic,
        }


def _history(raw: Any, now: float, keep_s: float) -> list[list[float]]:
    out: list[list[float]] = []
    if isinstance(raw, list):
        for item in raw:
            if (
                isinstance(item, (list, tuple))
                and len(item) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)
            ):
                t, v = float(item[0]), float(item[1])
                if math.isfinite(t) and math.isfinite(v) and v >= 0 and now - keep_s <= t < now:
                    out.append([t, v])
    out.sort()
    return out


def rise_quantile(
    history: Sequence[Sequence[float]],
    horizon_s: float,
    held_s: float = 0.0,
    q: float = RISE_QUANTILE,
    min_samples: int = 1,
) -> float | None:
    """Quantile ``q`` of how far the rate rose within ``horizon_s`` above what was held.

    At each step ``t``: ``max(rate over (t, t + horizon]) / max(rate over
    [t - held_s, t]) - 1`` (at least 0). ``held_s`` is the scale-down window: the
    stabilised load still holds the highest rate of that window, so a return to a
    recent level (the end of a lull) is no rise. Only steps whose whole horizon
    lies inside the history count; None with fewer than ``min_samples``.
    """
    if not history:
        return None
    end = history[-1][0]
    rises: list[float] = []
    n = len(history)
    for i in range(n):
        t, v = history[i]
        if t + horizon_s > end + 1e-9:
            break
        peak = max((history[j][1] for j in range(i + 1, n) if history[j][0] <= t + horizon_s),
                   default=v)
        held = max((history[j][1] for j in range(i + 1) if history[j][0] >= t - held_s),
                   default=v)
        rises.append(max(0.0, peak / max(held, 1e-9) - 1.0))
    if len(rises) < max(1, min_samples):
        return None
    rises.sort()
    k = min(len(rises) - 1, max(0, math.ceil(q * len(rises)) - 1))
    return rises[k]


def recent_rise(history: Sequence[Sequence[float]], now: float, horizon_s: float) -> float:
    """How far the rate rose over the last ``horizon_s``: the last rate minus the
    lowest one of that span (0 when it did not rise)."""
    span = [v for t, v in history if now - horizon_s <= t <= now]
    if not span:
        return 0.0
    return max(0.0, span[-1] - min(span))


def lasting_rate(history: Sequence[Sequence[float]], now: float, horizon_s: float,
                 expected_rps: float | None = None, burst_factor: float | None = None,
                 window_s: float = 0.0) -> float:
    """The part of the current rate expected to outlast a startup (module doc, 4.).

    ``history`` holds ``[t, rps]`` per step; ``horizon_s`` is ``H``, the time new
    capacity takes to be Ready. With ``tau = PERSISTENCE x H``: ``held`` = the
    lowest rate of ``(now - tau, now]``, ``before`` = the lowest of ``(now - 2 tau,
    now - tau]``; the rate that persisted is ``held + max(0, held - before) x H /
    tau``, at least ``expected_rps`` (the forecast's look-ahead) when given, and at
    most the last rate. With ``burst_factor`` (and the scale-down window
    ``window_s``), a held level that is a cluster of bursts (:func:`held_levels`)
    counts only as far as it has held for ``H``, with no rise extrapolated from it.
    0 with no history."""
    upto = sorted((float(t), float(v)) for t, v in history if t <= now)
    if not upto:
        return 0.0
    last = upto[-1][1]
    tau = PERSISTENCE * max(0.0, horizon_s)
    held = min((v for t, v in upto if t > now - tau), default=last)
    before = min((v for t, v in upto if now - 2.0 * tau < t <= now - tau), default=held)
    level = held
    if burst_factor is not None:
        level = held_levels(upto, horizon_s, window_s, burst_factor)[-1]
    if level < held:
        lasting = level  # a burst cluster that has not held for H: no ramp from it
    else:
        lasting = held + (max(0.0, held - before) * horizon_s / tau if tau > 0 else 0.0)
    if expected_rps is not None:
        lasting = max(lasting, expected_rps)
    return min(last, lasting)


def held_levels(history: Sequence[Sequence[float]], horizon_s: float,
                window_s: float = 0.0, burst_factor: float | None = None) -> list[float]:
    """The level the rate has held at each step of ``history`` (module doc, 4.).

    At step ``t``: the lowest rate of ``(t - tau, t]``, ``tau = PERSISTENCE x H``.
    With ``burst_factor`` (``1 + maxHeadroom``), a cluster of bursts is no level: a
    held level more than ``burst_factor`` times the highest one held within the
    ``window_s`` (the scale-down window) before ``t - tau``, over a span whose rate
    still swung by more than ``burst_factor`` (bursts with gaps, not a step),
    counts only as far as it has held for the whole ``H`` (the lowest rate of
    ``(t - H, t]``, at least that earlier level). Capacity ordered for it is Ready
    ``H`` later: a cluster of 10-30-s bursts spanning ``tau`` was planned for in
    full and its capacity was Ready after the cluster. A steady step (within
    ``burst_factor`` over ``tau``) counts after ``tau`` as before."""
    pts = sorted((float(t), float(v)) for t, v in history)
    tau = PERSISTENCE * max(0.0, horizon_s)
    times = [t for t, _ in pts]
    out: list[float] = []
    for i, (t, _) in enumerate(pts):
        lo = bisect.bisect_right(times, t - tau, 0, i + 1)
        span = [v for _, v in pts[lo:i + 1]]
        h = min(span)
        level = h
        if burst_factor is not None:
            a = bisect.bisect_left(times, t - tau - window_s, 0, i)
            b = bisect.bisect_right(times, t - tau, 0, i)
            if b > a:
                ref = max(out[a:b])
                if h > burst_factor * ref and max(span) > burst_factor * h:
                    lo_h = bisect.bisect_right(times, t - horizon_s, 0, i + 1)
                    level = max(ref, min(v for _, v in pts[lo_h:i + 1]))
        out.append(level)
    return out


def persisted_level(history: Sequence[Sequence[float]], now: float, horizon_s: float,
                    window_s: float, burst_factor: float | None = None,
                    burst_window_s: float | None = None) -> float | None:
    """The highest rate that persisted within the last ``window_s``: the largest,
    over the steps ``t`` of ``[now - window_s, now]``, of the level held at ``t``
    (:func:`held_levels`: the lowest rate of ``(t - tau, t]``, ``tau = PERSISTENCE x
    H``; with ``burst_factor``, a burst cluster beyond what held within
    ``burst_window_s`` before it (default ``window_s``) counts only once it has held
    for ``H``). None when the history does not reach back ``tau`` (nothing is known
    to have persisted yet)."""
    upto = sorted((float(t), float(v)) for t, v in history if t <= now)
    if not upto:
        return None
    tau = PERSISTENCE * max(0.0, horizon_s)
    if upto[0][0] > now - tau:
        return None
    levels = held_levels(upto, horizon_s,
                         window_s if burst_window_s is None else burst_window_s, burst_factor)
    return max((lv for (u, _), lv in zip(upto, levels, strict=True) if u >= now - window_s),
               default=0.0)


def backlog_left(backlog: float, ready_capacity_rps: float, lasting_rps: float, rps: float,
                 horizon_s: float, patience_s: float | None, booting_rps: float = 0.0,
                 booting_in_s: float = 0.0) -> float:
    """Requests still waiting when capacity ordered now is Ready (module doc, 2.).

    The Ready fleet drains (or, overloaded, adds) ``(capacity - lasting) x H`` of
    the backlog before then, at the rate that lasts, not at a burst's, which is over
    before that capacity arrives; replicas already starting (``booting_rps`` of
    capacity, Ready within ``booting_in_s``) drain ``booting_rps x (H -
    booting_in_s)`` more. With clients that give up after ``patience_s`` seconds,
    only requests sent within ``patience_s`` before ``now + H`` can still be waiting
    then: at most the arrivals at the lasting rate over ``min(H, patience)``, plus,
    when the patience is longer than ``H``, the part of today's backlog sent in the
    last ``patience - H`` seconds (at most ``rps`` per second). And when the Ready
    fleet holds the lasting rate, by ``now + patience`` every request waiting now
    has been served or given up: what waits then (at most the lasting rate x
    patience) drains at the fleet's spare capacity for the ``H - patience`` left,
    so a burst's queue that the fleet clears before new capacity could be Ready
    orders none. None: patient clients (the first bound alone)."""
    boot = max(0.0, booting_rps) * max(0.0, horizon_s - max(0.0, booting_in_s))
    left = backlog - (ready_capacity_rps - lasting_rps) * horizon_s - boot
    if patience_s is not None:
        alive = (lasting_rps * min(horizon_s, patience_s)
                 + min(backlog, rps * max(0.0, patience_s - horizon_s)))
        left = min(left, alive)
        if ready_capacity_rps >= lasting_rps and horizon_s > patience_s:
            after = horizon_s - patience_s
            boot_after = max(0.0, booting_rps) * max(
                0.0, horizon_s - max(patience_s, booting_in_s))
            left = min(left, lasting_rps * patience_s
                       - (ready_capacity_rps - lasting_rps) * after - boot_after)
    return max(0.0, left)


def backlog_requests(
    pending: float | None, queue_ms: float | None, rps: float, target_ms: float
) -> float:
    """Requests beyond what a fleet meeting the SLO holds in flight (0 if unknown)."""
    est = 0.0
    if pending is not None and pending >= 0:
        est = max(est, pending - rps * target_ms / 1000.0)
    if queue_ms is not None and queue_ms >= 0:
        est = max(est, rps * (queue_ms - target_ms / 2.0) / 1000.0)
    return max(0.0, est)


def assess(
    spec: ScaledModelSpec,
    obs: Observation,
    rps: float,
    state: Mapping[str, Any],
    now: float,
    horizon_s: float,
    ready_capacity_rps: float,
    expected_rps: float | None = None,
    booting_rps: float = 0.0,
    booting_in_s: float = 0.0,
) -> BurstAssessment:
    """The step's headroom, backlog drain and panic (see the module docstring)."""
    sc = spec.scaling
    target = spec.slo.latency.target_ms
    held = sc.scale_down_stabilization_seconds
    keep = max(MIN_HISTORY_S, (MIN_HORIZONS + 1.0) * horizon_s) + held
    hist = _history(state.get("vh"), now, keep)
    hist.append([now, rps])
    # The rises must span MIN_HORIZONS horizons: fewer is one event, not a distribution.
    step = max(1.0, sc.interval_seconds)
    need = max(MIN_RISES, math.ceil(MIN_HORIZONS * horizon_s / step))
    vol = rise_quantile(hist, horizon_s, held, RISE_QUANTILE, need)
    floor = sc.headroom
    cap = max(floor, sc.max_headroom)
    headroom = floor if vol is None else min(cap, max(floor, vol))

    lasting = lasting_rate(hist, now, horizon_s, expected_rps, 1.0 + sc.max_headroom, held)
    backlog = backlog_requests(
        finite_or_none(obs.pending), finite_or_none(obs.queue_ms), rps, target
    )
    left = backlog_left(backlog, ready_capacity_rps, lasting, rps, horizon_s,
                        sc.client_timeout_seconds, booting_rps, booting_in_s)
    drain = left / sc.drain_seconds if sc.drain_seconds > 0 and backlog > 0 else 0.0

    lat = finite_or_none(obs.latency_ms)
    over = lat is not None and lat > target
    pz = state.get("pz")
    panic_until = float(pz) if isinstance(pz, (int, float)) and not isinstance(pz, bool) else None
    if panic_until is not None and (panic_until <= now or sc.panic_seconds <= 0):
        panic_until = None
    if sc.panic_seconds > 0 and (over or backlog > PANIC_BACKLOG_S * max(rps, 1.0)):
        panic_until = now + sc.panic_seconds
    panic = panic_until is not None
    panic_rps = 0.0
    if panic:
        blind = finite_or_none(obs.pending) is None and finite_or_none(obs.queue_ms) is None
        boost = 1.0
        if blind and lat is not None and over:
            boost = min(MAX_LATENCY_BOOST, lat / target)
        panic_rps = lasting * boost
    return BurstAssessment(
        headroom=headroom,
        volatility=vol,
        backlog=backlog,
        drain_rps=drain,
        panic=panic,
        panic_rps=panic_rps,
        lasting_rps=lasting,
        history=[[round(t, 1), round(v, 2)] for t, v in hist],
        panic_until=panic_until,
    )


def store(st: dict[str, Any], a: BurstAssessment) -> None:
    """Persist the assessment's history and panic deadline in the autoscaler state."""
    st["vh"] = a.history
    if a.panic_until is not None:
        st["pz"] = round(a.panic_until, 3)
    else:
        st.pop("pz", None)

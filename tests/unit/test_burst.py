"""Burst rules (core/burst.py) against hand calculations, and their hooks in decide()."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tritonscale.core import burst, perf
from tritonscale.core.autoscale import _ready_capacity, decide
from tritonscale.core.spec import (
    SLO,
    BatchPoint,
    LatencySLO,
    ModelSpec,
    NodePool,
    Profile,
    ScaledModelSpec,
    Scaling,
    Variant,
)
from tritonscale.core.types import Observation, PlacementState


def _spec(**scaling: float) -> ScaledModelSpec:
    prof = Profile("T4", 8, (BatchPoint(1, 5.0), BatchPoint(8, 20.0)), 2.0)
    return ScaledModelSpec(
        model=ModelSpec("m", "s3://m"),
        variants=(Variant("v", "fp16", 0.9, (prof,)),),
        node_pools=(NodePool("p", "T4", 1.0, max_replicas=100, startup_seconds=60.0),),
        slo=SLO(LatencySLO(95.0, 100.0)),
        scaling=replace(Scaling(min_replicas=1, max_replicas=100, headroom=0.1), **scaling),
    )


def test_rise_quantile_by_hand() -> None:
    # Steps every 15 s; horizon 30 s: rises are measured where t + 30 <= last t (=90).
    hist = [[0, 100], [15, 100], [30, 150], [45, 100], [60, 100], [75, 100], [90, 300]]
    # t=0: max(100,150)/100-1=0.5; t=15: 150/100-1=0.5; t=30: max(100,100)/150-1<0 -> 0;
    # t=45: 0; t=60: 300/100-1=2.0. Sorted [0,0,0.5,0.5,2.0]; q=0.9 -> ceil(4.5)-1=4 -> 2.0
    assert burst.rise_quantile(hist, 30.0, q=0.9) == pytest.approx(2.0)
    assert burst.rise_quantile(hist, 30.0, q=0.5) == pytest.approx(0.5)
    assert burst.rise_quantile(hist[:2], 30.0) is None
    assert burst.rise_quantile(hist, 30.0, min_samples=6) is None
    # Rises above what a 30-s scale-down window still holds: at t=30 and t=45 the
    # held rate is 150, so only t=0, 15 (0.5) and t=60 (300/150 - 1 = 1.0) rise.
    assert burst.rise_quantile(hist, 30.0, held_s=30.0, q=0.9) == pytest.approx(1.0)
    assert burst.rise_quantile(hist, 30.0, held_s=30.0, q=0.6) == pytest.approx(0.5)


def test_a_return_from_a_lull_is_no_rise() -> None:
    lull = [[t, 1000.0] for t in range(0, 300, 15)] + [[t, 50.0] for t in range(300, 360, 15)]
    lull += [[t, 1000.0] for t in range(360, 900, 15)]
    assert burst.rise_quantile(lull, 75.0, held_s=300.0, q=1.0) == 0.0
    assert burst.rise_quantile(lull, 75.0, held_s=0.0, q=1.0) == pytest.approx(19.0)


def test_backlog_by_hand() -> None:
    # 1000 rps, target 100 ms: a fleet meeting the SLO holds ~100 requests in flight.
    assert burst.backlog_requests(600.0, None, 1000.0, 100.0) == pytest.approx(500.0)
    # Mean queue 550 ms: rps x (0.55 - 0.05) s = 500 requests.
    assert burst.backlog_requests(None, 550.0, 1000.0, 100.0) == pytest.approx(500.0)
    assert burst.backlog_requests(50.0, 10.0, 1000.0, 100.0) == 0.0
    assert burst.backlog_requests(None, None, 1000.0, 100.0) == 0.0


def test_headroom_follows_volatility_within_bounds() -> None:
    spec = _spec(max_headroom=0.5, scale_down_stabilization_seconds=0.0)
    obs = Observation(rps=100.0)
    # A steady ramp of 6% a step: every measured rise over 75 s (5 steps) is
    # 1.06^5 - 1 = 0.338, between the floor 0.1 and the cap 0.5.
    st: dict[str, object] = {"vh": [[t, 100.0 * 1.06 ** (t // 15)] for t in range(0, 600, 15)]}
    a = burst.assess(spec, obs, 100.0, st, 600.0, 75.0, 0.0)
    assert a.headroom == pytest.approx(1.06 ** 5 - 1.0)
    flat = {"vh": [[t, 100.0] for t in range(0, 600, 15)]}
    assert burst.assess(spec, obs, 100.0, flat, 600.0, 75.0, 0.0).headroom == 0.1
    wild = {"vh": [[t, 100.0 * 1.5 ** (t // 15)] for t in range(0, 600, 15)]}
    assert burst.assess(spec, obs, 100.0, wild, 600.0, 75.0, 0.0).headroom == 0.5
    # No history yet: the floor.
    assert burst.assess(spec, obs, 100.0, {}, 0.0, 75.0, 0.0).headroom == 0.1


def test_drain_accounts_for_what_the_ready_fleet_drains_first() -> None:
    spec = _spec(drain_seconds=60.0)
    obs = Observation(rps=1000.0, pending=20_100.0)  # backlog 20,000
    # Ready capacity 1100 rps: 100 rps spare x 75 s = 7,500 drained before new
    # capacity is Ready; 12,500 left, to drain in 60 s: +208.3 rps.
    a = burst.assess(spec, obs, 1000.0, {}, 0.0, 75.0, 1100.0)
    assert a.backlog == pytest.approx(20_000.0)
    assert a.drain_rps == pytest.approx(12_500.0 / 60.0)
    assert a.panic
    # Enough spare capacity to drain it before anything new could be Ready: nothing.
    b = burst.assess(spec, obs, 1000.0, {}, 0.0, 75.0, 1300.0)
    assert b.drain_rps == 0.0
    off = burst.assess(_spec(drain_seconds=0.0), obs, 1000.0, {}, 0.0, 75.0, 1100.0)
    assert off.drain_rps == 0.0


def test_drain_plans_only_for_requests_clients_still_wait_for() -> None:
    # A 12x burst left 600,000 requests queued; the Ready fleet holds 6,400 rps
    # against a lasting 3,300; new capacity is Ready after H = 135 s.
    obs = Observation(rps=24_600.0, pending=600_000.0 + 24_600.0 * 0.1)
    calm = {"vh": [[float(t), 3_300.0] for t in range(-300, 0, 15)]}
    args = (obs, 24_600.0, calm, 0.0, 135.0, 6_400.0)
    # Patient clients (unset): 600,000 - 3,100 x 135 = 181,500 left, in 60 s.
    patient = burst.assess(_spec(drain_seconds=60.0), *args)
    assert patient.lasting_rps == pytest.approx(3_300.0)  # the burst has not lasted
    assert patient.backlog == pytest.approx(600_000.0)
    assert patient.drain_rps == pytest.approx(181_500.0 / 60.0)
    # Clients giving up after 30 s: by now + 30 s every request queued now has been
    # served or given up; what waits then is at most the lasting rate x 30 s =
    # 99,000, which the Ready fleet's spare 3,100 rps clears in 32 s, long before
    # capacity ordered now is Ready (135 s): no drain. (The old bound planned for the
    # 99,000 as if nothing drained them: 1,650 rps, Ready after the queue was gone.)
    impatient = burst.assess(_spec(drain_seconds=60.0, client_timeout_seconds=30.0), *args)
    assert impatient.drain_rps == 0.0
    # A fleet at its margin (3,500 rps Ready): 99,000 - 200 x 105 = 78,000 left.
    thin = burst.assess(_spec(drain_seconds=60.0, client_timeout_seconds=30.0),
                        obs, 24_600.0, calm, 0.0, 135.0, 3_500.0)
    assert thin.drain_rps == pytest.approx(78_000.0 / 60.0)
    # Overloaded (3,000 Ready < 3,300 lasting): the queue grows; the bound is the
    # arrivals the clients still wait for, 99,000.
    over = burst.assess(_spec(drain_seconds=60.0, client_timeout_seconds=30.0),
                        obs, 24_600.0, calm, 0.0, 135.0, 3_000.0)
    assert over.drain_rps == pytest.approx(99_000.0 / 60.0)
    # Patience longer than H: today's requests sent in the last 300 - 135 = 165 s
    # still wait too (at most the backlog): the patient bound holds.
    long = burst.assess(_spec(drain_seconds=60.0, client_timeout_seconds=300.0), *args)
    assert long.drain_rps == pytest.approx(patient.drain_rps)


def test_backlog_left_by_hand() -> None:
    # Overloaded (lasting 1,000 > capacity 800): the backlog grows 200/s for H = 50 s.
    assert burst.backlog_left(5_000.0, 800.0, 1_000.0, 1_000.0, 50.0, None) == 15_000.0
    # Patience 20 s < H: at most 1,000 x 20 = 20,000 arrivals can still wait: the
    # growth bound (15,000) is lower.
    assert burst.backlog_left(5_000.0, 800.0, 1_000.0, 1_000.0, 50.0, 20.0) == 15_000.0
    # Patience 5 s: 5,000.
    assert burst.backlog_left(5_000.0, 800.0, 1_000.0, 1_000.0, 50.0, 5.0) == 5_000.0
    # Patience 60 s > H: 1,000 x 50 + min(5,000, 1,000 x 10) = 55,000 >= 15,000.
    assert burst.backlog_left(5_000.0, 800.0, 1_000.0, 1_000.0, 50.0, 60.0) == 15_000.0
    # Spare capacity drains it first: nothing left, whatever the patience.
    assert burst.backlog_left(5_000.0, 2_000.0, 1_000.0, 1_000.0, 50.0, 5.0) == 0.0


def test_panic_starts_extends_and_ends() -> None:
    spec = _spec(panic_seconds=60.0)
    hot = Observation(rps=100.0, latency_ms=150.0, pending=0.0)
    a = burst.assess(spec, hot, 100.0, {}, 0.0, 75.0, 500.0)
    assert a.panic and a.panic_until == 60.0
    # Backlog signals known: no latency boost, the floor is the rate itself.
    assert a.panic_rps == pytest.approx(100.0)
    st: dict[str, object] = {}
    burst.store(st, a)
    calm = Observation(rps=100.0, latency_ms=50.0, pending=0.0)
    assert burst.assess(spec, calm, 100.0, st, 59.0, 75.0, 500.0).panic
    assert not burst.assess(spec, calm, 100.0, st, 61.0, 75.0, 500.0).panic
    # Latency the only evidence: plan for rps x min(2, latency / target).
    blind = Observation(rps=100.0, latency_ms=150.0)
    assert burst.assess(spec, blind, 100.0, {}, 0.0, 75.0, 500.0).panic_rps == 150.0
    assert not burst.assess(_spec(panic_seconds=0.0), hot, 100.0, {}, 0.0, 75.0,
                            500.0).panic


def _ready(spec: ScaledModelSpec, n: int) -> tuple[PlacementState, ...]:
    return (PlacementState("v", "p", n, n),)


def test_decide_drains_a_backlog_and_holds_in_panic() -> None:
    spec = _spec(drain_seconds=30.0, scale_down_stabilization_seconds=0.0)
    d0 = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    n0 = d0.total_replicas
    cur = _ready(spec, n0)
    calm = decide(spec, Observation(rps=1000.0, current=cur, pending=10.0,
                                    latency_ms=40.0), d0.state, 15.0)
    backlog = decide(spec, Observation(rps=1000.0, current=cur, pending=60_000.0,
                                       latency_ms=400.0), d0.state, 15.0)
    assert backlog.total_replicas > calm.total_replicas
    assert backlog.details["burst"]["drain_rps"] > 0  # type: ignore[index]
    # The backlog is gone but the panic holds: the load falls, the fleet does not.
    after = decide(spec, Observation(rps=300.0, current=_ready(spec, backlog.total_replicas),
                                     pending=0.0, latency_ms=40.0), backlog.state, 30.0)
    assert after.details["burst"]["panic"] is True  # type: ignore[index]
    assert after.total_replicas >= calm.total_replicas
    assert backlog.state["load"] == after.state["load"]
    # Without panic the same steps lower the stabilised load once the low rate is
    # the median of the last horizon (60 s startup + 15 s); with panic it holds
    # while the panic lasts.
    calm_spec = replace(spec, scaling=replace(spec.scaling, panic_seconds=0.0))
    nopanic, held = backlog, backlog
    for i in range(3):
        nxt = Observation(rps=300.0, current=_ready(spec, backlog.total_replicas),
                          pending=0.0, latency_ms=40.0)
        nopanic = decide(calm_spec, nxt, nopanic.state, 30.0 + 15 * i)
        held = decide(spec, nxt, held.state, 30.0 + 15 * i)
    assert nopanic.details["burst"]["panic"] is False  # type: ignore[index]
    assert held.details["burst"]["panic"] is True  # type: ignore[index]
    assert nopanic.state["load"] < backlog.state["load"] == held.state["load"]


def test_simulator_reports_pending_requests() -> None:
    """The simulator's pending count against a hand-traced single replica."""
    import numpy as np

    from tritonscale.sim.engine import SimConfig, Simulator

    spec = _spec()
    # Batch of 1 takes 5 ms, of 8 takes 20 ms; max queue delay 2 ms. Ten requests at
    # t=0 (0.0001 s apart) on one replica: the first batch (8) dispatches at
    # 0.0008 s (the 8th arrival) and completes at 0.0208; the last two wait for it.
    arr = np.arange(10) * 1e-4
    sim = Simulator(spec, np.append(arr, 10.0), SimConfig())
    sim.apply({("v", "p"): 1}, instant=True)
    sim.run_interval(0.0, 0.01)
    sim.now = 0.01
    assert sim.pending() == 10.0  # 8 executing + 2 queued
    sim.run_interval(0.01, 0.05)
    sim.now = 0.05
    assert sim.pending() == 0.0


def test_one_ramp_is_not_a_distribution() -> None:
    # Ten measured rises, all from one ramp (6% a step): the old rule (8 rises
    # suffice) set the headroom to that ramp's rise for the next window. Until the
    # rises span four horizons (4 x 75 s = 20 steps) the floor applies.
    spec = _spec(max_headroom=0.5, scale_down_stabilization_seconds=0.0)
    obs = Observation(rps=100.0)
    ramp = {"vh": [[t, 100.0 * 1.06 ** (t // 15)] for t in range(0, 225, 15)]}
    assert burst.assess(spec, obs, 100.0, ramp, 225.0, 75.0, 0.0).headroom == 0.1
    longer = {"vh": [[t, 100.0 * 1.06 ** (t // 15)] for t in range(0, 405, 15)]}
    assert burst.assess(spec, obs, 100.0, longer, 405.0, 75.0, 0.0).headroom == pytest.approx(
        1.06 ** 5 - 1.0)


def test_forecast_look_ahead_does_not_hold_the_fleet_for_the_scale_down_window() -> None:
    # A fast ramp inflates the forecast's trend; the rate then stays flat. The
    # observed demand is held for the 300-s scale-down window, but the forecast's
    # look-ahead only for the horizon it was about (60 s startup + 15 s), and its
    # trend goes no further than the rate rose over the last horizon: 150 s after
    # the ramp the planning load is the flat rate's, not the extrapolated peak (the
    # old window held Holt's lingering trend for 300 s).
    # (A ramp the forecast follows: each step within 2x of the rate that lasted. A
    # steeper one, 100 -> 1,000 in 45 s, is a burst to the forecaster until it has
    # lasted, and a level at once then, with no trend to linger:
    # test_a_burst_beyond_what_lasted_does_not_move_the_look_ahead.)
    spec = _spec(scale_down_stabilization_seconds=300.0, panic_seconds=0.0)
    d = decide(spec, Observation(rps=400.0, current=()), None, 0.0)
    t = 0.0
    peak = 0.0
    for rps in (400.0,) * 6 + (550.0, 700.0, 850.0, 1000.0) + (1000.0,) * 10:
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     latency_ms=40.0, pending=0.0), d.state, t)
        peak = max(peak, d.details["planning_load_rps"])  # type: ignore[arg-type]
    final = d.details["planning_load_rps"]
    # The trend did inflate the look-ahead (x 1.19 the flat rate's margin; x 1.3 while
    # the look-ahead stacked the headroom on the forecast's noise allowance).
    assert peak > 1.15 * 1000.0 * 1.1
    assert final < 0.85 * peak
    # ... and it still plans for what was observed (the window), with headroom.
    assert final >= 1000.0 * 1.1 - 1e-6


def test_panic_keeps_replicas_that_are_still_starting() -> None:
    # Four replicas starting on the dearer pool, a backlog: the plan prefers the
    # cheaper pool, but cancelling capacity in flight during a backlog only delays
    # the drain (the old rule removed not-Ready replicas of a mix change at once).
    base = _spec(drain_seconds=30.0)
    cheap = base.node_pools[0]
    dear = replace(cheap, name="dear", price_per_hour=3.0)
    spec = replace(base, node_pools=(cheap, dear))
    d0 = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    starting = (PlacementState("v", "dear", 4, 0),)
    d = decide(spec, Observation(rps=1000.0, current=starting, pending=60_000.0,
                                 latency_ms=400.0), d0.state, 15.0)
    assert d.details["burst"]["panic"] is True  # type: ignore[index]
    assert d.replicas().get(("v", "dear"), 0) == 4
    assert d.replicas().get(("v", "p"), 0) > 0  # and the plan's own replicas come


def test_a_short_burst_does_not_hold_the_fleet_for_the_scale_down_window() -> None:
    # One 15-s step at 10x, with a backlog, then back to the usual rate. Capacity
    # ordered for the burst arrives after it is gone: once the backlog has drained
    # the planning load returns to the sustained rate within the horizon (60 s
    # startup + 15 s), not after the 300-s window (the old rule held 10x for it).
    spec = _spec(scale_down_stabilization_seconds=300.0, drain_seconds=30.0)
    d = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    t = 0.0

    def step(rps: float, pending: float, lat: float) -> None:
        nonlocal d, t
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     pending=pending, latency_ms=lat), d.state, t)

    for _ in range(10):
        step(1000.0, 10.0, 40.0)
    normal = d.details["planning_load_rps"]
    cap = _ready_capacity(spec, Observation(rps=1.0, current=_ready(spec, d.total_replicas)),
                          frozenset())
    step(10_000.0, 50_000.0, 2000.0)
    burst_load = d.details["planning_load_rps"]
    # It reacts to the backlog (the drain), not to the 10x rate itself: that lasted
    # less than half a startup (test_a_burst_shorter_than_the_startup_orders_...),
    # and the forecast does not follow it (it is beyond 2x what lasted). The plan:
    # the lasting rate (the forecast's ~1,000) x 1.1 + what the Ready fleet will not
    # have drained of the 49,000 queued when new capacity is Ready (75 s), in 30 s.
    lasting = float(d.details["forecast_rps"])  # type: ignore[arg-type]
    assert lasting == pytest.approx(1000.0, rel=0.02)
    drain = (49_000.0 - (cap - lasting) * 75.0) / 30.0
    assert d.details["burst"]["drain_rps"] == pytest.approx(drain, rel=1e-3)  # type: ignore[index]
    assert burst_load == pytest.approx(lasting * 1.1 + drain, rel=1e-3)
    assert normal < burst_load < 10_000.0  # type: ignore[operator]
    for _ in range(7):  # 105 s after the burst, backlog gone
        step(1000.0, 10.0, 40.0)
    assert d.details["planning_load_rps"] < 1.5 * normal  # type: ignore[operator]


def test_minute_scale_noise_does_not_start_and_cancel_replicas_every_step() -> None:
    # The rate cycles over four steps (+-15 %). The observed demand is a median, so
    # the look-ahead (which holds the current rate) must hold the cycle's peak: a
    # plan that followed each step's rate started a replica and cancelled it 15 s
    # later, over and over.
    spec = _spec(scale_down_stabilization_seconds=300.0)
    d = decide(spec, Observation(rps=3500.0, current=()), None, 0.0)
    totals = []
    for i in range(1, 41):
        rps = (3556.0, 4076.0, 3492.0, 2972.0)[i % 4]
        # (No latency signal: the correction would learn from a constant made-up one.)
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     pending=5.0), d.state, 15.0 * i)
        totals.append(d.total_replicas)
    assert len(set(totals[-16:])) == 1, totals


def test_the_drain_uses_the_look_aheads_margin_instead_of_adding_to_it() -> None:
    # A ramp from 1,000 to 2,000 rps, then a backlog: the look-ahead extrapolates
    # the rise (forecast > rate) and the drain term is positive. The capacity the
    # look-ahead plans above the current rate is spare until the rise comes, so the
    # planning load is max(look-ahead x (1 + h), rate x (1 + h) + drain): the old
    # rule summed look-ahead x (1 + h) + drain, planning for the rise and the drain
    # at once (on the bundled trace at x1500 that sum crossed what the L4 pools hold
    # and the plan jumped to 50 mixed T4/L4 replicas).
    spec = _spec(drain_seconds=60.0, scale_down_stabilization_seconds=300.0,
                 panic_seconds=0.0)
    d0 = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    cur = _ready(spec, d0.total_replicas)
    # A ramp of +200 rps a step, every replica Ready, nothing queued: Holt's trend.
    t, prev = 0.0, d0
    for rps in (1200.0, 1400.0, 1600.0, 1800.0):
        t += 15.0
        prev = decide(spec, Observation(rps=rps, current=cur, pending=0.0,
                                        latency_ms=40.0), prev.state, t)
        cur = _ready(spec, prev.total_replicas)
    d = decide(spec, Observation(rps=2000.0, current=cur, pending=300_000.0,
                                 latency_ms=900.0), prev.state, t + 15.0)
    b = d.details["burst"]
    drain = b["drain_rps"]  # type: ignore[index]
    hr = 1.0 + b["headroom"]  # type: ignore[index]
    ahead = d.details["forecast_rps"]
    assert b["headroom"] == pytest.approx(0.1)  # type: ignore[index]
    assert drain > 500.0 and ahead > 2500.0  # type: ignore[operator]
    want = max(ahead * hr, 2000.0 * hr + drain)  # type: ignore[operator]
    assert d.details["planning_load_rps"] == pytest.approx(want, rel=1e-3)
    assert want < ahead * hr + drain  # type: ignore[operator]
    # With the rate flat (no look-ahead margin) the drain adds to rate x (1 + h),
    # as before.
    cur = _ready(spec, d0.total_replicas)
    flat = decide(spec, Observation(rps=1000.0, current=cur, pending=300_000.0,
                                    latency_ms=900.0), d0.state, 15.0)
    fdrain = flat.details["burst"]["drain_rps"]  # type: ignore[index]
    assert fdrain > 1000.0  # type: ignore[operator]
    assert flat.details["planning_load_rps"] == pytest.approx(1100.0 + fdrain, rel=1e-3)


def test_persisted_level_by_hand() -> None:
    # H = 60 s: a rate persists once held for 30 s.
    hist = [[0, 100], [15, 120], [30, 130], [45, 1000], [60, 110], [75, 400], [90, 400],
            [105, 400]]
    # Held at t (lowest of (t - 30, t]): 15: 100, 30: 120, 45: 130, 60: 110, 75: 110,
    # 90: 400, 105: 400. The 1,000 never persisted.
    assert burst.persisted_level(hist, 105.0, 60.0, 0.0) == 400.0
    assert burst.persisted_level(hist, 75.0, 60.0, 0.0) == 110.0
    assert burst.persisted_level(hist, 75.0, 60.0, 60.0) == 130.0  # best since t = 15
    # Not yet 30 s of history: nothing is known to have persisted.
    assert burst.persisted_level(hist[:2], 15.0, 60.0, 300.0) is None


def test_a_burst_beyond_what_lasted_does_not_move_the_look_ahead() -> None:
    # The bursty fleet's pattern (benchmarks/bench_policies.py, seed 1), scaled to a
    # 60-s pool (H = 75 s, a rate persists after 37.5 s): a sustained 3,300 rps, then
    # a 12x burst seen over two 15-s steps through the rate window (the fleet's 10-30-s
    # bursts span two or three of its 15-s steps, against 67 s there), with its
    # backlog, then the level again. Holt's clipped residuals still moved the level
    # by a step that doubled with the deviation each interval: the look-ahead reached
    # 2.6x the level (8,500 rps) at the burst's second step and planned (and held, while the
    # backlog drained) capacity for a burst over before any of it was Ready.
    spec = _spec(scale_down_stabilization_seconds=300.0, drain_seconds=60.0)
    level = 3300.0
    d = decide(spec, Observation(rps=level, current=()), None, 0.0)
    t = 0.0
    looks: list[float] = []
    burst_steps = [(24_600.0, 600_000.0), (35_400.0, 860_000.0)]
    for rps, pending in [(level, 30.0)] * 20 + burst_steps + [(level, 30.0)] * 4:
        t += 15.0
        lat = 40.0 if pending < 100 else 9000.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     pending=pending, latency_ms=lat), d.state, t)
        looks.append(float(d.details["forecast_rps"]))  # type: ignore[arg-type]
    calm = looks[19]
    assert calm == pytest.approx(level, rel=0.05)
    assert max(looks[20:]) < 1.2 * calm, looks[19:]
    # A sustained step of 1.8x (the trace's MMPP steps) is still followed at once (by
    # Holt's clipped steps), and taken as the level once it has lasted 37.5 s.
    d = decide(spec, Observation(rps=1800.0, current=()), None, 0.0)
    t = 0.0
    looks = []
    for rps in [1800.0] * 20 + [3300.0] * 3:
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     pending=30.0, latency_ms=40.0), d.state, t)
        looks.append(float(d.details["forecast_rps"]))  # type: ignore[arg-type]
    assert looks[20] > 2000.0 and looks[22] >= 3300.0, looks[19:]


def test_lasting_rate_by_hand() -> None:
    # H = 75 s: a rate counts once it has persisted PERSISTENCE x H = 37.5 s.
    assert burst.PERSISTENCE == 0.5
    # 1,000 rps for 90 s, then one step at 10,000: held over (67.5, 105] = 1,000, and
    # over (30, 67.5] too (no rise), so without a forecast following it the burst
    # does not last.
    hist = [[float(t), 1000.0] for t in range(0, 91, 15)] + [[105.0, 10_000.0]]
    assert burst.lasting_rate(hist, 105.0, 75.0) == 1000.0
    # A forecast that follows it counts up to the current rate, no further.
    assert burst.lasting_rate(hist, 105.0, 75.0, 4000.0) == 4000.0
    assert burst.lasting_rate(hist, 105.0, 75.0, 12_000.0) == 10_000.0
    # Held for two steps (30 s < 37.5 s): still not; for three (the sample at 105
    # covers the rate since 90: 45 s): the whole step. Held 5,000 over (97.5, 135];
    # before, (60, 97.5]: 1,000; 5,000 + 4,000 x 75 / 37.5 capped at the rate.
    step = [[float(t), 1000.0] for t in range(0, 91, 15)]
    step += [[105.0, 5000.0], [120.0, 5000.0], [135.0, 5000.0]]
    assert burst.lasting_rate(step[:-1], 120.0, 75.0) == 1000.0
    assert burst.lasting_rate(step, 135.0, 75.0) == 5000.0
    # Rising: held over (37.5, 75] = 2,000, over (0, 37.5] = 1,000: 2,000 + 1,000 x 2,
    # at most the current rate.
    held = [[0.0, 1000.0], [15.0, 1000.0], [30.0, 2000.0], [45.0, 2000.0],
            [60.0, 2000.0], [75.0, 2000.0]]
    assert burst.lasting_rate(held, 75.0, 75.0) == 2000.0
    ramp = [[15.0 * i, 1000.0 * (i + 1)] for i in range(8)]  # 1,000 .. 8,000 at 105 s
    # held (67.5, 105] = 6,000; before (30, 67.5] = 4,000: 6,000 + 2,000 x 2 >= 8,000.
    assert burst.lasting_rate(ramp, 105.0, 75.0) == 8000.0
    half = [[t, r] for t, r in ramp if t <= 60.0] + [[75.0, 5000.0], [90.0, 5000.0],
                                                     [105.0, 5000.0]]
    # 1,000 .. 5,000, then flat: 5,000 held (capped at the rate).
    assert burst.lasting_rate(half, 105.0, 75.0) == 5000.0
    # A falling rate is the current rate.
    assert burst.lasting_rate([*held, [90.0, 500.0]], 90.0, 75.0) == 500.0
    assert burst.lasting_rate([], 0.0, 75.0) == 0.0
    # The same rules in seconds, at a 2-s interval and H = 7 s (the closed loop's
    # pools): a one-step spike does not last; a step seen twice (3.5 s) does.
    fast = [[float(t), 1500.0] for t in range(0, 21, 2)]
    assert burst.lasting_rate([*fast, [22.0, 8000.0]], 22.0, 7.0) == 1500.0
    assert burst.lasting_rate([*fast, [22.0, 8000.0], [24.0, 8000.0]], 24.0, 7.0) == 8000.0


def test_a_burst_shorter_than_the_startup_orders_no_capacity_for_its_rate() -> None:
    # 1,000 rps, then one 15-s step at 10x with latency over the target (a panic) and
    # nothing queued beyond what the fleet holds in flight. Capacity ordered now is
    # Ready after the 60-s startup, when the burst is gone: the plan must not be
    # sized for 10,000 rps. The old rule floored the look-ahead, the panic and the
    # drain at the current rate: 11,000 rps planned, 10x the fleet, for nothing.
    spec = _spec(scale_down_stabilization_seconds=300.0, drain_seconds=30.0)
    d = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    t = 0.0
    for _ in range(10):
        t += 15.0
        d = decide(spec, Observation(rps=1000.0, current=_ready(spec, d.total_replicas),
                                     pending=10.0, latency_ms=40.0), d.state, t)
    normal = d.details["planning_load_rps"]
    n_normal = d.total_replicas
    t += 15.0
    d = decide(spec, Observation(rps=10_000.0, current=_ready(spec, n_normal),
                                 pending=500.0, latency_ms=400.0), d.state, t)
    assert d.details["burst"]["panic"] is True  # type: ignore[index]
    assert d.details["planning_load_rps"] < 3 * normal  # type: ignore[operator]
    assert d.total_replicas < 3 * n_normal
    # A ramp to the same rate, which the forecast follows, is planned for at once.
    r = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    t = 0.0
    for i in range(1, 11):
        t += 15.0
        r = decide(spec, Observation(rps=1000.0 * i, current=_ready(spec, r.total_replicas),
                                     pending=10.0, latency_ms=40.0), r.state, t)
    assert r.details["planning_load_rps"] >= 10_000.0 * 1.1  # type: ignore[operator]


def _fast_spec() -> ScaledModelSpec:
    """The closed loop's ScaledModel (tests/e2e/test_closed_loop.py): resnet50 int8 on
    two T4 pools starting in 5 s, decisions every 2 s, 25 % headroom: H = 7 s."""
    prof = Profile("T4", 64, (BatchPoint(1, 1.0), BatchPoint(64, 11.25)), 2.0)
    return ScaledModelSpec(
        model=ModelSpec("resnet50", "s3://models/resnet50"),
        variants=(Variant("int8", "int8", 0.757, (prof,)),),
        node_pools=(
            NodePool("t4-spot", "T4", 0.201, capacity_type="spot", max_replicas=3,
                     startup_seconds=5.0),
            NodePool("t4-ondemand", "T4", 0.526, max_replicas=4, startup_seconds=5.0),
        ),
        slo=SLO(LatencySLO(99.0, 25.0), min_accuracy=0.75),
        scaling=Scaling(min_replicas=1, max_replicas=8, interval_seconds=2.0,
                        scale_down_stabilization_seconds=20.0, headroom=0.25),
    )


def _drive(spec: ScaledModelSpec, rates: list[tuple[float, float]],
           dt: float) -> list[tuple[float, int, float]]:
    """decide() every ``dt`` s on (rps, latency) pairs, every replica Ready at once:
    (t, replicas, planning load) per step."""
    d = decide(spec, Observation(rps=rates[0][0], current=()), None, 0.0)
    out = []
    t = 0.0
    for rps, lat in rates:
        t += dt
        cur = tuple(PlacementState(p.variant, p.pool, p.replicas, p.replicas)
                    for p in d.placements)
        d = decide(spec, Observation(rps=rps, current=cur, pending=0.0, queue_ms=0.0,
                                     latency_ms=lat), d.state, t)
        out.append((t, d.total_replicas, float(d.details["planning_load_rps"])))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("fast", [False, True],
                         ids=["startup-60s-every-15s", "startup-5s-every-2s"])
def test_a_one_interval_spike_orders_nothing_a_step_is_planned_once_it_persists(
    fast: bool,
) -> None:
    # Two physics, one rule: a rate counts once it has persisted PERSISTENCE x H
    # (H = startup + interval). 60-s startup, 15-s decisions: H = 75 s, 37.5 s;
    # 5-s startup, 2-s decisions: H = 7 s, 3.5 s. Latency over the target during the
    # spike (the SLO is missed on the Ready fleet: a panic).
    spec = _fast_spec() if fast else _spec(scale_down_stabilization_seconds=120.0)
    dt = spec.scaling.interval_seconds
    horizon = (5.0 if fast else 60.0) + dt
    base, high = (1500.0, 8000.0) if fast else (1000.0, 5000.0)
    ok, over = spec.slo.latency.target_ms * 0.4, spec.slo.latency.target_ms * 4.0
    calm = [(base, ok)] * 12
    spike = _drive(spec, [*calm, (high, over), *calm], dt)
    # Capacity ordered for the spike would be Ready after H, long after it: nothing
    # is ordered for its rate. What moves is the forecast's bounded response (Holt's
    # clipped residual and its noise allowance, +43 % at the 60-s pools, 4 -> 6
    # replicas; nothing at the 5-s ones). The previous rule planned the spike's rate
    # (4.9x and 5x the load: 17-32 replicas instead of 4; 4-6 instead of 1).
    calm_load, calm_n = spike[len(calm) - 1][2], spike[len(calm) - 1][1]
    assert max(load for _, _, load in spike) < 1.5 * calm_load
    assert max(n for _, n, _ in spike) < 2 * calm_n
    # The same rate, sustained: planned in full (x (1 + headroom)) once it has been
    # seen for PERSISTENCE x H (its first observation covers the interval before it).
    step = _drive(spec, [*calm, *[(high, over)] * 3, *[(high, ok)] * 8], dt)
    t_step = step[len(calm)][0]
    need = high * (1.0 + spec.scaling.headroom)
    by = t_step - dt + burst.PERSISTENCE * horizon
    planned = [t for t, _, load in step if load >= need * 0.999]
    assert planned and planned[0] <= by + dt - 1e-9, (planned[:1], by)
    assert max(n for _, n, _ in step) > step[0][1]


def test_the_closed_loops_compressed_climb_scales_up_in_time() -> None:
    # What the operator saw in tests/e2e/test_closed_loop.py's first climb: the trace
    # steps from 1,500 to ~8,000 rps within 5 s, seen through Prometheus's 10-s
    # rate() window as a climb over five decisions 2 s apart, with the Ready
    # replica's p99 at 10x the target from the third. One replica holds ~5,470 rps
    # at the SLO; with 25 % headroom the plan needs two once the observed rate
    # passes ~4,380 rps (4,194 x 1.25 = 5,243 here). The e2e test requires more
    # replicas than were Ready at a miss within 3 intervals of it: the climb must
    # be planned as it is seen. It has been rising for longer than PERSISTENCE x H
    # (3.5 s), so it is. The chase rule (the median of the last H, or Holt's
    # look-ahead, whose smoothing runs on a fixed 15-s time scale) ordered the
    # second replica two decisions later, after the e2e test's 3 intervals.
    spec = _fast_spec()
    # Calm: the replica shows the model's own p99 (the emulated fleet's latency).
    calm_ms = perf.predict_replica(spec.variants[0].profiles[0], 1500.0, 99.0).latency_ms
    calm = [(1500.0, calm_ms)] * 10
    climb = [(1711.0, 6.0), (2146.0, 8.4), (2900.0, 250.0), (4194.0, 250.0),
             (5465.0, 250.0), (6441.0, 250.0)]
    out = _drive(spec, [*calm, *climb], 2.0)
    n = [r[1] for r in out]
    assert n[: len(calm) + 3] == [1] * (len(calm) + 3)  # 2,900 x 1.25 fits one
    assert all(x >= 2 for x in n[len(calm) + 3:]), out


def test_replicas_already_starting_drain_before_new_ones_could() -> None:
    # Overloaded (lasting 1,000 > 800 Ready) with 30,000 queued; H = 50 s. Patient
    # clients: 30,000 + 200 x 50 = 40,000 left when capacity ordered now is Ready.
    assert burst.backlog_left(30_000.0, 800.0, 1_000.0, 1_000.0, 50.0, None) == 40_000.0
    # 500 rps of replicas already starting, Ready within 20 s: they drain 500 x 30
    # = 15,000 of it before then.
    assert burst.backlog_left(30_000.0, 800.0, 1_000.0, 1_000.0, 50.0, None,
                              500.0, 20.0) == 25_000.0
    # Ready only at H or later: no credit.
    assert burst.backlog_left(30_000.0, 800.0, 1_000.0, 1_000.0, 50.0, None,
                              500.0, 60.0) == 40_000.0
    # Patience 10 s, a fleet holding the lasting rate (1,200 Ready): what waits at
    # 10 s (<= 1,000 x 10) drains at 200/s for 40 s (8,000) and at 700/s from 20 s
    # (booting): 10,000 - 8,000 - 500 x 30 < 0: nothing left.
    assert burst.backlog_left(30_000.0, 1_200.0, 1_000.0, 1_000.0, 50.0, 10.0,
                              500.0, 20.0) == 0.0
    # Without the booting replicas: 10,000 - 200 x 40 = 2,000.
    assert burst.backlog_left(30_000.0, 1_200.0, 1_000.0, 1_000.0, 50.0, 10.0) == 2_000.0


def test_decide_gives_replicas_still_starting_credit_in_the_drain() -> None:
    # 4 Ready replicas and 4 more starting (ordered at an earlier step), 1,000 rps
    # that lasted, 60,000 requests queued, patient clients. The drain used to plan as
    # if the 4 starting replicas did not exist until capacity ordered now is Ready.
    spec = _spec(scale_down_stabilization_seconds=300.0, drain_seconds=60.0)
    state = decide(spec, Observation(rps=1000.0, current=()), None, 0.0).state
    t = 0.0
    for _ in range(12):
        t += 15.0
        state = decide(spec, Observation(rps=1000.0, current=_ready(spec, 4), pending=10.0,
                                         latency_ms=40.0), state, t).state
    ready = _ready(spec, 4)
    starting = (PlacementState("v", "p", 8, 4),)
    obs = dict(rps=1000.0, pending=60_000.0, latency_ms=5000.0)
    only_ready = decide(spec, Observation(current=ready, **obs), state, t + 15.0)
    with_boot = decide(spec, Observation(current=starting, **obs), state, t + 15.0)
    d_ready = only_ready.details["burst"]["drain_rps"]  # type: ignore[index]
    d_boot = with_boot.details["burst"]["drain_rps"]  # type: ignore[index]
    cap = _ready_capacity(spec, Observation(rps=1.0, current=ready), frozenset())
    # Ready within 60 - 15 = 45 s of H = 75 s: 4 replicas' capacity drains 30 s more.
    assert d_boot == pytest.approx(max(0.0, d_ready - cap * 30.0 / 60.0), rel=1e-6)
    assert d_boot < d_ready


def test_held_levels_a_cluster_of_bursts_is_no_level_until_it_lasts() -> None:
    # The bursty fleet's seed-2 cluster as decide() saw it (benchmarks/bench_policies.py
    # --seed 2, 30-s rate window, 15-s steps; L4 pools: H = 135 s, tau = 67.5 s):
    # 1,240 rps, a lull at 625, then 12x bursts for 105 s.
    hist = [[float(t), 1240.0] for t in range(0, 300, 15)]
    hist += [[float(t), 625.0] for t in range(300, 480, 15)]
    rates = [20_366.0, 44_435.0, 27_499.0, 12_979.0, 34_448.0, 39_356.0, 15_394.0]
    hist += [[480.0 + 15.0 * i, r] for i, r in enumerate(rates)]
    at = {t: i for i, (t, _) in enumerate(hist)}
    old = burst.held_levels(hist, 135.0)
    # The lowest rate of (now - 67.5, now] was 12,979 from the cluster's fifth step:
    # a level to the old rule, planned for and Ready after the cluster.
    assert old[at[540.0]] == 12_979.0 and old[at[570.0]] == 12_979.0
    new = burst.held_levels(hist, 135.0, 300.0, 2.0)
    # 10x what lasted, swinging 13k-44k within tau (bursts with gaps): not held for
    # the whole H, so the level is what lasted before it.
    assert new[at[540.0]] == 1240.0 and new[at[570.0]] == 1240.0
    assert burst.persisted_level(hist, 570.0, 135.0, 300.0, 2.0) == 1240.0
    assert burst.persisted_level(hist, 570.0, 135.0, 0.0, 2.0, 300.0) == 1240.0
    # Still swinging, but held for the whole H (12,979 or more over (480, 615]): a
    # level after all, the lowest of it.
    lasted = [*hist[:at[555.0] + 1], [570.0, 15_000.0], [585.0, 40_000.0],
              [600.0, 14_000.0], [615.0, 35_000.0]]
    assert burst.held_levels(lasted, 135.0, 300.0, 2.0)[-1] == 12_979.0
    # A steady 5x step (within 2x over tau) counts after tau, as before.
    step = hist[:at[465.0] + 1] + [[480.0 + 15.0 * i, 6200.0] for i in range(5)]
    assert burst.held_levels(step, 135.0, 300.0, 2.0)[-1] == 6200.0
    # The lasting rate: the cluster's lowest rate extrapolated as a rise from the
    # lull used to count up to the current rate; now what lasted (no rise from it).
    assert burst.lasting_rate(hist[:at[540.0] + 1], 540.0, 135.0) == 34_448.0
    assert burst.lasting_rate(hist[:at[540.0] + 1], 540.0, 135.0, None, 2.0, 300.0) == 1240.0
    assert burst.lasting_rate(step, 540.0, 135.0, None, 2.0, 300.0) == 6200.0


def test_a_cluster_of_bursts_shorter_than_the_startup_orders_nothing_for_its_rate() -> None:
    # The bursty fleet's seed-2 cluster (benchmarks/bench_policies.py --seed 2) on a
    # 60-s pool (H = 75 s): 1,240 rps, then 60 s of 12x bursts seen through a 30-s
    # rate window (20k, 44k, 27k, 13k), with their backlog. Their lowest rate over
    # half a startup (13k) passed for a level: the old rule planned 13k rps and more
    # (10x the fleet), Ready 75 s later, after the cluster, and held it while the
    # look-ahead's window ran. (On the fleet, H = 135 s: the cluster lasted 105 s.)
    spec = _spec(scale_down_stabilization_seconds=300.0, drain_seconds=60.0,
                 client_timeout_seconds=30.0)
    d = decide(spec, Observation(rps=1240.0, current=()), None, 0.0)
    t = 0.0
    for _ in range(24):
        t += 15.0
        d = decide(spec, Observation(rps=1240.0, current=_ready(spec, d.total_replicas),
                                     pending=10.0, latency_ms=40.0), d.state, t)
    calm = d.total_replicas
    loads = []
    for rps in (20_366.0, 44_435.0, 27_499.0, 12_979.0):
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, calm),
                                     pending=rps * 30.0, latency_ms=20_000.0), d.state, t)
        loads.append(float(d.details["planning_load_rps"]))  # type: ignore[arg-type]
    assert max(loads) < 3.0 * 1240.0, loads
    assert d.total_replicas <= 2 * calm



def test_the_return_from_a_lull_is_no_rise_to_extrapolate() -> None:
    # 1,000 rps for 5 minutes, a 90-s lull at 50, then 1,000 again (the bursty
    # fleet's seed 1 at 9 min: 3,300 -> 170 -> 3,300 rps). Holt's clipped residuals
    # doubled its deviation at every step of the lull, and its burst allowance put
    # the look-ahead at 1.5-1.7x the level the rate came back to: that many more
    # replicas, Ready two minutes after the return, for minutes.
    spec = _spec(scale_down_stabilization_seconds=300.0)
    d = decide(spec, Observation(rps=1000.0, current=()), None, 0.0)
    t = 0.0
    looks = []
    for rps in [1000.0] * 20 + [50.0] * 6 + [1000.0] * 8:
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     pending=1.0, latency_ms=40.0), d.state, t)
        looks.append(float(d.details["forecast_rps"]))  # type: ignore[arg-type]
    assert looks[19] == pytest.approx(1000.0, rel=0.05)
    assert max(looks[26:]) < 1.1 * 1000.0, looks[25:]


def test_a_ramp_that_stopped_is_not_extrapolated_at_its_old_pace() -> None:
    # A ramp 400 -> 1,000 rps in four steps, then flat for 45 s (more than half the
    # horizon, H = 60 s startup + 15 s). Holt's trend (smoothed) still says +30 %
    # over H; the old cap let the look-ahead run as far as the rate rose over the
    # whole horizon (+300 rps: 1,000 -> 1,300) for a ramp already over. The rise now
    # goes on at the pace it kept over the last H / 2: none, so the look-ahead is the
    # rate plus the forecast's noise allowance. (Bundled trace at x1500: 3k rps of
    # trend above a rate flat at 8.7k for two minutes after its ramp, each step's
    # look-ahead held for H: L4 on-demand replicas kept until minute 7.)
    spec = _spec(scale_down_stabilization_seconds=300.0, panic_seconds=0.0)
    d = decide(spec, Observation(rps=400.0, current=()), None, 0.0)
    t = 0.0
    ahead: list[float] = []
    for rps in (400.0,) * 6 + (550.0, 700.0, 850.0, 1000.0) + (1000.0,) * 3:
        t += 15.0
        d = decide(spec, Observation(rps=rps, current=_ready(spec, d.total_replicas),
                                     latency_ms=40.0, pending=0.0), d.state, t)
        ahead.append(float(d.details["forecast_rps"]))  # type: ignore[arg-type]
    noise = 1.5 * float(d.state["forecast"]["s"])  # type: ignore[index]
    assert ahead[-1] == pytest.approx(1000.0 + noise, rel=1e-6)
    # Holt's own look-ahead still carried the trend (+190 rps); the old cap
    # (1,000 + 300 + noise) let it through.
    level, trend = (float(d.state["forecast"][k]) for k in ("l", "b"))  # type: ignore[index]
    assert level + trend * 75.0 + noise > ahead[-1] + 150.0
    # While the ramp ran, its rise was extrapolated (x1.3 the rate at its end).
    assert max(ahead) > 1.3 * 1000.0

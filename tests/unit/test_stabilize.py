"""Stabiliser with a fake clock: windows, step limits, make-before-break, unknown signals."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from tritonscale.core.autoscale import decide
from tritonscale.core.spec import ScaledModelSpec, Scaling
from tritonscale.core.stabilize import stabilize_load, transition
from tritonscale.core.types import Decision, Observation, Placement, PlacementState

SpecFactory = Callable[..., ScaledModelSpec]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def tick(self, s: float = 15.0) -> float:
        self.t += s
        return self.t


def test_stabilize_load_follows_rises_at_once_and_falls_after_window() -> None:
    clock = FakeClock()
    window: list[list[float]] | None = None
    prev: float | None = None
    out = []
    recs = [100.0, 500.0, 200.0, 200.0] + [200.0] * 25
    for r in recs:
        prev, window = stabilize_load(window, prev, r, clock.tick(), 0.0, 300.0)
        out.append(prev)
    assert out[0] == 100.0
    assert out[1] == 500.0  # rise followed within one interval
    # 500 was recommended at step 1 (t=1030); it leaves the 300 s window at t >= 1330,
    # i.e. step 21 (t = 1015 + 15*21 = 1330).
    assert out[2:20] == [500.0] * 18
    assert out[20] == 500.0 and out[21] == 200.0
    assert len(window) <= 3  # pruned state stays small


def test_stabilize_load_up_window_delays_rises() -> None:
    clock = FakeClock()
    window: list[list[float]] | None = None
    prev: float | None = 100.0
    outs = []
    for r in [100.0, 400.0, 400.0, 400.0, 400.0, 400.0]:
        prev, window = stabilize_load(window, prev, r, clock.tick(), 60.0, 300.0)
        outs.append(prev)
    # min over the last 60 s stays 100 until the 100 ages out (4 steps later).
    assert outs[:4] == [100.0] * 4 and outs[5] == 400.0


def _ps(key: tuple[str, str], desired: int, ready: int) -> PlacementState:
    return PlacementState(key[0], key[1], desired, ready)


A = ("small", "t4-spot")
B = ("big", "a100-od")


def test_transition_bounded_steps() -> None:
    sc = Scaling(max_scale_up_step=2, max_scale_down_step=1)
    up = transition({A: 7}, [_ps(A, 3, 3)], sc)
    assert up.desired == {A: 5} and up.step_limited
    down = transition({A: 1}, [_ps(A, 5, 5)], sc)
    assert down.desired == {A: 4} and down.step_limited


def test_transition_make_before_break() -> None:
    sc = Scaling()
    # Switching A -> B: B is not Ready yet, so A keeps its Ready replicas.
    t1 = transition({B: 2}, [_ps(A, 3, 3)], sc)
    assert t1.desired == {A: 3, B: 2} and t1.held_for_readiness
    t2 = transition({B: 2}, [_ps(A, 3, 3), _ps(B, 2, 1)], sc)
    assert t2.desired == {A: 3, B: 2}
    # B Ready: A goes.
    t3 = transition({B: 2}, [_ps(A, 3, 3), _ps(B, 2, 2)], sc)
    assert t3.desired == {B: 2} and not t3.held_for_readiness
    # Not-Ready old replicas are no capacity: they may go at once.
    t4 = transition({B: 2}, [_ps(A, 3, 1), _ps(B, 2, 0)], sc)
    assert t4.desired == {A: 1, B: 2}


def _run(spec: ScaledModelSpec, rps_seq: list[float | None], clock: FakeClock,
         ready_lag: int = 0) -> list[Decision]:
    """Drive decide like the operator; replicas become Ready ``ready_lag`` steps later."""
    state: Any = None
    cur: tuple[PlacementState, ...] = ()
    history: list[dict[tuple[str, str], int]] = []
    out = []
    for rps in rps_seq:
        d = decide(spec, Observation(rps=rps, current=cur), state, clock.tick())
        # Persisted in status as JSON between steps, like the operator does.
        state = json.loads(json.dumps(d.state))
        assert len(json.dumps(state)) < 1500, state
        history.append(d.replicas())
        old = history[-1 - ready_lag] if len(history) > ready_lag else {}
        cur = tuple(_ps(k, n, min(n, old.get(k, 0))) for k, n in d.replicas().items())
        out.append(d)
    return out


def test_decide_scales_up_for_a_step_that_lasts_and_down_after_the_horizon(
    make_spec: SpecFactory,
) -> None:
    spec = make_spec(scaling={"scaleDownStabilizationSeconds": 120})
    # A one-interval 5x spike: capacity ordered for it would be Ready after the
    # pool's 60-s startup, long after it is gone; nothing is ordered for its rate
    # (core/burst.py, lasting_rate). The old rule ordered 4 replicas and held them for
    # the horizon.
    spike = [d.total_replicas for d in _run(spec, [1000.0] * 4 + [5000.0] + [1000.0] * 14,
                                            FakeClock())]
    assert spike == [1] * 19
    # The same step, sustained: the whole step planned once it has held for half the
    # horizon (60 s + 15 s: 37.5 s; its first observation covers the interval
    # before it, so at its third), and down after the horizon once it ends. Until
    # then it is 5x what lasted, beyond the 2x (1 + maxHeadroom) the forecast
    # follows unlasted: a burst to it (test_burst.py,
    # test_a_burst_beyond_what_lasted_does_not_move_the_look_ahead). The forecast
    # used to follow it part way from its second observation (2 replicas, then 4
    # at its fourth).
    ds = _run(spec, [1000.0] * 4 + [5000.0] * 8 + [1000.0] * 16, FakeClock())
    n = [d.total_replicas for d in ds]
    assert n[3] == 1
    assert n[6] >= 4 and ds[6].reason == "ScaledUp" and n[11] >= 4
    assert max(n[12:16]) == n[11]  # held for the horizon after the step ends
    assert n[-1] < n[11]
    assert "ScaledDown" in [d.reason for d in ds[12:]]


def test_unknown_signals_hold_and_never_scale_down(make_spec: SpecFactory) -> None:
    spec = make_spec(scaling={"failureThreshold": 3})
    clock = FakeClock()
    ds = _run(spec, [4000.0] * 3 + [None, math.nan, math.inf, None, None], clock)
    held = ds[3:]
    assert all(d.replicas() == ds[2].replicas() for d in held)
    assert [d.reason for d in held] == ["HeldUnknownSignals"] * 5  # no safe plan configured


def test_safe_plan_after_failure_threshold_never_below_current(make_spec: SpecFactory) -> None:
    spec = make_spec(
        scaling={
            "failureThreshold": 2,
            "safePlan": [{"variant": "big", "pool": "t4-od", "replicas": 2},
                         {"variant": "small", "pool": "t4-spot", "replicas": 1}],
        }
    )
    clock = FakeClock()
    ds = _run(spec, [4000.0] * 2 + [None] * 3 + [4000.0], clock)
    before = ds[1].replicas()
    assert before[("small", "t4-spot")] == 3
    assert ds[2].reason == "HeldUnknownSignals"
    assert ds[3].reason == "SafePlan" and ds[4].reason == "SafePlan"
    # Safe plan merged with current: small@t4-spot stays at 3 (not 1), big@t4-od added.
    assert ds[3].replicas() == {("small", "t4-spot"): 3, ("big", "t4-od"): 2}
    assert ds[5].state["failures"] == 0  # signals back: failures reset


def test_first_call_with_unknown_signals_is_min_replicas_on_cheapest(
    make_spec: SpecFactory,
) -> None:
    spec = make_spec(scaling={"minReplicas": 2})
    d = decide(spec, Observation(rps=None, error="prometheus timeout"), None, 0.0)
    assert d.reason == "InitialPlan"
    assert d.replicas() == {("small", "t4-spot"): 2}
    assert "prometheus timeout" in d.message


def test_not_ready_replicas_count_no_double_add(make_spec: SpecFactory) -> None:
    spec = make_spec()
    clock = FakeClock()
    seq = [1000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0]
    ds = _run(spec, seq, clock, ready_lag=3)
    # Replicas added are not Ready for 3 steps; nothing is added twice: the fleet is
    # the one planned when every replica is Ready at once (the step is planned as it
    # lasts, core/burst.py, so it grows over a few steps either way).
    at_once = _run(spec, seq, FakeClock(), ready_lag=0)
    assert [d.total_replicas for d in ds] == [d.total_replicas for d in at_once]
    assert ds[-1].total_replicas > ds[0].total_replicas


def test_variant_change_is_make_before_break_in_decide(make_spec: SpecFactory) -> None:
    spec = make_spec(scaling={"scaleDownStabilizationSeconds": 0})
    clock = FakeClock()
    state: Any = None
    cur = (_ps(("small", "t4-spot"), 2, 2),)
    d = decide(spec, Observation(rps=1000.0, current=cur), state, clock.tick())
    state = d.state
    # Spot pool lost: the plan moves to t4-od; old spot replicas stay until the new are Ready.
    gone = frozenset({"t4-spot"})
    d = decide(spec, Observation(rps=1000.0, current=cur, unavailable_pools=gone), state,
               clock.tick())
    assert d.reason == "Transitioning"
    assert d.replicas()[("small", "t4-spot")] == 2
    assert d.replicas()[("small", "t4-od")] >= 1
    cur = (_ps(("small", "t4-spot"), 2, 2), _ps(("small", "t4-od"), 1, 1))
    d = decide(spec, Observation(rps=1000.0, current=cur, unavailable_pools=gone), d.state,
               clock.tick())
    assert ("small", "t4-spot") not in d.replicas()


def test_unknown_signals_move_replicas_that_cannot_be_held(resnet: ScaledModelSpec) -> None:
    """Found by the e2e tests: with signals unknown, replicas on an unavailable or
    removed pool (or of a variant below a raised minAccuracy) were held forever, and
    a removed pool's replicas were filtered out downstream, leaving zero replicas."""
    from dataclasses import replace

    clock = FakeClock()
    first = decide(resnet, Observation(rps=None, error="none"), None, clock.tick())
    assert first.replicas() == {("int8", "t4-spot"): 1}
    cur = (_ps(("int8", "t4-spot"), 1, 1),)

    # The pool is lost: its replica moves to the next cheapest pool.
    lost = Observation(rps=None, error="none", current=cur,
                       unavailable_pools=frozenset({"t4-spot"}))
    d = decide(resnet, lost, first.state, clock.tick())
    assert d.reason == "Replaced"
    assert d.target == (Placement("int8", "l4-spot", 1),)
    # Make-before-break (in decide, the one transition): the Ready replica stays
    # until its replacement is Ready.
    assert d.replicas() == {("int8", "l4-spot"): 1, ("int8", "t4-spot"): 1}
    # Next step, while the old replica still drains: the replacement is kept, not added to.
    draining = replace(lost, current=(*cur, _ps(("int8", "l4-spot"), 1, 0)))
    again = decide(resnet, draining, d.state, clock.tick())
    assert again.replicas() == {("int8", "l4-spot"): 1, ("int8", "t4-spot"): 1}
    # The replacement is Ready: the old replica goes.
    ready = replace(lost, current=(*cur, _ps(("int8", "l4-spot"), 1, 1)))
    assert decide(resnet, ready, again.state, clock.tick()).replicas() == {
        ("int8", "l4-spot"): 1}
    # Once only the replacement runs, it is simply held.
    settled = Observation(rps=None, error="none", current=(_ps(("int8", "l4-spot"), 1, 1),),
                          unavailable_pools=frozenset({"t4-spot"}))
    held = decide(resnet, settled, again.state, clock.tick())
    assert held.reason == "HeldUnknownSignals"
    assert held.replicas() == {("int8", "l4-spot"): 1}

    # minAccuracy raised above int8's accuracy: fp16 replaces it.
    strict = replace(resnet, slo=replace(resnet.slo, min_accuracy=0.76))
    d = decide(strict, Observation(rps=None, error="none", current=cur), first.state,
               clock.tick())
    assert d.reason == "Replaced"
    assert d.target == (Placement("fp16", "t4-spot", 1),)

    # The pool is removed from the spec.
    fewer = replace(resnet, node_pools=tuple(p for p in resnet.node_pools
                                             if p.name != "t4-spot"))
    d = decide(fewer, Observation(rps=None, error="none", current=cur), first.state,
               clock.tick())
    assert d.target == (Placement("int8", "l4-spot", 1),)
    # Held as it runs (the operator leaves a placement outside the spec untouched).
    assert d.replicas() == {("int8", "l4-spot"): 1, ("int8", "t4-spot"): 1}


def test_scale_to_zero_only_after_idle_seconds(make_spec: SpecFactory) -> None:
    clock = FakeClock()
    never = make_spec(scaling={"minReplicas": 0, "scaleDownStabilizationSeconds": 0})
    ds = _run(never, [100.0] + [0.0] * 10, clock)
    assert all(d.total_replicas == 1 for d in ds)  # idleSeconds 0: never to zero
    idle = make_spec(scaling={"minReplicas": 0, "idleSeconds": 60,
                              "scaleDownStabilizationSeconds": 0})
    ds = _run(idle, [100.0] + [0.0] * 10, clock)
    n = [d.total_replicas for d in ds]
    # Idle from the 2nd step; 60 s = 4 intervals later the floor drops to zero.
    assert n[:5] == [1] * 5 and n[5:] == [0] * 6
    back = decide(idle, Observation(rps=50.0, current=()), ds[-1].state, clock.tick())
    assert back.total_replicas == 1 and back.reason == "ScaledUp"


def test_forecast_horizon_is_the_startup_of_the_pools_in_use(make_spec: SpecFactory) -> None:
    from tritonscale.core.autoscale import horizon_seconds

    spec = make_spec()  # t4 pools start in 60 s, a100 in 120 s; interval 15 s
    assert horizon_seconds(spec) == 135.0
    assert horizon_seconds(spec, pools_in_use=frozenset({"t4-spot"})) == 75.0
    assert horizon_seconds(spec, pools_in_use=frozenset({"t4-spot", "a100-od"})) == 135.0
    assert horizon_seconds(spec, frozenset({"a100-od"})) == 75.0


def test_unknown_signals_settle_once_the_failure_threshold_is_reached(
    make_spec: SpecFactory,
) -> None:
    """Blind steps past the threshold decide exactly the same (state, message): the
    status then stays unchanged instead of being rewritten every interval."""
    from tritonscale.core import status as st

    spec = make_spec(scaling={"failureThreshold": 3})
    clock = FakeClock()
    ds = _run(spec, [4000.0] * 2 + [None] * 8, clock)
    assert [d.state["failures"] for d in ds[2:]] == [1, 2, 3, 3, 3, 3, 3, 3]
    last = [st.decision_status(d, 0.0) for d in ds[5:]]
    assert all(st.same_decision(last[0], x) for x in last[1:])
    assert all(d.state == ds[5].state for d in ds[5:])
    assert all(d.replicas() == ds[1].replicas() for d in ds[2:])


def test_safe_plan_message_past_the_threshold_is_stable(make_spec: SpecFactory) -> None:
    spec = make_spec(
        scaling={"failureThreshold": 2,
                 "safePlan": [{"variant": "big", "pool": "t4-od", "replicas": 1}]}
    )
    ds = _run(spec, [4000.0] + [None] * 5, FakeClock())
    assert [d.reason for d in ds[2:]] == ["SafePlan"] * 4
    assert len({d.message for d in ds[2:]}) == 1


def test_transition_holds_ready_replicas_while_a_shrunk_placement_still_boots() -> None:
    # A cascade's tier 2 moves from C (Ready) to B (booting), and the new target asks
    # B for fewer replicas than were booting: B is still not Ready, so C must stay.
    # (The old rule looked only at placements not being shrunk, dropped C, and left
    # tier 2 with no Ready replica: every escalated request was lost.)
    c = ("big", "l4-od")
    sc = Scaling()
    t = transition({A: 5, B: 4}, [_ps(A, 10, 10), _ps(c, 4, 4), _ps(B, 6, 0)], sc)
    assert t.desired.get(c) == 4 and t.held_for_readiness
    assert t.desired[A] == 10 and t.desired[B] == 4


def test_transition_surge_stays_within_pool_limits_and_rolls_a_full_pool() -> None:
    # Swap 3 Ready A for 3 B on the same pool of maxReplicas 4: the surge may use
    # the one free slot only (the old rule asked for 6 replicas on a 4-node pool:
    # the extra pods would never schedule, so A would be held for ever).
    a, b = ("small", "p"), ("big", "p")
    sc = Scaling()
    lim = {"p": 4}
    t1 = transition({b: 3}, [_ps(a, 3, 3)], sc, lim)
    assert t1.desired == {a: 3, b: 1}
    # b's first replica is booting: wait.
    t2 = transition({b: 3}, [_ps(a, 3, 3), _ps(b, 1, 0)], sc, lim)
    assert t2.desired == {a: 3, b: 1}
    # Ready, pool full, nothing booting: release one old replica for one new.
    t3 = transition({b: 3}, [_ps(a, 3, 3), _ps(b, 1, 1)], sc, lim)
    assert t3.desired == {a: 2, b: 2}
    t4 = transition({b: 3}, [_ps(a, 2, 2), _ps(b, 2, 2)], sc, lim)
    assert t4.desired == {a: 1, b: 3}
    t5 = transition({b: 3}, [_ps(a, 1, 1), _ps(b, 3, 3)], sc, lim)
    assert t5.desired == {b: 3}
    for t in (t1, t2, t3, t4, t5):
        assert sum(t.desired.values()) <= 4
    # The total limit bounds the surge the same way.
    tot = transition({B: 3}, [_ps(A, 3, 3)], sc, max_total=4)
    assert tot.desired == {A: 3, B: 1}


def test_unknown_signals_after_a_restart_mid_move_do_not_double_the_fleet(
    resnet: ScaledModelSpec,
) -> None:
    """Found by tests/e2e/test_resilience.py under load: the operator was killed after
    creating the replacement Deployment but before its status (the autoscaler state)
    recorded the move. On restart the old and the new Deployment were both counted as
    capacity to hold, and the replacement was planned at 2 replicas for a fleet of 1."""
    from dataclasses import replace

    clock = FakeClock()
    first = decide(resnet, Observation(rps=None, error="none"), None, clock.tick())
    assert first.replicas() == {("int8", "t4-spot"): 1}
    fewer = replace(resnet, node_pools=tuple(p for p in resnet.node_pools
                                             if p.name != "t4-spot"))
    # Old replica Ready, its replacement created but not Ready; the stored state is
    # still the one from before the move.
    mid = (_ps(("int8", "t4-spot"), 1, 1), _ps(("int8", "l4-spot"), 1, 0))
    d = decide(fewer, Observation(rps=None, error="none", current=mid), first.state,
               clock.tick())
    assert d.reason == "Replaced"
    assert d.target == (Placement("int8", "l4-spot", 1),)
    assert d.replicas() == {("int8", "l4-spot"): 1, ("int8", "t4-spot"): 1}


def test_no_scale_down_on_the_first_readings_after_an_outage(make_spec: SpecFactory) -> None:
    """Found by tests/e2e/test_closed_loop.py: while blind the scale-down window kept
    running, so after an outage longer than the window the first readings (a
    restarted Prometheus's rate() is short of samples and under-reads) scaled the
    fleet down at once. A blind step recommends what it holds: the window restarts
    when the signals come back."""
    spec = make_spec(scaling={"scaleDownStabilizationSeconds": 60})
    clock = FakeClock()
    ds = _run(spec, [4000.0] * 4 + [None] * 6 + [1000.0] * 8, clock)
    held = ds[3].total_replicas
    assert held > 1
    assert [d.reason for d in ds[4:10]] == ["HeldUnknownSignals"] * 6
    # The last blind step is ds[9]; its recommendation stays in the 60-s window for
    # the next three steps (15, 30, 45 s later).
    assert [d.total_replicas for d in ds[10:13]] == [held] * 3, [
        (d.total_replicas, d.reason) for d in ds]
    # Then the lower load is followed.
    assert min(d.total_replicas for d in ds[14:]) < held

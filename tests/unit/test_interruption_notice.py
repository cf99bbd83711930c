"""Spot interruption notice (``interruptionNoticeSeconds``): the simulator announces a
preemption ahead of it, and tritonscale (``decide``, the operator's code), oracle and
foresight order the replacement at the notice instead of after the event.

The expected timelines are computed by hand from the spec below, not by the code
under test: one T4 variant (10 ms per request, batch 1), a spot pool at 0.2 $/h and
an on-demand pool at 0.5 $/h, both with a 120-s startup; minReplicas 2; 30 req/s
(one replica holds it); steps every 15 s. Both replicas sit on spot (cheapest). The
spot pool is preempted at t = 600 s with a 120-s notice:

* notice at 600 - 120 = 480 s, a step time: the replacement (2 on-demand replicas,
  the only other pool) is ordered at 480 s and Ready at 480 + 120 = 600 s, the
  instant the spot replicas die;
* between 480 and 600 s the two spot replicas stay Ready and serving
  (make-before-break: nothing removed before its replacement is Ready);
* so at every step at least minReplicas (2) are Ready and every minute meets the SLO.

Without a notice the replacement is ordered at the first step after the event
(615 s) and Ready at 735 s: nothing Ready for 120 s and more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tritonscale.core.autoscale import decide
from tritonscale.core.spec import ScaledModelSpec, SpecError
from tritonscale.core.types import Observation, PlacementState
from tritonscale.sim.engine import SimConfig, Simulator, StepRecord
from tritonscale.sim.report import run_policy
from tritonscale.sim.windows import verdicts

SpecFactory = Callable[..., ScaledModelSpec]

ONE = {
    "name": "one", "precision": "fp16", "accuracy": 0.9,
    "profiles": [{"accelerator": "T4", "maxBatchSize": 1, "maxQueueDelayMs": 0,
                  "batches": [{"size": 1, "latencyMs": 10.0}]}],
}
EVENT = 600.0
STARTUP = 120


def _spec(make_spec: SpecFactory, notice: int) -> ScaledModelSpec:
    t4 = {"accelerator": "T4", "maxReplicas": 4, "startupSeconds": STARTUP}
    return make_spec(
        variants=[ONE],
        nodePools=[{"name": "spot", "capacityType": "spot", "pricePerHour": 0.2,
                    "interruptionNoticeSeconds": notice, **t4},
                   {"name": "od", "pricePerHour": 0.5, **t4}],
        slo={"latency": {"percentile": 95, "targetMs": 150}, "minAccuracy": 0.7},
        scaling={"minReplicas": 2, "maxReplicas": 10, "intervalSeconds": 15,
                 "scaleDownStabilizationSeconds": 300, "headroom": 0.1},
    )


def _run(spec: ScaledModelSpec, policy: str = "tritonscale") -> Any:
    arr = np.arange(0.0, 1200.0, 1 / 30)
    cfg = SimConfig(load_balancing="round-robin", warmup_s=0.0, preroll_max_s=600.0,
                    preemption_events=((EVENT, "spot"),))
    return run_policy(spec, arr, policy, cfg).run


def _by_pool(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, pool), n in counts.items():
        out[pool] = out.get(pool, 0) + n
    return out


def _at(steps: list[StepRecord], t: float) -> StepRecord:
    return next(s for s in steps if abs(s.t - t) < 1e-6)


def test_the_field_is_parsed_and_checked(make_spec: SpecFactory) -> None:
    assert _spec(make_spec, 120).pool("spot").interruption_notice_seconds == 120
    assert _spec(make_spec, 0).pool("spot").interruption_notice_seconds == 0
    for bad, why in ((-1, ">= 0"), (1.5, "integer"), (3601, "<= 3600"), ("2m", "integer")):
        with pytest.raises(SpecError) as e:
            _spec(make_spec, bad)  # type: ignore[arg-type]
        assert "spec.nodePools[0].interruptionNoticeSeconds" in str(e.value), str(e.value)
        assert why in str(e.value)


def test_the_simulator_announces_the_event_ahead(make_spec: SpecFactory) -> None:
    """The view lists the pool from 600 - 120 = 480 s until the event (the step at
    600 s runs before the event is applied), not before and not after; a pool
    without notice is never listed."""
    arr = np.arange(0.0, 1000.0, 1.0)
    cfg = SimConfig(preemption_events=((EVENT, "spot"),))
    for notice, want in ((120, {479.0: False, 480.0: True, 600.0: True, 601.0: False}),
                         (0, {479.0: False, 480.0: False, 600.0: False, 601.0: False})):
        sim = Simulator(_spec(make_spec, notice), arr, cfg)
        for t, listed in want.items():
            sim.run_interval(sim.now, t)
            sim.now = t
            assert ("spot" in sim.noticed_pools()) is listed, (notice, t)
            assert ("spot" in sim.observe(95).noticed_pools) is listed


def test_replacement_ordered_at_the_notice_is_ready_when_spot_dies(
    make_spec: SpecFactory,
) -> None:
    run = _run(_spec(make_spec, 120))
    assert run.preemptions == [(EVENT, "spot")]
    before = _at(run.steps, 465.0)
    assert _by_pool(before.desired) == {"spot": 2}
    # The notice step (480 s): the replacement is ordered, the spot replicas stay.
    notice = _at(run.steps, 480.0)
    assert _by_pool(notice.desired) == {"spot": 2, "od": 2}
    for s in run.steps:
        if 480.0 <= s.t < EVENT:
            assert _by_pool(s.ready).get("spot") == 2, s  # never removed early
            assert _by_pool(s.desired).get("od") == 2, s
    # Never fewer than minReplicas Ready, the event's instant included.
    low = [(s.t, s.ready) for s in run.steps if sum(s.ready.values()) < 2]
    assert not low, low
    assert _by_pool(_at(run.steps, EVENT).ready).get("od") == 2
    _win, ok = verdicts(run_spec := _spec(make_spec, 120), run.arrivals, run.done)
    assert run_spec.scaling.min_replicas == 2
    assert ok.all(), [i for i, o in enumerate(ok) if not o]
    # At most what the two spot replicas had in flight at the event is lost.
    assert np.isinf(run.done).sum() <= 2


def test_without_notice_nothing_is_ready_for_a_startup(make_spec: SpecFactory) -> None:
    """The same run with interruptionNoticeSeconds 0 (today's behaviour): the
    replacement is ordered at the first step after the event (615 s; the step at
    600 s runs before it), Ready at 615 + 120 = 735 s: no replica Ready at the steps
    615 ... 720 s, and minutes miss the SLO."""
    run = _run(_spec(make_spec, 0))
    empty = [s.t for s in run.steps if sum(s.ready.values()) == 0]
    assert empty == [EVENT + 15.0 * i for i in range(1, 9)], empty
    assert _by_pool(_at(run.steps, 480.0).desired) == {"spot": 2}
    _win, ok = verdicts(_spec(make_spec, 0), run.arrivals, run.done)
    assert not ok.all()


@pytest.mark.parametrize("policy", ["oracle", "foresight"])
def test_the_references_get_the_same_notice(make_spec: SpecFactory, policy: str) -> None:
    """oracle (zero startup) moves off the noticed pool at the notice; foresight orders
    on-demand then and keeps the spot replicas Ready until the event: neither is left
    with nothing Ready, and no request is dropped beyond the event's in-flight ones."""
    run = _run(_spec(make_spec, 120), policy)
    notice = _at(run.steps, 480.0)
    assert _by_pool(notice.desired).get("od", 0) >= 1, notice
    low = [(s.t, s.ready) for s in run.steps if s.t >= 480.0 and sum(s.ready.values()) < 1]
    assert not low, low
    if policy == "foresight":
        for s in run.steps:
            if 480.0 <= s.t < EVENT:
                assert _by_pool(s.ready).get("spot", 0) >= 1, s
    assert np.isinf(run.done).sum() <= 2


def test_decide_plans_off_the_noticed_pool_and_keeps_its_ready_replicas(
    make_spec: SpecFactory,
) -> None:
    """One decide step, the operator's view: both replicas Ready on spot, spot under
    notice. The target is 2 on od (the only other pool), this step keeps the 2 spot
    replicas and adds the 2 od ones; the message names the pool and the taint."""
    spec = _spec(make_spec, 120)
    cur = (PlacementState("one", "spot", 2, 2),)
    warm = decide(spec, Observation(rps=30.0, latency_ms=12.0, current=cur), None, 0.0)
    assert warm.replicas() == {("one", "spot"): 2}
    why = "node n1 tainted karpenter.sh/disrupted:NoSchedule"
    d = decide(spec, Observation(rps=30.0, latency_ms=12.0, current=cur,
                                 noticed_pools={"spot": why}), warm.state, 15.0)
    assert d.replicas() == {("one", "spot"): 2, ("one", "od"): 2}
    assert d.target is not None and {p.pool for p in d.target} == {"od"}
    assert "spot" in d.message and why in d.message
    assert d.details["interruption"] == {"spot": why}
    # Replacement Ready: the doomed replicas go (they would die anyway).
    ready = (PlacementState("one", "spot", 2, 2), PlacementState("one", "od", 2, 2))
    d2 = decide(spec, Observation(rps=30.0, latency_ms=12.0, current=ready,
                                  noticed_pools={"spot": why}), d.state, 30.0)
    assert d2.replicas() == {("one", "od"): 2}
    # Signals unknown: the noticed replicas are replaced too (reason Replaced).
    d3 = decide(spec, Observation(rps=None, current=cur, noticed_pools={"spot": why}),
                warm.state, 15.0)
    assert d3.reason == "Replaced"
    assert d3.replicas() == {("one", "spot"): 2, ("one", "od"): 2}

"""tritonscale through a spot preemption: what the fleet keeps serving."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.engine import SimConfig
from tritonscale.sim.report import run_policy
from tritonscale.sim.windows import verdicts

SpecFactory = Callable[..., ScaledModelSpec]

ONE = {
    "name": "one", "precision": "fp16", "accuracy": 0.9,
    "profiles": [{"accelerator": "T4", "maxBatchSize": 1, "maxQueueDelayMs": 0,
                  "batches": [{"size": 1, "latencyMs": 10.0}]}],
}


def _zones(make_spec: SpecFactory) -> ScaledModelSpec:
    """One T4 spot pool per zone, alike (0.2 $/h, 60-s startup), and T4 on-demand
    at 0.5 $/h; minReplicas 2, p95 <= 150 ms."""
    t4 = {"accelerator": "T4", "maxReplicas": 4, "startupSeconds": 60}
    return make_spec(
        variants=[ONE],
        nodePools=[{"name": "spot-a", "capacityType": "spot", "pricePerHour": 0.2, **t4},
                   {"name": "spot-b", "capacityType": "spot", "pricePerHour": 0.2, **t4},
                   {"name": "od", "pricePerHour": 0.5, **t4}],
        slo={"latency": {"percentile": 95, "targetMs": 150}, "minAccuracy": 0.7},
        scaling={"minReplicas": 2, "maxReplicas": 10, "intervalSeconds": 15,
                 "scaleDownStabilizationSeconds": 300, "headroom": 0.1},
    )


def test_a_preemption_of_one_zone_leaves_the_other_serving(make_spec: SpecFactory) -> None:
    """30 req/s (one replica holds it: 10 ms each), minReplicas 2. The two replicas
    cost the same on either spot pool, so the plan puts one on each; spot-a is
    preempted at 400 s (down for 300 s): spot-b's replica holds the load alone
    while a replacement starts, and every minute meets the SLO. With both replicas
    on spot-a (the plan before: the first pool by name) nothing was Ready for the
    60-s startup after the event and two minutes missed."""
    spec = _zones(make_spec)
    arr = np.arange(0.0, 900.0, 1 / 30)
    cfg = SimConfig(load_balancing="round-robin", warmup_s=0.0, preroll_max_s=600.0,
                    preemption_events=((400.0, "spot-a"),))
    run = run_policy(spec, arr, "tritonscale", cfg).run
    before = next(s for s in run.steps if s.t >= 390.0)
    assert {k[1]: n for k, n in before.ready.items()} == {"spot-a": 1, "spot-b": 1}
    assert run.preemptions == [(400.0, "spot-a")]
    _win, ok = verdicts(spec, run.arrivals, run.done)
    assert ok.all(), [i for i, o in enumerate(ok) if not o]
    assert np.isinf(run.done).sum() <= 1  # at most what spot-a had in flight


def test_the_replicas_spread_again_once_the_pool_is_back(make_spec: SpecFactory) -> None:
    """After spot-a's preemption at 400 s its replica is replaced on spot-b; the pool
    is back at 700 s. Moving one replica back costs a startup and saves nothing per
    hour, so the switching gate kept both on spot-b for good, and the next
    preemption (spot-b at 1300 s) left nothing Ready for a startup. The move that
    only spreads over alike pools now goes ahead: one replica on each pool again
    before 1300 s, and every minute meets the SLO through both preemptions."""
    spec = _zones(make_spec)
    arr = np.arange(0.0, 1800.0, 1 / 30)
    cfg = SimConfig(load_balancing="round-robin", warmup_s=0.0, preroll_max_s=600.0,
                    preemption_events=((400.0, "spot-a"), (1300.0, "spot-b")))
    run = run_policy(spec, arr, "tritonscale", cfg).run
    during = next(s for s in run.steps if s.t >= 600.0)
    assert {k[1]: n for k, n in during.desired.items()} == {"spot-b": 2}
    before = next(s for s in run.steps if s.t >= 1290.0)
    assert {k[1]: n for k, n in before.ready.items()} == {"spot-a": 1, "spot-b": 1}
    _win, ok = verdicts(spec, run.arrivals, run.done)
    assert ok.all(), [i for i, o in enumerate(ok) if not o]

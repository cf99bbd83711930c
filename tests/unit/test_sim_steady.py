"""The simulator's steady-state start (pre-roll), in-flight concurrency and the
billing of terminating replicas, against hand calculations."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.engine import Key, SimConfig, Simulator, SimView

SpecFactory = Callable[..., ScaledModelSpec]
KEY = ("one", "t4-od")


def _unbatched(make_spec: SpecFactory, pools: list[dict[str, object]] | None = None
               ) -> ScaledModelSpec:
    """One variant, batch 1, no queue delay, 10 ms per request: a FIFO queue."""
    patch: dict[str, object] = {
        "variants": [{
            "name": "one", "precision": "fp16", "accuracy": 0.9,
            "profiles": [{"accelerator": "T4", "maxBatchSize": 1, "maxQueueDelayMs": 0,
                          "batches": [{"size": 1, "latencyMs": 10.0}]}],
        }],
    }
    if pools is not None:
        patch["nodePools"] = pools
    return make_spec(**patch)


class Follow:
    """One replica per 50 req/s seen over the last 30 s (at least one)."""

    name = "follow"
    interval_s = 15.0

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return {KEY: 1}

    def step(self, view: SimView) -> Mapping[Key, int]:
        return {KEY: max(1, math.ceil(view.rps(30.0) / 50.0 - 1e-9))}


def test_preroll_starts_from_the_settled_fleet(make_spec: SpecFactory) -> None:
    """100 req/s throughout. Without a pre-roll the replay starts from the initial
    single replica; the second one, asked for at 15 s, is Ready at 75 s (60-s
    startup). With one, that happens before the replay: the fleet changes at 15 s,
    is all Ready at 75 s, quiet for 120 s at 195 s: the measured replay starts there
    with 2 Ready replicas, billed from its own t = 0 only."""
    spec = _unbatched(make_spec)
    arr = np.arange(0.0, 600.0, 0.01)
    cold = Simulator(spec, arr, SimConfig(preroll_max_s=0.0)).run(Follow())
    assert cold.steps[0].desired == {KEY: 1}
    sim = Simulator(spec, arr, SimConfig(preroll_max_s=1800.0, preroll_quiet_s=120.0))
    run = sim.run(Follow())
    assert sim.t0 == 195.0
    assert run.steps[0].t == 0.0
    assert run.steps[0].desired == run.steps[0].ready == {KEY: 2}
    assert all(s.desired == {KEY: 2} for s in run.steps)
    np.testing.assert_array_equal(run.arrivals, arr)
    assert run.duration_s == pytest.approx(arr[-1], abs=1e-5)
    assert run.cost_usd == pytest.approx(2 * 0.5 * run.duration_s / 3600.0, rel=1e-9)
    lat = run.done - run.arrivals
    assert np.all(np.isfinite(lat)) and float(lat.max()) < 0.05


def test_preroll_replays_the_first_window_and_is_capped(make_spec: SpecFactory) -> None:
    """The pre-roll repeats the trace's first minute (here 30 req/s, then 300 req/s
    for the rest): a policy sized on what it saw settles at one replica. A policy
    that never settles is cut at preroll_max_s (rounded up to its interval)."""
    spec = _unbatched(make_spec)
    arr = np.concatenate((np.arange(0.0, 60.0, 1 / 30), np.arange(60.0, 300.0, 1 / 300)))
    seen: list[float] = []

    class Watch(Follow):
        def step(self, view: SimView) -> Mapping[Key, int]:
            seen.append(view.rps(30.0))
            return super().step(view)

    sim = Simulator(spec, arr, SimConfig(preroll_max_s=600.0))
    run = sim.run(Watch())
    pre = seen[: int(sim.t0 // 15)]
    assert pre and all(r == pytest.approx(30.0, rel=0.01) for r in pre)
    assert run.steps[0].desired == {KEY: 1}

    class Flap(Follow):
        def step(self, view: SimView) -> Mapping[Key, int]:
            return {KEY: 1 + int(view.now // 15) % 2}

    sim = Simulator(spec, arr, SimConfig(preroll_max_s=100.0))
    sim.run(Flap())
    assert sim.t0 == 105.0


def test_preroll_keeps_the_measured_preemptions(make_spec: SpecFactory) -> None:
    """Spot preemptions are drawn for the measured replay alone: the same events
    with or without a pre-roll."""
    spec = _unbatched(make_spec)
    arr = np.arange(0.0, 3600.0, 0.05)
    key = ("one", "t4-spot")

    class Spot(Follow):
        def initial(self, view: SimView) -> Mapping[Key, int]:
            return {key: 1}

        def step(self, view: SimView) -> Mapping[Key, int]:
            return {key: 1}

    a = Simulator(spec, arr, SimConfig(preroll_max_s=0.0, preemption_rate_per_hour=4.0,
                                       seed=3)).run(Spot())
    b = Simulator(spec, arr, SimConfig(preroll_max_s=900.0, preemption_rate_per_hour=4.0,
                                       seed=3)).run(Spot())
    assert len(a.preemptions) >= 2
    assert [p for _, p in a.preemptions] == [p for _, p in b.preemptions]
    assert [t for t, _ in a.preemptions] == pytest.approx([t for t, _ in b.preemptions])
    # Both lose the same requests to them (queued when the pool went).
    assert np.count_nonzero(np.isinf(a.done)) == np.count_nonzero(np.isinf(b.done)) > 0


class Hold:
    name = "hold"

    def __init__(self, plan: Mapping[Key, int], later: Mapping[Key, int] | None = None,
                 at: float = math.inf, interval_s: float = 10.0) -> None:
        self.plan, self.later, self.at, self.interval_s = plan, later, at, interval_s
        self.seen: list[tuple[float, float]] = []

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return self.plan

    def step(self, view: SimView) -> Mapping[Key, int]:
        self.seen.append((view.now, view.concurrency(6.0)))
        return self.later if self.later is not None and view.now >= self.at else self.plan


def test_in_flight_concurrency_counts_the_queue_littles_law(make_spec: SpecFactory) -> None:
    """Three requests at once every second on one batch-1 replica (10 ms each): they
    are in flight 10, 20 and 30 ms (two of them queued part of that time), so Knative's
    queue-proxy sees 0.06 requests in flight on average: Little's law, 3/s x 20 ms."""
    spec = _unbatched(make_spec)
    arr = np.repeat(np.arange(0.0, 120.0, 1.0), 3)
    pol = Hold({KEY: 1})
    Simulator(spec, arr, SimConfig(preroll_max_s=0.0)).run(pol)
    seen = [c for t, c in pol.seen if t >= 10.0]
    assert seen and all(c == pytest.approx(3 * 0.02, rel=1e-6) for c in seen)


def test_a_terminating_replica_is_billed_until_its_queue_is_done(make_spec: SpecFactory
                                                                   ) -> None:
    """Two replicas at 0.5 $/h (round-robin); 2,000 requests arrive at once at 119.5 s,
    1,000 for each, 10 s of work apiece (10 ms each). At 120 s the newest replica is
    removed with 9.5 s of work left: with a 5-s preStop sleep and a 30-s exit timeout
    its pod lives until 129.5 s and is billed to then; nothing is lost. With a 2.005-s
    exit timeout the kubelet kills it at 127.005 s: the 250 requests that would have
    finished after that (the k-th at 119.5 + k x 10 ms, k > 750.5) are lost."""
    spec = _unbatched(make_spec)
    arr = np.sort(np.concatenate((np.arange(0.0, 119.0, 1.0), np.full(2000, 119.5),
                                  np.arange(121.0, 600.0, 1.0))))
    end = float(arr[-1]) + 1e-6

    seen: dict[float, float] = {}

    def run(exit_timeout: float) -> tuple[float, int]:
        cfg = SimConfig(preroll_max_s=0.0, load_balancing="round-robin", drain_s=5.0,
                        exit_timeout_s=exit_timeout, client_timeout_s=None)
        sim = Simulator(spec, arr, cfg)
        pol = Hold({KEY: 2}, {KEY: 1}, at=120.0)
        r = sim.run(pol)
        seen.update(pol.seen)
        return r.cost_usd, int(np.count_nonzero(np.isinf(r.done)))

    cost, lost = run(30.0)
    assert lost == 0
    assert cost == pytest.approx(0.5 * (end + 129.5) / 3600.0, rel=1e-9)
    # KPA's view at 130 s (6-s window): the removed replica left the endpoints at
    # 120 s and is not scraped any more; the other one holds its 1,000 burst
    # requests (the k-th done at 119.5 + k x 10 ms) and, behind them, the arrivals
    # at 121..129 s (done at 129.5 + 10 ms x (a - 120)).
    a = np.concatenate((np.full(1000, 119.5), np.arange(121.0, 130.0)))
    d = np.concatenate((119.5 + 0.01 * np.arange(1, 1001), 129.5 + 0.01 * np.arange(1, 10)))
    in_flight = np.clip(np.minimum(d, 130.0) - np.maximum(a, 124.0), 0.0, None).sum() / 6.0
    assert seen[130.0] == pytest.approx(in_flight, rel=1e-6)
    cost, lost = run(2.005)
    assert lost == 250
    assert cost == pytest.approx(0.5 * (end + 127.005) / 3600.0, rel=1e-9)


def test_scale_down_removes_the_replica_ready_the_shortest_time(make_spec: SpecFactory
                                                                 ) -> None:
    """The ReplicaSet ranking: not Ready first, then Ready for less time first."""
    spec = _unbatched(make_spec)
    sim = Simulator(spec, np.arange(0.0, 10.0, 0.1), SimConfig(preroll_max_s=0.0))
    sim.apply({KEY: 2}, instant=True)  # rids 1, 2 Ready at 0
    sim.now = 5.0
    sim.apply({KEY: 4})  # rids 3, 4 Ready at 65
    sim.replicas[KEY][2].ready_at = 3.0  # rid 3 came up early (Ready since 3 s)
    sim.apply({KEY: 3})  # removes rid 4 (not Ready)
    assert [r.rid for r in sim.replicas[KEY]] == [1, 2, 3]
    sim.apply({KEY: 2})  # removes rid 3: Ready for 2 s, the others for 5 s
    assert [r.rid for r in sim.replicas[KEY]] == [1, 2]


def test_a_request_lost_to_a_preemption_was_in_flight_until_then(make_spec: SpecFactory
                                                                  ) -> None:
    """100 requests at t = 0 on one spot replica, 10 ms each, one after the other; the
    pool is preempted at 0.505 s, when 51 have started (the 51st finishes at 0.51 s).
    Over [0, 2 s] the queue-proxy saw sum(0.01 k, k = 1..51) = 13.26 request-seconds
    from the served ones and 49 x 0.505 from the lost ones: 19.0025 in flight on
    average."""
    spec = _unbatched(make_spec)
    key = ("one", "t4-spot")
    sim = Simulator(spec, np.zeros(100), SimConfig(preroll_max_s=0.0, client_timeout_s=None))
    sim.apply({key: 1}, instant=True)
    sim.preemptions = [(0.505, "t4-spot")]
    sim.run_interval(0.0, 2.0)
    sim.now = 2.0
    assert np.count_nonzero(np.isinf(sim.done)) == 49
    assert sim.concurrency(2.0) == pytest.approx((13.26 + 49 * 0.505) / 2.0, rel=1e-9)

"""Simulator yardsticks against independent calculations: random load balancing vs
the exact M/D/1 queue, client timeouts vs a hand-built trace, weighted routing,
and the operator-like observation (per-placement latency)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from tritonscale.cli import main
from tritonscale.core.batcher import serve
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.engine import Key, SimConfig, Simulator, SimView
from tritonscale.sim.report import summarize

SpecFactory = Callable[..., ScaledModelSpec]

D_MS = 10.0  # deterministic service time of the batch-1 model


def _unbatched(make_spec: SpecFactory, latency_ms: float = D_MS) -> ScaledModelSpec:
    """One variant, batch size 1 and no queue delay: each replica is an M/D/1 queue."""
    return make_spec(
        variants=[
            {
                "name": "one",
                "precision": "fp16",
                "accuracy": 0.9,
                "profiles": [
                    {"accelerator": "T4", "maxBatchSize": 1, "maxQueueDelayMs": 0,
                     "batches": [{"size": 1, "latencyMs": latency_ms}]},
                ],
            }
        ]
    )


class Fixed:
    name = "fixed"
    interval_s = 30.0

    def __init__(self, plan: Mapping[Key, int],
                 weights: Mapping[Key, float] | None = None) -> None:
        self.plan = plan
        if weights is not None:
            self.route_weights = dict(weights)

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return self.plan

    def step(self, view: SimView) -> Mapping[Key, int]:
        return self.plan


def _poisson(rate: float, seconds: float, seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds)))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_random_split_gives_each_replica_an_md1_queue(make_spec: SpecFactory,
                                                      rho: float) -> None:
    """Poisson arrivals split at random over 4 replicas: each replica is M/D/1 at
    rate lambda/4, whose mean wait is rho*D / (2*(1 - rho)) (Pollaczek-Khinchine).
    Round-robin hands each replica every 4th arrival (Erlang-4 gaps) and waits far
    less: the flattering split the simulator used to assume."""
    spec = _unbatched(make_spec)
    key = ("one", "t4-od")
    n = 4
    lam = rho * n * 1000.0 / D_MS
    arr = _poisson(lam, 240.0)
    expected_wait_ms = rho * D_MS / (2.0 * (1.0 - rho))

    def mean_wait(lb: str) -> float:
        run = Simulator(spec, arr, SimConfig(load_balancing=lb, client_timeout_s=None)).run(
            Fixed({key: n})
        )
        lat = (run.done - run.arrivals) * 1000.0
        assert np.isfinite(lat).all()
        return float(np.mean(lat[len(lat) // 10 :])) - D_MS

    assert mean_wait("random") == pytest.approx(expected_wait_ms, rel=0.08)
    assert mean_wait("round-robin") < 0.6 * expected_wait_ms


def test_random_split_is_seeded(make_spec: SpecFactory) -> None:
    spec = _unbatched(make_spec)
    arr = _poisson(300.0, 30.0)
    key = ("one", "t4-od")
    a = Simulator(spec, arr, SimConfig(seed=1)).run(Fixed({key: 3}))
    b = Simulator(spec, arr, SimConfig(seed=1)).run(Fixed({key: 3}))
    c = Simulator(spec, arr, SimConfig(seed=2)).run(Fixed({key: 3}))
    assert np.array_equal(a.done, b.done)
    assert not np.array_equal(a.done, c.done)


def test_timeout_against_a_hand_built_trace() -> None:
    """Ten requests at t=0 on an unbatched 1-s instance, a queue policy times them
    out at 3.5 s ("rejected"): the first four start at 0, 1, 2, 3 s; the fifth could
    start at 4 s > 3.5 s, so it and every later one is rejected at 3.5 s and never
    uses the instance."""
    svc = [0.0, 1.0]
    r = serve([0.0] * 10, 0.0, 1, 0.0, svc, 100.0, timeout=3.5, abandoned="rejected")
    assert r.starts == [0.0, 1.0, 2.0, 3.0]
    assert r.dones == [1.0, 2.0, 3.0, 4.0]
    assert r.abandoned == [4, 5, 6, 7, 8, 9] and r.left == 10
    assert r.busy_s == pytest.approx(4.0)
    # Abandonment happens when patience runs out, not earlier: with the segment
    # ending at 3.2 s nobody has given up yet.
    early = serve([0.0] * 10, 0.0, 1, 0.0, svc, 3.2, timeout=3.5, abandoned="rejected")
    assert early.abandoned == [] and early.left == 4
    # Later arrivals that still have patience are served after the abandoned ones.
    mixed = serve([0.0, 0.0, 0.0, 2.5], 0.0, 1, 0.0, svc, 100.0, timeout=1.5,
                  abandoned="rejected")
    assert mixed.abandoned == [2] and mixed.starts == [0.0, 1.0, 2.5]
    assert r.dropped == r.abandoned and mixed.dropped == [2]


def test_abandoned_computed_against_a_hand_traced_timeline() -> None:
    """Max batch 2, no queue delay, S = 1 s for 1 or 2 requests, clients wait 0.5 s.
    Four requests at 0 and one at 1.8.  The first two run 0-1 in any case; the
    next two could start at 1, after 1 s > 0.5 s, so their clients have gone.
    rejected (queue policy): they leave the queue unserved; the arrival at 1.8
           starts at 1.8 (the instance is free), done at 2.8.
    computed (HTTP): they still run 1-2 as a full batch, only their answer is
           thrown away; the arrival at 1.8 waits 0.2 s for them and runs 2-3."""
    arrivals = [0.0, 0.0, 0.0, 0.0, 1.8]
    svc = [0.0, 1.0, 1.0]
    gone = serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5, abandoned="rejected")
    assert gone.abandoned == [2, 3] and gone.dropped == [2, 3]
    assert gone.starts == [0.0, 1.8] and gone.sizes == [2, 1] and gone.dones == [1.0, 2.8]
    assert gone.busy_s == pytest.approx(2.0) and gone.left == 5
    run = serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5, abandoned="computed")
    assert run.abandoned == [2, 3] and run.dropped == []
    assert run.starts == [0.0, 1.0, 2.0] and run.sizes == [2, 2, 1]
    assert run.dones == [1.0, 2.0, 3.0]
    assert run.busy_s == pytest.approx(3.0) and run.left == 5
    # Cut into segments (as the simulator does), the timeline is the same.
    first = serve(arrivals, 0.0, 2, 0.0, svc, 1.5, timeout=0.5, abandoned="computed")
    rest = serve(arrivals[first.left :], first.t_free, 2, 0.0, svc, 100.0, timeout=0.5,
                 abandoned="computed")
    assert first.abandoned == [2, 3] and rest.abandoned == []
    assert first.starts + rest.starts == run.starts
    with pytest.raises(ValueError, match="abandoned"):
        serve(arrivals, 0.0, 2, 0.0, svc, 100.0, abandoned="dropped")  # type: ignore[arg-type]


def test_abandoned_cancelled_against_a_hand_traced_timeline() -> None:
    """gRPC ("cancelled", as measured by tests/real/test_abandoned_real.py): a
    cancelled request leaves the queue unless the batcher had already taken it
    into the batch it prepares while the instance computes. Max batch 2, no queue
    delay, S = 1 s, clients wait 0.5 s; six requests at 0 and one at 1.8.
    cancelled: 0,1 run 0-1; when they start, the batcher takes 2,3 into the next
               batch: it runs 1-2, computed for clients gone at 0.5; 4,5 are taken
               when that batch starts, at 1 (waited 1 s > 0.5): dropped unserved;
               the arrival at 1.8 is taken at once (the batch running since 1),
               runs 2-3.
    rejected:  2-5 leave the queue unserved; 1.8 runs 1.8-2.8.
    computed:  0-5 run 0-1, 1-2, 2-3 (2-5 for gone clients); 1.8 runs 3-4, 1.2 s
               after it arrived: its client has gone too."""
    arrivals = [0.0] * 6 + [1.8]
    svc = [0.0, 1.0, 1.0]
    grpc = serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5, abandoned="cancelled")
    assert grpc.starts == [0.0, 1.0, 2.0] and grpc.sizes == [2, 2, 1]
    assert grpc.abandoned == [2, 3, 4, 5] and grpc.dropped == [4, 5]
    assert grpc.busy_s == pytest.approx(3.0) and grpc.left == 7
    policy = serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5, abandoned="rejected")
    assert policy.starts == [0.0, 1.8] and policy.sizes == [2, 1]
    assert policy.abandoned == policy.dropped == [2, 3, 4, 5]
    http = serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5, abandoned="computed")
    assert http.starts == [0.0, 1.0, 2.0, 3.0] and http.sizes == [2, 2, 2, 1]
    assert http.abandoned == [2, 3, 4, 5, 6] and http.dropped == []
    # The default is gRPC's, and cut into segments (as the simulator does) the
    # timeline is the same.
    assert serve(arrivals, 0.0, 2, 0.0, svc, 100.0, timeout=0.5) == grpc
    first = serve(arrivals, 0.0, 2, 0.0, svc, 1.5, timeout=0.5)
    rest = serve(arrivals[first.left :], first.t_free, 2, 0.0, svc, 100.0, timeout=0.5,
                 last_svc=first.last_svc)
    assert first.starts + rest.starts == grpc.starts
    assert first.abandoned + [first.left + k for k in rest.abandoned] == grpc.abandoned


def _fifo_with_patience(arr: np.ndarray, service_s: float, patience_s: float,
                        mode: str) -> tuple[np.ndarray, np.ndarray]:
    """One unbatched instance, first come first served, written out request by
    request: (completion time, inf if timed out; timed out). rejected: a request
    not started within its patience is never computed; cancelled: nor is one not
    taken (when the request before it started) within its patience; computed:
    every one is."""
    done = np.full(len(arr), np.inf)
    timed_out = np.zeros(len(arr), dtype=bool)
    free = 0.0
    prev_start = 0.0
    for k, a in enumerate(arr):
        start = max(a, free)
        taken = max(a, prev_start) if free > a else a
        if start - a > patience_s:
            timed_out[k] = True
            if mode == "rejected" or (mode == "cancelled" and taken - a > patience_s):
                continue
        prev_start = start
        free = start + service_s
        if not timed_out[k]:
            done[k] = free
    return done, timed_out


def test_abandoned_computed_on_an_overloaded_replica(make_spec: SpecFactory) -> None:
    """One 10-ms unbatched replica, clients wait 1 s.  A 10-s burst at 150 req/s
    (1.5x what it serves), then 20 s at 50 req/s.  Both modes against the same queue
    written out request by request.  cancelled: the queue wait never exceeds the
    patience, the extra third times out.  computed: nothing leaves the queue, the
    wait grows by 0.5 s every second of the burst and drains at 0.5 s/s after it, so
    every request from ~2 s into the burst until ~8 s after it times out, and the
    few served in between wait longer."""
    spec = _unbatched(make_spec)
    rng = np.random.default_rng(5)
    burst = np.cumsum(rng.exponential(1.0 / 150.0, 1500))
    burst = burst[burst < 10.0]
    calm = 10.0 + np.cumsum(rng.exponential(1.0 / 50.0, 1000))
    arr = np.concatenate((burst, calm[calm < 30.0]))
    runs = {}
    for mode in ("rejected", "cancelled", "computed"):
        run = Simulator(spec, arr, SimConfig(client_timeout_s=1.0, abandoned=mode)).run(
            Fixed({("one", "t4-od"): 1})
        )
        want_done, want_to = _fifo_with_patience(arr, D_MS / 1000.0, 1.0, mode)
        assert np.array_equal(run.timed_out, want_to)
        assert np.allclose(run.done, want_done, rtol=0.0, atol=1e-9)
        s = summarize(spec, run, "fixed")
        assert s["timed_out"] == int(want_to.sum()) and s["dropped"] == 0
        runs[mode] = run
    gone, kept = runs["rejected"], runs["computed"]
    # gRPC: one more request per busy instance is computed for a gone client, so
    # served requests are never faster than with the queue policy.
    grpc = runs["cancelled"]
    assert grpc.timed_out.sum() >= gone.timed_out.sum()
    assert 250 < gone.timed_out.sum() < 700
    assert kept.timed_out.sum() > 2 * gone.timed_out.sum()
    # Requests served in both modes are never faster with "computed" (more work is
    # ahead of them), and those served while its backlog drains are far slower.
    both = ~gone.timed_out & ~kept.timed_out
    slower = kept.done[both] - gone.done[both]
    assert slower.min() >= -1e-9 and slower.max() > 0.5
    # A request timed out while still queued is no longer waited for by its client:
    # KPA's in-flight concurrency is the same in both modes up to the end of the
    # burst (the clients are the same); Triton's pending count still holds it.
    seen: dict[str, tuple[float, float]] = {}
    for mode in ("rejected", "computed"):
        sim = Simulator(spec, arr, SimConfig(client_timeout_s=1.0, abandoned=mode))
        probe = _Probe({("one", "t4-od"): 1}, at=9.0)
        sim.run(probe)
        seen[mode] = probe.seen
    conc_gone, pend_gone = seen["rejected"]
    conc_kept, pend_kept = seen["computed"]
    assert conc_kept == pytest.approx(conc_gone, rel=0.05)
    # rejected: only the last second's arrivals (~150) can still be queued;
    # computed: the burst's whole backlog (0.5 s of work per second, ~450 requests).
    assert pend_gone < 160 and pend_kept > 300


def test_abandoned_computed_when_a_spot_replica_is_preempted(
    make_spec: SpecFactory,
) -> None:
    """A 1-s unbatched model (one spot replica), clients wait 2.5 s: ten requests at
    0, one at 4.0, the pool preempted at 4.5 (and an arrival at 20 with no replica,
    dropped in both modes).
    rejected:  0-2 run 0-3; 3-9 would start at 3 > 2.5 and leave; the one at 4.0
           starts at once, 4-5, a batch already running when the pod dies: served.
    computed:  0-2 run 0-3; 3 and 4 run 3-4 and 4-5, timed out all the same; at 4.5
           5-9 are still queued but their clients left at 2.5: timed out, not
           dropped; the one at 4.0 is still queued (its client waits until 6.5):
           lost with the pod, dropped."""
    spec = _unbatched(make_spec, latency_ms=1000.0)
    arr = np.array([0.0] * 10 + [4.0, 20.0])
    out = {}
    for mode in ("rejected", "computed"):
        sim = Simulator(spec, arr, SimConfig(client_timeout_s=2.5, abandoned=mode))
        sim.preemptions = [(4.5, "t4-spot")]
        run = sim.run(Fixed({("one", "t4-spot"): 1}))
        served = np.isfinite(run.done)
        dropped = ~served & ~run.timed_out
        out[mode] = (np.flatnonzero(served).tolist(), np.flatnonzero(run.timed_out).tolist(),
                     np.flatnonzero(dropped).tolist())
        if mode == "computed":
            # Triton computed 3 and 4 (the pod's GPU time), not 5-9.
            assert sim.gpu_done[[3, 4]].tolist() == [4.0, 5.0]
            assert np.isnan(sim.gpu_done[5:10]).all()
    assert out["rejected"] == ([0, 1, 2, 10], [3, 4, 5, 6, 7, 8, 9], [11])
    assert out["computed"] == ([0, 1, 2], [3, 4, 5, 6, 7, 8, 9], [10, 11])


class _Probe(Fixed):
    """Fixed, recording (5-s concurrency, pending) at the first step at/after ``at``."""

    interval_s = 1.0

    def __init__(self, plan: Mapping[Key, int], at: float) -> None:
        super().__init__(plan)
        self.at = at
        self.seen = (math.nan, math.nan)

    def step(self, view: SimView) -> Mapping[Key, int]:
        if view.now >= self.at and math.isnan(self.seen[0]):
            sim = view
            assert isinstance(sim, Simulator)
            self.seen = (sim.concurrency(5.0), sim.pending())
        return self.plan


def test_timed_out_requests_are_reported_apart_from_dropped(make_spec: SpecFactory) -> None:
    """An overloaded replica (200 req/s offered, 100 req/s served) for 20 s with 2-s
    patience.  The arrival at t waits t s (100 req/s of backlog, 10 ms each) until
    the wait reaches 2 s at t = 2; from then on the instance serves 100 req/s and the
    other 100 req/s time out: with a queue policy ("rejected") 18 s x 100 = 1,800
    timed out, none dropped, and no served request waited more than 2 s.  With gRPC
    clients alone (the default) the instance computes 100 req/s as well, but from
    t = 2 on each request is taken into the next batch just before its client
    gives up and computed 10 ms after: all but the first 2 s's ~400 time out (on
    the real Triton, tests/real/test_abandoned_real.py: 148 of 179 computed)."""
    spec = _unbatched(make_spec)
    arr = np.arange(0.0, 20.0, 0.005)
    grpc = summarize(spec, Simulator(spec, arr, SimConfig(client_timeout_s=2.0)).run(
        Fixed({("one", "t4-od"): 1})), "fixed")
    assert grpc["dropped"] == 0 and 3550 <= grpc["timed_out"] <= 3610
    run = Simulator(spec, arr, SimConfig(client_timeout_s=2.0, abandoned="rejected")).run(
        Fixed({("one", "t4-od"): 1})
    )
    s = summarize(spec, run, "fixed")
    assert s["dropped"] == 0
    assert s["timed_out"] == pytest.approx(1800, abs=5)
    lat = (run.done - run.arrivals)[~run.timed_out]
    assert np.isfinite(lat).all() and lat.max() <= 2.0 + D_MS / 1000.0 + 1e-9
    # Without a timeout the same overload serves everything, with tails of ~10 s.
    patient = Simulator(spec, arr, SimConfig(client_timeout_s=None)).run(
        Fixed({("one", "t4-od"): 1})
    )
    assert not patient.timed_out.any()
    assert float(np.max(patient.done - patient.arrivals)) > 9.0


def test_weighted_split_follows_the_policys_weights(make_spec: SpecFactory) -> None:
    """Weights 3:1 over two placements (one replica each): 75 % / 25 % of requests;
    a weight for a placement with no Ready replica is ignored."""
    spec = _unbatched(make_spec)
    arr = _poisson(40.0, 300.0)
    a, b = ("one", "t4-od"), ("one", "t4-spot")
    sim = Simulator(spec, arr, SimConfig(load_balancing="weighted"))
    sim.run(Fixed({a: 1, b: 1}, weights={a: 3.0, b: 1.0, ("one", "a100-od"): 50.0}))
    share = np.bincount(sim.where, minlength=2) / len(arr)
    assert share[sim.keys.index(a)] == pytest.approx(0.75, abs=0.01)
    assert share[sim.keys.index(b)] == pytest.approx(0.25, abs=0.01)
    # Without weights the weighted mode is the Service's even random split.
    even = Simulator(spec, arr, SimConfig(load_balancing="weighted"))
    even.run(Fixed({a: 1, b: 1}))
    assert np.bincount(even.where)[0] / len(arr) == pytest.approx(0.5, abs=0.01)


def test_config_rejects_unknown_balancing_and_bad_timeout() -> None:
    with pytest.raises(ValueError, match="load_balancing"):
        SimConfig(load_balancing="least-conn")
    with pytest.raises(ValueError, match="client_timeout_s"):
        SimConfig(client_timeout_s=0.0)
    with pytest.raises(ValueError, match="abandoned"):
        SimConfig(abandoned="dropped")  # type: ignore[arg-type]


def test_observation_carries_per_placement_signals(make_spec: SpecFactory) -> None:
    """The policy sees what the operator's signal sources report: per (variant,
    pool) rate and latency percentile, pending requests and queue time."""
    spec = _unbatched(make_spec)
    arr = _poisson(150.0, 120.0)
    a, b = ("one", "t4-od"), ("one", "t4-spot")
    seen = []

    class Probe(Fixed):
        def step(self, view: SimView) -> Mapping[Key, int]:
            seen.append(view.observe(99.0))
            return self.plan

    Simulator(spec, arr, SimConfig()).run(Probe({a: 1, b: 2}))
    obs = seen[-1]
    assert set(obs.per_placement_rps) == {a, b}
    assert obs.per_placement_rps[a] == pytest.approx(50.0, rel=0.2)
    assert obs.per_placement_rps[b] == pytest.approx(100.0, rel=0.2)
    # Each replica runs at rho = 0.5: M/D/1 p99 is a few service times.
    for k in (a, b):
        assert D_MS < obs.per_placement_latency_ms[k] < 10 * D_MS
    assert obs.latency_ms is not None and obs.rps == pytest.approx(150.0, rel=0.15)
    assert obs.pending is not None and 0 <= obs.pending < 30
    assert obs.queue_ms is not None and 0 < obs.queue_ms < 3 * D_MS
    assert {p.key for p in obs.current} == {a, b}


def test_cli_flags_and_json_timed_out(tmp_path: object,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    trace = Path(str(tmp_path)) / "t.csv"
    t = _poisson(300.0, 120.0)
    trace.write_text("timestamp_s\n" + "\n".join(f"{x:.6f}" for x in t) + "\n")
    args = ["simulate", "--spec", str(root / "examples/resnet50.yaml"), "--trace", str(trace),
            "--rate-scale", "1", "--policy", "static-peak", "--json"]
    assert main([*args, "--load-balancing", "round-robin", "--client-timeout", "5"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["timed_out"] == 0 and row["dropped"] == 0
    assert main([*args, "--client-timeout", "-1"]) == 2
    assert "--client-timeout" in capsys.readouterr().err
    assert main([*args, "--abandoned", "computed", "--client-timeout", "5"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["timed_out"] == 0 and row["dropped"] == 0
    with pytest.raises(SystemExit):
        main([*args, "--abandoned", "dropped"])
    assert "--abandoned" in capsys.readouterr().err


def test_abandoned_does_not_change_a_cascade(tmp_path: object,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A cascade's router drops a gone client's request itself and the tiers compute
    what it handed them, whatever the client's protocol: ``--abandoned computed``
    replays it exactly as ``cancelled`` (it used to crash on the router's arrays),
    here at 2,000 req/s with clients patient for 50 ms only, so some do time out."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    trace = Path(str(tmp_path)) / "t.csv"
    t = _poisson(400.0, 90.0)
    trace.write_text("timestamp_s\n" + "\n".join(f"{x:.6f}" for x in t) + "\n")
    args = ["simulate", "--spec", str(root / "examples/bert-cascade.yaml"), "--trace",
            str(trace), "--rate-scale", "5", "--policy", "tritonscale", "--json",
            "--client-timeout", "0.05", "--preroll", "0"]
    rows = []
    for mode in ("cancelled", "computed"):
        assert main([*args, "--abandoned", mode]) == 0
        row = json.loads(capsys.readouterr().out.splitlines()[-1])
        row.pop("sim_seconds")  # wall-clock time of the replay
        rows.append(row)
    assert rows[0]["timed_out"] > 0
    assert rows[0] == rows[1]


def test_scale_down_removes_the_newest_ready_replica(make_spec: SpecFactory) -> None:
    spec = _unbatched(make_spec)
    key = ("one", "t4-od")
    sim = Simulator(spec, np.arange(0.0, 10.0, 0.1), SimConfig())
    sim.apply({key: 3}, instant=True)
    sim.now = 5.0
    sim.apply({key: 4})  # a fourth, not Ready until 65 s
    sim.apply({key: 2})  # removes the starting one, then the newest Ready one
    assert [r.rid for r in sim.replicas[key]] == [1, 2]


def test_removed_replicas_stay_billed_for_their_termination(make_spec: SpecFactory) -> None:
    """Two replicas at 0.5 $/h, one removed at 120 s of a 600-s replay: billed
    2 x 120 s + 1 x 480 s + the removed pod's 10-s preStop drain (its queue is empty
    under 10 req/s of 10-ms requests, so Triton exits at once)."""
    spec = _unbatched(make_spec)
    key = ("one", "t4-od")
    arr = np.arange(0.0, 600.0, 0.1)

    class Shrink(Fixed):
        interval_s = 15.0

        def step(self, view: SimView) -> Mapping[Key, int]:
            return {key: 2 if view.now < 120.0 else 1}

    run = Simulator(spec, arr, SimConfig(drain_s=10.0)).run(Shrink({key: 2}))
    end = arr[-1] + 1e-6
    expected = 0.5 * (2 * 120.0 + (end - 120.0) + 10.0) / 3600.0
    assert run.cost_usd == pytest.approx(expected, rel=1e-6)
    assert [s.cost_per_hour for s in run.steps if s.t == 120.0] == [pytest.approx(1.0)]


def test_kpa_concurrency_is_littles_law_in_flight(make_spec: SpecFactory) -> None:
    """Requests every 100 ms taking 10 ms: 0.1 in flight on average (Little's law).
    While no replica is Ready requests are refused at once and add nothing."""
    spec = _unbatched(make_spec)
    key = ("one", "t4-od")
    arr = np.arange(0.0, 200.0, 0.1)
    seen: list[tuple[float, float]] = []

    class Probe(Fixed):
        interval_s = 10.0

        def step(self, view: SimView) -> Mapping[Key, int]:
            seen.append((view.now, view.concurrency(6.0)))
            return self.plan

    # Not warm: the replica is Ready only after the pool's 60-s startup.
    Simulator(spec, arr, SimConfig(warm_start=False)).run(Probe({key: 1}))
    early = [c for t, c in seen if t <= 60.0]
    late = [c for t, c in seen if t >= 80.0]
    assert early and all(c == 0.0 for c in early)
    assert late and all(c == pytest.approx(0.1, rel=0.02) for c in late)


def test_static_peak_honours_the_baseline_override(resnet: ScaledModelSpec) -> None:
    from tritonscale.sim.report import make_policy

    p = make_policy("static-peak", resnet, np.arange(0.0, 60.0, 0.01), None, "int8", "l4-spot")
    assert p.initial(None) == {("int8", "l4-spot"): 1}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("growth", "sizes", "dones"),
    [
        # Triton's code comment: the prepared batch grows until the instance frees.
        (1.0, [4, 4, 1], [2.8, 5.3, 6.3]),
        # Measured Triton 2.51: it stops growing half-way through the running batch.
        (0.5, [4, 3, 2], [2.8, 4.8, 6.3]),
        # No growth: it closes when its own delay expires.
        (0.0, [4, 2, 3], [2.8, 4.3, 6.3]),
    ],
)
def test_prefetch_against_a_hand_traced_timeline(
    growth: float, sizes: list[int], dones: list[float]
) -> None:
    """Max batch 4, queue delay 0.5 s, S = 1, 1.5, 2, 2.5 s for 1..4 requests.

    Batch 1: four requests by 0.3 s, full, runs 0.3-2.8.  The next batch opens with
    the arrival at 1.0 while batch 1 runs; its delay expires at 1.5.
    g = 1: it takes everything queued at 2.8 (1.0, 1.2, 1.52, 2.0: full), 2.8-5.3;
           2.2 alone, 5.3-6.3.
    g = 0.5: it stops growing at 0.3 + 0.5 x 2.5 = 1.55 (1.0, 1.2, 1.52), 2.8-4.8;
           the next one formed during it stops at 2.8 + 0.5 x 2 = 3.8 (2.0, 2.2),
           4.8-6.3.
    g = 0: it closes at its delay, 1.5 (1.0, 1.2), 2.8-4.3; then 1.52, 2.0, 2.2
           (closed at 2.8 when that one started), 4.3-6.3."""
    arrivals = [0.0, 0.1, 0.2, 0.3, 1.0, 1.2, 1.52, 2.0, 2.2]
    svc = [0.0, 1.0, 1.5, 2.0, 2.5]
    r = serve(arrivals, 0.0, 4, 0.5, svc, 100.0, growth=growth)
    assert r.sizes == sizes
    assert r.dones == pytest.approx(dones)
    assert r.left == len(arrivals)
    # Cut into segments (as the simulator does), the timeline is the same.
    first = serve(arrivals, 0.0, 4, 0.5, svc, 2.9, growth=growth)
    rest = serve(arrivals[first.left :], first.t_free, 4, 0.5, svc, 100.0,
                 growth=growth, last_svc=first.last_svc)
    assert first.sizes + rest.sizes == sizes


def test_warmup_minutes_are_reported_apart(make_spec: SpecFactory) -> None:
    """Ten minutes at 1 req/s, the first 100 s at 1 s latency (SLO: p99 <= 40 ms):
    minutes 0 and 1 miss.  With a 120-s warm-up they are the warm-up's (0 of 2 met)
    and all 8 later minutes meet; without one, 8 of 10."""
    from tritonscale.sim.engine import SimRun

    spec = make_spec()
    arr = np.arange(0.0, 600.0, 1.0)
    done = arr + np.where(arr < 100.0, 1.0, 0.001)
    run = SimRun(arr, done, np.zeros(len(arr), dtype=bool), 0.0, 600.0, [], [])
    s = summarize(spec, run, "x", 60.0, warmup_s=120.0)
    assert (s["warmup_windows"], s["warmup_windows_met"], s["windows_met"]) == (2, 0.0, 1.0)
    s0 = summarize(spec, run, "x", 60.0, warmup_s=0.0)
    assert (s0["warmup_windows"], s0["windows_met"]) == (0, 0.8)


def test_oracle_is_sized_on_the_simulator(make_spec: SpecFactory) -> None:
    """A load stepping 300 -> 2,400 -> 600 req/s: the oracle (zero startup) meets
    the SLO in every minute, each interval's plan replays within the SLO on its own,
    and the plan for 60 % of that load does not; foresight,
    paying the 60-120 s startups, costs at least as much and also meets it."""
    from tritonscale.sim.policies import OraclePolicy
    from tritonscale.sim.report import run_policy

    spec = make_spec()
    parts = [_poisson(r, 120.0, seed=i) + 120.0 * i for i, r in enumerate((300, 2400, 600))]
    arr = np.concatenate(parts)
    cfg = SimConfig(warmup_s=0.0)
    oracle = run_policy(spec, arr, "oracle", cfg).summary
    foresight = run_policy(spec, arr, "foresight", cfg).summary
    for s in (oracle, foresight):
        assert s["windows_met"] >= 0.99, s
        assert s["dropped"] == 0 and s["timed_out"] == 0
    assert foresight["cost_usd"] >= oracle["cost_usd"] > 0
    pol = OraclePolicy(spec, arr, cfg)
    k = 10  # 150-165 s: the 2,400 req/s step
    plan = pol.window_plan(k, frozenset())
    lo, hi = np.searchsorted(arr, [150.0, 165.0])
    assert pol._meets(plan, int(lo), int(hi), 150.0)
    # The bisection's lowest margin gives a smaller plan that the replay rejects.
    smallest = pol._plan((hi - lo) / 15.0 * 0.6, frozenset())
    assert sum(smallest.values()) < sum(plan.values())
    assert not pol._meets(smallest, int(lo), int(hi), 150.0)


def test_foresight_orders_each_pool_its_own_startup_ahead(make_spec: SpecFactory) -> None:
    """Foresight holds, per (variant, pool), the most any interval needs from now to
    that pool's own startup ahead (t4-spot 60 s = 4 intervals, a100-od 120 s = 8), and
    nothing for intervals after the last arrival. Hand-traced on a fixed schedule of
    interval plans: a100 x1 in intervals 0-5 and 10-13, t4-spot x3 in 6-9, and
    (past the last arrival, 205 s: interval 13) t4-od x4.

    - now 0: t4-spot's need at interval 6 is 6 > 4 intervals ahead: not yet (it was
      ordered with the slowest pool's 8 intervals, billed 60 s before it could serve);
      a100 x1.
    - now 30 (interval 2): interval 6 is 4 ahead: t4-spot x3 ordered, Ready at 90 s.
    - now 150 (interval 10): intervals 10-14 need no t4-spot; t4-od's interval 14 is
      after the trace (its rate 0 planned minReplicas on the cheapest pool, which
      joined a fleet serving 10k requests/s on the bundled fleet: two minutes lost)."""
    from tritonscale.sim.policies import OraclePolicy

    spec = make_spec()
    a100, t4, t4od = ("big", "a100-od"), ("big", "t4-spot"), ("small", "t4-od")

    class Schedule(OraclePolicy):
        def window_plan(self, k: int, unavailable: frozenset[str]) -> dict[Key, int]:
            if k > 13:
                return {t4od: 4}
            return {t4: 3} if 6 <= k <= 9 else {a100: 1}

    arr = np.arange(0.0, 206.0, 1.0)
    pol = Schedule(spec, arr, SimConfig(), lookahead_s=120.0, name="foresight")
    assert (pol.lead("t4-spot"), pol.lead("a100-od")) == (4, 8)
    assert pol._target(0.0, frozenset()) == {a100: 1}
    assert pol._target(30.0, frozenset()) == {a100: 1, t4: 3}
    assert pol._target(90.0, frozenset()) == {a100: 1, t4: 3}
    assert pol._target(150.0, frozenset()) == {a100: 1}
    # The oracle (no look-ahead) holds each interval's own plan.
    oracle = Schedule(spec, arr, SimConfig())
    assert oracle._target(90.0, frozenset()) == {t4: 3}


def test_foresight_moves_off_its_pairs_only_when_the_move_pays(make_spec: SpecFactory) -> None:
    """Foresight pays startups, so it follows the oracle's plan onto new pairs only
    where the move pays for them. Oracle plans (fixed here): 2 x t4-spot ($0.40/h),
    except 1 x t4-od ($0.50/h) in interval 4 and from interval 10 on. On t4-spot
    alone the replay needs 3 in interval 4 ($0.60/h) and 4 from 10 on ($0.80/h).
    One t4-od replica's 60-s startup costs 0.5 x 60 / 3600 = $0.00833.

    - interval 4: the move saves $0.10/h for 1 interval (the oracle is back on
      t4-spot in 5): $0.00042 < $0.00833, so 3 x t4-spot;
    - interval 10: it saves $0.30/h for the 20 intervals of the 300-s stabilisation
      window: $0.025 > $0.00833, so 1 x t4-od.
    The oracle (no startups) takes every cheaper plan."""
    from tritonscale.sim.policies import OraclePolicy

    spec = make_spec()
    a, b = ("big", "t4-spot"), ("big", "t4-od")

    class Plans(OraclePolicy):
        def _cheapest(self, k: int, unavailable: frozenset[str]) -> dict[Key, int]:
            return {b: 1} if k == 4 or k >= 10 else {a: 2}

        def _sized_plan(self, k: int, unavailable: frozenset[str],
                        keys: frozenset[Key] | None = None) -> dict[Key, int] | None:
            assert keys == frozenset({a})
            return {a: 3} if k == 4 else {a: 4}

    arr = np.arange(0.0, 600.0, 1.0)
    fore = Plans(spec, arr, SimConfig(), lookahead_s=120.0, name="foresight")
    assert [fore.window_plan(k, frozenset()) for k in (3, 4, 5, 9, 10, 11)] == [
        {a: 2}, {a: 3}, {a: 2}, {a: 2}, {b: 1}, {b: 1}]
    oracle = Plans(spec, arr, SimConfig())
    assert oracle.window_plan(4, frozenset()) == {b: 1}


def test_foresight_keeps_ready_replicas_until_what_it_needs_now_is_ready(
    make_spec: SpecFactory,
) -> None:
    """Plans: 2 x t4-spot in intervals 0-9, 1 x t4-od from 10 on (leads: 4 intervals).

    - now 90 (interval 6): t4-od's need at 10 is ordered; what interval 6 needs,
      2 x t4-spot, is Ready: nothing held beyond the target.
    - now 150 (interval 10), t4-od not Ready (it could not be ordered ahead: its pool
      came back from an outage, say): the 2 Ready t4-spot stay until it is.
    - once it is Ready they go. The oracle (no startups) never holds."""
    from tritonscale.core.types import PlacementState
    from tritonscale.sim.policies import OraclePolicy

    spec = make_spec()
    a, b = ("big", "t4-spot"), ("big", "t4-od")

    class Plans(OraclePolicy):
        def window_plan(self, k: int, unavailable: frozenset[str]) -> dict[Key, int]:
            return {a: 2} if k < 10 else {b: 1}

    class View:
        def __init__(self, now: float, *states: PlacementState) -> None:
            self.now, self.states = now, states

        def current(self) -> tuple[PlacementState, ...]:
            return self.states

        def unavailable_pools(self) -> frozenset[str]:
            return frozenset()

        def noticed_pools(self) -> dict[str, str]:
            return {}

    arr = np.arange(0.0, 600.0, 1.0)
    fore = Plans(spec, arr, SimConfig(), lookahead_s=120.0, name="foresight")
    t4_ready = PlacementState("big", "t4-spot", 2, 2)
    assert fore.step(View(90.0, t4_ready)) == {a: 2, b: 1}  # type: ignore[arg-type]
    late = PlacementState("big", "t4-od", 1, 0)
    assert fore.step(View(150.0, t4_ready, late)) == {a: 2, b: 1}  # type: ignore[arg-type]
    ready = PlacementState("big", "t4-od", 1, 1)
    assert fore.step(View(165.0, t4_ready, ready)) == {b: 1}  # type: ignore[arg-type]
    oracle = Plans(spec, arr, SimConfig())
    assert oracle.step(View(150.0, t4_ready, late)) == {b: 1}  # type: ignore[arg-type]

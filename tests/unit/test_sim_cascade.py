"""The cascade simulator: per-request escalation, both tiers' queues, end-to-end latency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.harness.fakes import load_example

from tritonscale.core.spec import parse_manifest
from tritonscale.sim.cascade import (
    CascadePolicy,
    CascadeRun,
    CascadeSimulator,
    _peak_in_flight,
    fallback_accuracy,
    run_cascade,
)
from tritonscale.sim.engine import SimConfig
from tritonscale.sim.report import run_policy


def _spec(**slo: Any) -> Any:
    doc = load_example("bert-cascade.yaml")
    doc["spec"]["slo"].update(slo)
    doc["spec"]["scaling"]["intervalSeconds"] = 15
    return parse_manifest(doc)[2]


def _poisson(rps: float, seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rps, int(rps * seconds * 1.1)))
    return t[t < seconds]


def _run(spec: Any, arr: np.ndarray, drift: float = 1.0
         ) -> tuple[CascadeSimulator, CascadeRun]:
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5), drift)
    return sim, sim.run(CascadePolicy(spec, float(len(arr[arr < 60]) / 60)))


def test_escalation_is_per_request_seeded_and_matches_the_curve() -> None:
    spec = _spec()
    arr = _poisson(600.0, 150.0)
    sim, run = _run(spec, arr)
    assert run.thresholds, "the router ran some threshold"
    # Each request escalated with the probability of the threshold it was routed at.
    by_acc = {p.accuracy: p.escalated for p in spec.cascade.points}
    expected = np.array([by_acc[a] for a in sim.acc])
    assert run.escalated == pytest.approx(float(expected.mean()), abs=0.006)
    assert run.accuracy == pytest.approx(float(np.mean(sim.acc)), abs=1e-9)
    assert run.accuracy >= spec.slo.min_accuracy
    # Escalated requests pay tier 1, the hop and tier 2.
    hop = spec.cascade.hop_ms / 1000.0
    esc = np.flatnonzero(sim.esc)
    assert len(esc) > 0.05 * len(arr)
    assert np.all(run.done[esc] >= sim.t1.done[esc] + hop - 1e-9)
    # The router answers each request on its own: one that did not escalate completes
    # with tier 1, even in a tier-1 batch with escalated ones.
    plain = np.flatnonzero(~sim.esc)
    assert np.array_equal(run.done[plain], sim.t1.done[plain])
    assert run.fallback == 0.0  # a warm tier 2 answers well within the router's timeout
    assert min(run.router_peak) > 0 and max(run.router_peak) < run.router_threads
    # Same seed, same replay.
    _, again = _run(spec, arr)
    assert np.array_equal(again.done, run.done)
    assert again.cost_usd == run.cost_usd


def test_tier2_queue_sees_only_the_escalated_requests() -> None:
    spec = _spec()
    arr = _poisson(600.0, 120.0)
    sim, run = _run(spec, arr)
    assert sim.t2.n == int(np.count_nonzero(sim.esc))
    assert np.all(np.diff(sim.t2.arr) >= 0)  # appended in time order
    assert np.all(np.isfinite(run.done))  # nothing dropped with a warm fleet
    lat = (run.done - arr) * 1000.0
    assert np.percentile(lat, 95) <= spec.slo.latency.target_ms


def test_online_correction_learns_a_drifted_escalation_rate() -> None:
    spec = _spec()
    arr = _poisson(600.0, 240.0)
    policy = CascadePolicy(spec, 600.0)
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5), drift=1.8)
    run = sim.run(policy)
    assert policy.state is not None
    assert policy.state["escalationScale"] > 1.4  # learnt most of the 1.8x drift
    assert np.percentile((run.done - arr) * 1000.0, 95) <= spec.slo.latency.target_ms


def test_json_has_accuracy_for_every_policy() -> None:
    spec = _spec()
    arr = _poisson(300.0, 90.0)
    casc = run_policy(spec, arr, "tritonscale", SimConfig(seed=1)).summary
    assert casc["accuracy"] >= spec.slo.min_accuracy
    large = spec.variant("large-int8").accuracy
    for name in ("hpa", "static-peak", "oracle"):
        s = run_policy(spec, arr, name, SimConfig(seed=1)).summary
        assert s["accuracy"] == pytest.approx(large), name  # single-variant: its accuracy


def test_run_cascade_refuses_a_spec_without_cascade() -> None:
    spec = parse_manifest(load_example("bert.yaml"))[2]
    with pytest.raises(ValueError, match="cascade"):
        run_cascade(spec, _poisson(10.0, 5.0), 10.0)


def test_tier1_alone_is_credited_tier1_accuracy() -> None:
    spec = _spec()

    class Tier1Only(CascadePolicy):
        def initial(self, view: CascadeSimulator) -> Any:
            out = super().initial(view)
            self.threshold = 0.0
            return out

        def step(self, view: CascadeSimulator) -> Any:
            out = super().step(view)
            self.threshold = 0.0
            return out

    arr = _poisson(300.0, 90.0)
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5))
    run = sim.run(Tier1Only(spec, 300.0))
    assert run.escalated == 0.0 and sim.t2.n == 0
    assert run.accuracy == pytest.approx(spec.variant("distil-int8").accuracy)


def _hand_built(patience: float | None = 30.0) -> CascadeSimulator:
    """Four escalated requests sent at t = 0 whose tier-1 and tier-2 outcomes are set
    by hand, routed at the same threshold (escalating 0.10)."""
    spec = _spec()
    arr = np.zeros(4)
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5, client_timeout_s=patience))
    sim.t1.done[:] = [1.0, 2.0, 3.0, 25.0]
    sim.t1.where[:] = 0
    sim.fwd[:] = True
    sim.esc[:] = True
    sim.p_esc[:] = 0.10
    sim.acc[:] = 0.90
    sim.t2.extend(sim.t1.done + spec.cascade.hop_ms / 1000.0)
    sim.j2[:] = np.arange(4)
    # Tier 2 answers the first in time, the second after the router's 10 s, refuses
    # the third (no Ready replica), answers the fourth 6 s after it was sent.
    sim.t2.done[:] = [1.5, 12.5, np.inf, 31.0]
    sim.t2.where[:] = [0, 0, -1, 0]
    sim.now = 100.0
    return sim


def test_the_router_falls_back_to_tier1_at_its_tier2_timeout() -> None:
    sim = _hand_built(patience=None)
    done, fell = sim._e2e(0, 4)
    hop = sim.cas.hop_ms / 1000.0
    # 1: tier 2's answer; 2: tier 1's at 2 + 10 s; 3: refused, tier 1's at once;
    # 4: tier 2's (6 s is within the router's 10 s; no client patience here).
    assert done.tolist() == pytest.approx([1.5, 12.0, 3.0 + hop, 31.0])
    assert fell.tolist() == [False, True, True, False]
    # Before the deadline a late answer is still in flight; after it, a fallback.
    sim.now, sim.t2.done[1] = 11.0, np.nan
    assert np.isnan(sim._e2e(0, 4)[0][1])
    sim.now = 12.0
    assert sim._e2e(0, 4)[0][1] == pytest.approx(12.0)


def test_the_client_timeout_counts_from_the_clients_send() -> None:
    sim = _hand_built(patience=30.0)
    done, _fell = sim._e2e(0, 4)
    # The fourth reached tier 2 at 25 s and was answered 6 s later: within tier 2's
    # own 30 s, but 31 s after the client sent it, which had given up at 30 s.
    assert np.isinf(done[3]) and np.all(np.isfinite(done[:3]))


def test_fallbacks_cost_the_accuracy_tier1_has_on_escalated_inputs() -> None:
    # Independent figures: kept inputs 0.95 right, escalated ones 0.40 by tier 1 and
    # 0.85 by tier 2, 20 % escalated, a quarter of those answered by tier 1.
    e, kept, a1, a2, f = 0.2, 0.95, 0.40, 0.85, 0.25
    truth = (1 - e) * kept + e * ((1 - f) * a2 + f * a1)
    cascade, tier1 = (1 - e) * kept + e * a2, (1 - e) * kept + e * a1
    # The simulator credits every request the curve's accuracy, a fallback this:
    n = 1000
    credits = np.full(n, cascade)
    credits[: int(n * e * f)] = fallback_accuracy(cascade, tier1, e)
    assert float(np.mean(credits)) == pytest.approx(truth)
    assert fallback_accuracy(cascade, tier1, 0.0) == cascade


def test_router_peak_counts_overlapping_calls_per_pod() -> None:
    rng = np.random.default_rng(1)
    start = rng.uniform(0, 10, 300)
    end = start + rng.exponential(0.5, 300)
    pod = rng.integers(0, 3, 300)
    brute = max(int(np.count_nonzero((pod == p) & (start <= t) & (end > t)))
                for p in range(3) for t in start)
    assert _peak_in_flight(start, end, pod) == brute
    # Back to back on one pod (one ends as the next starts): one at a time.
    assert _peak_in_flight(np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.zeros(2)) == 1


def test_without_tier2_every_escalated_request_falls_back_at_once() -> None:
    """No tier-2 replica at all: every escalated request is refused and answered with
    tier 1's answer one hop after tier 1, credited tier 1's accuracy on such inputs."""
    spec = _spec()

    class NoTier2(CascadePolicy):
        def _take(self, d: Any) -> dict[Any, int]:
            out = super()._take(d)
            return {k: (0 if k[0] == "large-int8" else n) for k, n in out.items()}

    arr = _poisson(300.0, 90.0)
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5))
    run = sim.run(NoTier2(spec, 300.0))
    assert run.escalated > 0.05 and run.fallback == pytest.approx(run.escalated)
    hop = spec.cascade.hop_ms / 1000.0
    esc = sim.esc
    assert np.allclose(run.done[esc], sim.t1.done[esc] + hop)
    a1 = spec.variant("distil-int8").accuracy
    want = np.where(esc, [fallback_accuracy(a, a1, e)
                          for a, e in zip(sim.acc, sim.p_esc, strict=True)], sim.acc)
    assert run.accuracy == pytest.approx(float(np.mean(want)))


def _slow_spec() -> Any:
    """The example with hand-checkable tiers on T4: tier 1 a flat 1 s per batch of up
    to 4 (no queue delay), tier 2 4 s per request (batches of 1), a 0-ms hop."""
    doc = load_example("bert-cascade.yaml")
    for v in doc["spec"]["variants"]:
        t4 = next(p for p in v["profiles"] if p["accelerator"] == "T4")
        if v["name"] == "distil-int8":
            t4.update(maxBatchSize=4, maxQueueDelayMs=0,
                      batches=[{"size": 1, "latencyMs": 1000}, {"size": 4, "latencyMs": 1000}])
        else:
            t4.update(maxBatchSize=1, maxQueueDelayMs=0,
                      batches=[{"size": 1, "latencyMs": 4000}])
    doc["spec"]["cascade"]["hopMs"] = 0
    return parse_manifest(doc)[2]


@pytest.mark.parametrize(("threads", "drop", "done", "entered"), [
    # Hand-traced, 2 stage-1 threads, patience 1.5 s. t=0: r0, r1 take the threads,
    # tier 1 batches them [0, 1]; r2, r3 get the threads at 1, batch [1, 2]; r4 (sent
    # at 0.2) gets one at 2, 1.8 s after its send: its client has gone, the router
    # drops it without calling tier 1; r5 (sent at 5) gets one at once, [5, 6].
    (2, True, [1, 1, 2, 2, np.inf, 6], [0, 0, 1, 1, 2, 5]),
    # A router that does not check its clients calls tier 1 for r4 at 2 ([2, 3]).
    (2, False, [1, 1, 2, 2, 3, 6], [0, 0, 1, 1, 2, 5]),
    # Without the limit tier 1 batches r0-r3 together at 0 and r4 at 1.
    (None, True, [1, 1, 1, 1, 2, 6], [np.nan] * 6),
])
def test_stage1_requests_wait_for_a_router_thread(
        threads: int | None, drop: bool, done: list[float], entered: list[float]) -> None:
    spec = _slow_spec()
    arr = np.array([0.0, 0.0, 0.0, 0.0, 0.2, 5.0])
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5, client_timeout_s=1.5),
                           router_threads=threads, drop_gone=drop)
    t1 = sim.t1
    t1.apply({("distil-int8", "t4-spot"): 1}, instant=True)
    t1.run_interval(0.0, 3.0)
    t1.run_interval(3.0, 10.0)
    t1.finish()
    assert t1.done.tolist() == pytest.approx(done)
    assert np.allclose(t1.entered, entered, equal_nan=True)
    dropped = threads is not None and drop
    assert t1.abandoned.tolist() == [False] * 4 + [dropped, False]
    # Tier 1 computed only what a thread handed it (the engine's queue, without the
    # limit, computes r4 within its patience).
    assert int(np.count_nonzero(np.isfinite(t1.done))) == (5 if dropped else 6)
    # Triton's pending count of tier 1 at 0.5 s holds what the threads handed it (r0
    # computing, r1 queued), not the requests waiting for a thread.
    t1.now = 0.5
    assert t1.pending() == (2 if threads else 5)


def test_stage2_requests_wait_for_a_router_thread() -> None:
    """Hand-traced, 2 stage-2 threads in one pod, all six escalated at tier 1's answer
    at 1 s, tier 2 one request at a time, 4 s each, patience 10.5 s, tier-2 timeout 10 s
    (from 1 s: until 11 s). r0, r1 call at 1 (answers 5, 9); r2 takes r0's thread at 5
    (tier 2 would answer at 13: late, tier 1's answer at 11, which its client, sent at
    0, no longer waits for); r3 takes r1's at 9 (likewise); at 11 both threads are
    free: r4 (sent at 0.3) has gone (10.7 s), dropped without a call; r5 (sent at 0.8)
    has no tier-2 time left: tier 1's answer at once."""
    spec = _slow_spec()
    arr = np.array([0.0, 0.0, 0.0, 0.0, 0.3, 0.8])
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5, client_timeout_s=10.5),
                           router_threads=2, substep_s=1.0)
    sim.t1.done[:] = 1.0
    sim.t1.rep[:] = 7
    sim.u[:] = 0.0  # all escalate
    sim.t2.apply({("large-int8", "t4-spot"): 1}, instant=True)
    sim._advance(0.0, 30.0)
    sim.t2.finish()
    sim.now = 100.0
    done, fell = sim._e2e(0, 6)
    assert sim.s2.tolist() == pytest.approx([1, 1, 5, 9, 11, 11])
    assert sim.called.tolist() == [True] * 4 + [False, False]
    assert sim.drop2.tolist() == [False] * 4 + [True, False]
    assert sim.t2.n == 4 and sim.t2.done.tolist() == pytest.approx([5, 9, 13, 17])
    assert done.tolist() == pytest.approx([5, 9, np.inf, np.inf, np.inf, 11])
    assert fell.tolist() == [False, False, True, True, False, True]
    # The router's pending gauge: at 6 s all but r0 (answered at 5) are held, in a
    # thread or waiting for one; from 11 s none.
    sim.now = 6.0
    assert sim.held() == 5
    sim.now = 11.0
    assert sim.held() == 0
    # Without the limit every request calls at 1: answers 5, 9, then late at 11.
    free = CascadeSimulator(spec, arr, SimConfig(seed=5, client_timeout_s=10.5),
                            router_threads=None, substep_s=1.0)
    free.t1.done[:] = 1.0
    free.t1.rep[:] = 7
    free.u[:] = 0.0
    free.t2.apply({("large-int8", "t4-spot"): 1}, instant=True)
    free._advance(0.0, 30.0)
    assert free.s2.tolist() == [1.0] * 6 and free.t2.n == 6


def test_router_abandons_and_peaks_in_an_overloaded_run() -> None:
    """A replay that overloads tier 1 (one slow replica held): the router holds
    requests beyond its threads, drops those whose client left before a thread took
    them, and tier 1's queue never holds more than the threads."""
    spec = _spec()

    class Held(CascadePolicy):
        def _take(self, d: Any) -> dict[Any, int]:
            super()._take(d)
            return {("distil-int8", "t4-spot"): 1, ("large-int8", "l4-ondemand"): 1}

    arr = _poisson(4000.0, 60.0)
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5, client_timeout_s=5.0),
                           router_threads=64)
    run = sim.run(Held(spec, 4000.0))
    assert run.router_peak[0] > 64 and run.abandoned[0] > 0
    assert np.all(sim.t1.timed_out[sim.t1.abandoned])
    # Entered tier 1 within the patience; at most 64 in tier 1 at any moment.
    ent = np.isfinite(sim.t1.done)
    assert np.all(sim.t1.entered[ent] - arr[ent] <= 5.0 + 1e-9)
    assert _peak_in_flight(sim.t1.entered[ent], sim.t1.done[ent], sim.t1.rep[ent]) <= 64

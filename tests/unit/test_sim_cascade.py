"""The cascade simulator: per-request escalation, both tiers' queues, end-to-end latency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.harness.fakes import load_example

from tritonscale.core.spec import parse_manifest
from tritonscale.sim.cascade import CascadePolicy, CascadeRun, CascadeSimulator, run_cascade
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


def _run(spec: Any, arr: np.ndarray, drift: float = 1.0, couple: bool = True
         ) -> tuple[CascadeSimulator, CascadeRun]:
    sim = CascadeSimulator(spec, arr, SimConfig(seed=5), drift, couple_batches=couple)
    return sim, sim.run(CascadePolicy(spec, float(len(arr[arr < 60]) / 60)))


def _batch_mates(sim: CascadeSimulator) -> tuple[np.ndarray, np.ndarray]:
    """Per request: its tier-1 batch's last escalated completion (-inf: none) and how
    many escalated requests share its batch (same placement, same tier-1 completion)."""
    groups: dict[tuple[int, float], list[int]] = {}
    for i in range(sim.n):
        groups.setdefault((int(sim.t1.where[i]), float(sim.t1.done[i])), []).append(i)
    last = np.full(sim.n, -np.inf)
    count = np.zeros(sim.n, dtype=np.int64)
    for members in groups.values():
        esc = [i for i in members if sim.esc[i]]
        if esc:
            t = max(float(sim.t2.done[sim.j2[i]]) for i in esc)
            last[members] = t
            count[members] = len(esc)
    return last, count


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
    plain = np.flatnonzero(~sim.esc)
    assert np.all(run.done[plain] >= sim.t1.done[plain])
    alone = _batch_mates(sim)[1] == 0
    assert np.array_equal(run.done[plain][alone[plain]], sim.t1.done[plain][alone[plain]])
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


def test_router_answers_its_whole_batch_after_the_tier2_call() -> None:
    spec = _spec()
    arr = _poisson(600.0, 90.0)
    sim, run = _run(spec, arr)
    last, count = _batch_mates(sim)
    plain = ~sim.esc & (count > 0)
    assert np.count_nonzero(plain) > 0.05 * len(arr)  # batches do mix them
    # A request that did not escalate waits for its batch's escalated answers.
    assert np.array_equal(run.done[plain], np.maximum(sim.t1.done[plain], last[plain]))
    assert np.all(run.done[plain] > sim.t1.done[plain])
    # Uncoupled (per-request answers): it completes with tier 1.
    sim2, run2 = _run(spec, arr, couple=False)
    plain2 = ~sim2.esc
    assert np.array_equal(run2.done[plain2], sim2.t1.done[plain2])

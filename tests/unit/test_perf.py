"""Performance model: interpolation, monotonicity, capacity, and agreement with the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tritonscale.core import perf
from tritonscale.core.spec import BatchPoint, LatencySLO, Profile, ScaledModelSpec
from tritonscale.sim.engine import SimConfig, Simulator

P = Profile("T4", 32, (BatchPoint(1, 2.0), BatchPoint(8, 6.0), BatchPoint(32, 18.0)), 2.0)


def test_batch_latency_interpolates_and_extrapolates() -> None:
    assert perf.batch_latency_ms(P, 1) == 2.0
    assert perf.batch_latency_ms(P, 8) == 6.0
    assert perf.batch_latency_ms(P, 4.5) == pytest.approx(4.0)
    assert perf.batch_latency_ms(P, 20) == pytest.approx(12.0)
    assert perf.batch_latency_ms(P, 40) == pytest.approx(22.0)  # slope of the last segment
    single = Profile("T4", 8, (BatchPoint(4, 8.0),), 0.0)
    assert perf.batch_latency_ms(single, 2) == pytest.approx(4.0)


def test_latency_grows_with_load_and_is_infinite_at_saturation() -> None:
    top = perf.max_throughput_rps(P)
    assert top == pytest.approx(1000 * 32 / 18.0)
    lats = [perf.predict_replica(P, top * f, 99).latency_ms for f in (0.2, 0.5, 0.8, 0.95, 0.99)]
    assert lats == sorted(lats)
    assert lats[-1] > 3 * lats[1]  # queueing blows up near saturation
    assert math.isinf(perf.predict_replica(P, top * 1.01, 99).latency_ms)
    assert perf.predict_latency_ms(P, top * 1.5, 2, 99) == pytest.approx(
        perf.predict_replica(P, top * 0.75, 99).latency_ms
    )


def test_capacity_is_the_largest_rate_meeting_the_target() -> None:
    slo = LatencySLO(99.0, 30.0)
    cap = perf.capacity(P, slo)
    assert 0 < cap < perf.max_throughput_rps(P)
    assert perf.predict_replica(P, cap, 99).latency_ms <= 30.0 + 1e-6
    assert perf.predict_replica(P, cap * 1.01, 99).latency_ms > 30.0
    # An impossible target: no capacity.
    assert perf.capacity(P, LatencySLO(99.0, 1.0)) == 0.0


def _simulated_p99(spec: ScaledModelSpec, key: tuple[str, str], rps: float, replicas: int,
                   seconds: float = 20.0) -> float:
    rng = np.random.default_rng(7)
    arr = np.cumsum(rng.exponential(1.0 / rps, int(rps * seconds)))

    class Static:
        name = "static"
        interval_s = 60.0

        def initial(self, view: object) -> dict[tuple[str, str], int]:
            return {key: replicas}

        def step(self, view: object) -> dict[tuple[str, str], int]:
            return {key: replicas}

    run = Simulator(spec, arr, SimConfig()).run(Static())
    lat = (run.done - run.arrivals) * 1000.0
    return float(np.percentile(lat[len(lat) // 10 :], 99))


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("combo", [("int8", "t4-spot"), ("fp16", "t4-ondemand"),
                                   ("int8", "l4-spot")])
def test_perf_model_matches_simulator(
    resnet: ScaledModelSpec, combo: tuple[str, str], fraction: float
) -> None:
    """Tolerance: the predicted p99 is within 15% of the simulated p99 (Poisson arrivals,
    two replicas, random balancing, 20 s; 6 s above 5,000 rps) for loads up to 95% of
    the SLO capacity (measured: -8.2 %..+8.4 %; 25 % before the mixture model)."""
    prof = resnet.variant(combo[0]).profile_for(resnet.pool(combo[1]).accelerator)
    assert prof is not None
    cap = perf.capacity(prof, resnet.slo.latency)
    rps = 2 * cap * fraction
    sim = _simulated_p99(resnet, combo, rps, 2, seconds=20.0 if rps < 5000 else 6.0)
    model = perf.predict_latency_ms(prof, rps, 2, 99.0)
    assert model == pytest.approx(sim, rel=0.15), (combo, fraction, model, sim)


def test_capacity_holds_the_slo_in_the_simulator(resnet: ScaledModelSpec) -> None:
    prof = resnet.variant("fp16").profile_for("T4")
    assert prof is not None
    cap = perf.capacity(prof, resnet.slo.latency)
    assert _simulated_p99(resnet, ("fp16", "t4-ondemand"), 2 * cap, 2) <= 25.0 * 1.1
    # ...and 30% beyond it, the simulator violates the SLO: the model is not loose.
    assert _simulated_p99(resnet, ("fp16", "t4-ondemand"), 2 * cap * 1.3, 2, 10.0) > 25.0


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.55, 0.8])
@pytest.mark.parametrize(
    "prof",
    [
        Profile("cpu", 8, tuple(BatchPoint(b, 40.0 + 10.0 * b) for b in (1, 2, 4, 8)), 10.0),
        Profile("cpu", 8, tuple(BatchPoint(b, 5.0 + 2.0 * b) for b in (1, 2, 4, 8)), 2.0),
        P,
    ],
)
def test_batch_fixed_point_matches_the_batcher(prof: Profile, fraction: float) -> None:
    """Mean batch size within 8 % of the simulator's exact batcher loop (Poisson).

    Below saturation a batch holds what arrived while the previous one ran (Poisson,
    mean n = lambda * S(b)), or, when nothing did, the next arrival plus what the
    queue delay collects.  The former fixed point max(1 + lambda*d, n) ignored that
    n varies: 1.20 instead of 1.51 at 30 % of 40 + 10*b ms, where real Triton's
    statistics showed 1.48 (tests/real/test_perf_model_real.py)."""
    from tritonscale.sim.engine import _batch_loop, service_table

    rps = fraction * perf.max_throughput_rps(prof)
    rng = np.random.default_rng(3)
    arr = np.cumsum(rng.exponential(1.0 / rps, 40_000)).tolist()
    _, _, _, counts, _ = _batch_loop(
        arr, 0.0, prof.max_batch_size, prof.max_queue_delay_ms / 1000.0, service_table(prof), 1e12
    )
    simulated = float(np.mean(counts))
    assert perf.predict_replica(prof, rps, 50).batch == pytest.approx(simulated, rel=0.08)


# The grid the model is held to against the simulator's exact batcher: the real-Triton
# test's sleepy profile (40 + 10*b ms + ~2 ms IPC, max batch 8, delay 10 ms), the bundled
# T4 int8 ({1: 1.0, 64: 11.25} ms, max batch 64, delay 2 ms), profiles of the examples,
# max batch 1 (an M/D/1 queue), a large queue delay and none.
GRID_PROFILES = {
    "sleepy": Profile("cpu", 8, tuple(BatchPoint(b, 42.0 + 10.0 * b) for b in range(1, 9)), 10.0),
    "t4-int8": Profile("T4", 64, (BatchPoint(1, 1.0), BatchPoint(64, 11.25)), 2.0),
    "l4-int8": Profile("L4", 64, (BatchPoint(1, 0.346), BatchPoint(64, 5.06)), 2.0),
    "t4-fp16": Profile("T4", 32, tuple(BatchPoint(b, t) for b, t in (
        (1, 3.01), (2, 4.01), (4, 5.76), (8, 9.01), (16, 15.12), (32, 28.33))), 2.0),
    "bert-t4": Profile("T4", 32, (BatchPoint(1, 8.0), BatchPoint(32, 72.2)), 5.0),
    "distil-l4": Profile("L4", 64, (BatchPoint(1, 0.8), BatchPoint(32, 5.1),
                                    BatchPoint(64, 10.2)), 2.0),
    "batch-1": Profile("cpu", 1, (BatchPoint(1, 10.0),), 0.0),
    "long-delay": Profile("cpu", 8, tuple(BatchPoint(b, 5.0 + 2.0 * b) for b in (1, 2, 4, 8)),
                          30.0),
    "no-delay": Profile("T4", 16, (BatchPoint(1, 2.0), BatchPoint(16, 10.0)), 0.0),
}
GRID_LOADS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _exact_batcher_percentiles(prof: Profile, rps: float, n: int = 120_000) -> list[float]:
    """p50/p95/p99 (ms) of one replica under Poisson arrivals, from core.batcher.serve
    (the simulator's batcher, Triton's growth), first 5 % left out as warm-up."""
    from tritonscale.core import batcher

    b = batcher.Batcher.of(prof)
    rng = np.random.default_rng(11)
    arrivals = np.cumsum(rng.exponential(1.0 / rps, n))
    served = batcher.serve(arrivals.tolist(), 0.0, b.max_batch, b.delay_s, b.svc, 1e12,
                           growth=batcher.TRITON_GROWTH)
    done = np.repeat(np.array(served.dones), served.sizes)
    lat = (done - arrivals[: len(done)]) * 1000.0
    return [float(np.percentile(lat[n // 20:], p)) for p in (50, 95, 99)]


@pytest.mark.parametrize("name", sorted(GRID_PROFILES))
def test_percentiles_match_the_exact_batcher(name: str) -> None:
    """Predicted p50/p95/p99 against the exact batcher at 20-90 % of saturation:
    every point within 18 %, at most one in eight beyond 10 %.  Measured with
    400,000 requests per point on 18 profiles (these and every example's), 432
    points: worst |e| 14.6 % at p50 (+, 90 % load, no delay), 9.9 % at p95, 11.2 %
    at p99; 18 points beyond 10 % (the margin to 18 % is for this test's 120,000
    requests, one seed).  The former model, which summed quantiles of its parts,
    was off there by up to +96 % (p50, max batch 1), +29 % (p95) and +31 % (p99),
    with 123 of the 432 points beyond 10 %: +16 %/+11 % at p95/p99 at 80 % on the
    sleepy profile, the CI failure of tests/real/test_perf_model_real.py."""
    prof = GRID_PROFILES[name]
    top = perf.max_throughput_rps(prof)
    errors = []
    for frac in GRID_LOADS:
        sim = _exact_batcher_percentiles(prof, frac * top)
        for p, s in zip((50, 95, 99), sim, strict=True):
            errors.append((perf.predict_replica(prof, frac * top, p).latency_ms / s - 1.0,
                           frac, p))
    worst = max(errors, key=lambda e: abs(e[0]))
    assert abs(worst[0]) <= 0.18, (name, worst)
    beyond = [e for e in errors if abs(e[0]) > 0.10]
    assert len(beyond) <= len(errors) // 8, (name, beyond)


def test_latency_table_is_safe_under_concurrent_eviction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's tick workers call the planner on several threads at once: with
    a table small enough to evict on every insert, lookups (LRU bumps) and inserts
    (evictions) from eight threads must neither raise nor return wrong latencies."""
    import sys
    import threading

    monkeypatch.setattr(perf, "_COLUMNS", 2)
    monkeypatch.setattr(perf, "_columns", type(perf._columns)())
    shapes = [
        (8, tuple((b, (40.0 + k + 10.0 * b) / (40.0 + k + 80.0)) for b in range(1, 9)))
        for k in range(3)
    ]
    expected = {i: perf._nodes(s, 0.99, 0.5, 5, range(0, 1)) for i, s in enumerate(shapes)}
    errors: list[BaseException] = []
    wrong: list[int] = []

    def worker(seed: int) -> None:
        try:
            for n in range(800):
                i = (seed + n) % len(shapes)
                if perf._nodes(shapes[i], 0.99, 0.5, 5, range(0, 1)) != expected[i]:
                    wrong.append(i)
        except BaseException as e:  # the test reports any failure
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    assert not wrong
    assert len(perf._columns) <= 2

"""Simulator: dynamic batching, routing, startup, preemption, cost, traces, decide wiring."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonscale.core import autoscale
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim import policies
from tritonscale.sim.engine import Key, SimConfig, Simulator, SimView, _batch_loop
from tritonscale.sim.report import run_policy, summarize
from tritonscale.sim.trace import TraceError, load_trace, per_window_rate, scale_trace

AZURE_TRACE = Path(__file__).resolve().parents[2] / "examples/traces/azure_llm_conv_2023.csv"

SpecFactory = Callable[..., ScaledModelSpec]


class Fixed:
    name = "fixed"

    def __init__(self, plan: Mapping[Key, int], later: Mapping[Key, int] | None = None,
                 at: float = 1e18, interval_s: float = 1.0) -> None:
        self.plan, self.later, self.at, self.interval_s = plan, later, at, interval_s

    def initial(self, view: SimView) -> Mapping[Key, int]:
        return self.plan

    def step(self, view: SimView) -> Mapping[Key, int]:
        return self.later if self.later is not None and view.now >= self.at else self.plan


def test_batch_loop_follows_triton_dynamic_batching() -> None:
    svc = [0.0, 1.0, 1.5, 2.0, 2.5]  # seconds per batch of 0..4
    # Max batch 4, max queue delay 0.5 s.
    arrivals = [0.0, 0.1, 0.2, 0.3, 0.35, 5.0, 9.0, 9.9]
    i, _t_free, dones, counts, busy = _batch_loop(arrivals, 0.0, 4, 0.5, svc, 100.0)
    # 4 queued by t=0.3 (< 0.5 delay) -> dispatch a full batch at 0.3.
    # Then 0.35 waits for the instance (free at 2.8) -> alone at 2.8 (delay expired).
    # 5.0 waits its 0.5 s delay -> 5.5; 9.0 and 9.9: 9.0 waits to 9.5 (9.9 not yet there).
    assert counts == [4, 1, 1, 1, 1]
    assert dones == pytest.approx([2.8, 3.8, 6.5, 10.5, 11.5])
    assert i == len(arrivals) and busy == pytest.approx(2.5 + 4 * 1.0)
    # Stopping at a segment end: nothing dispatched at or after `end`.
    i2, *_ = _batch_loop(arrivals, 0.0, 4, 0.5, svc, 5.2)
    assert i2 == 5


def test_round_robin_startup_delay_and_cost(make_spec: SpecFactory) -> None:
    spec = make_spec()
    arr = np.arange(0.0, 600.0, 0.01)  # 100 rps for 10 minutes
    key = ("small", "t4-od")
    # Start with 1 replica; at t=120 ask for 3 (Ready 60 s later, startupSeconds).
    sim = Simulator(spec, arr, SimConfig())
    run = sim.run(Fixed({key: 1}, {key: 3}, at=120.0, interval_s=15.0))
    ready_steps = [(s.t, s.ready.get(key, 0), s.desired.get(key, 0)) for s in run.steps]
    assert (120.0, 1, 3) in ready_steps and (180.0, 3, 3) in ready_steps
    # Cost: 1 replica for 600 s plus 2 more billed from t=120: 0.5 $/h each.
    expected = 0.5 * (arr[-1] + 1e-6) / 3600 + 2 * 0.5 * (arr[-1] + 1e-6 - 120.0) / 3600
    assert run.cost_usd == pytest.approx(expected, rel=1e-6)
    # After 180 s every replica gets a third of the requests (round-robin).
    assert np.isfinite(run.done).all()


def test_preemption_drops_queued_requests_and_pool_comes_back(make_spec: SpecFactory) -> None:
    spec = make_spec()
    arr = np.arange(0.0, 3600.0, 0.005)
    cfg = SimConfig(seed=3, preemption_rate_per_hour=3.0, preemption_outage_s=120.0)
    sim = Simulator(spec, arr, cfg)
    run = sim.run(Fixed({("small", "t4-spot"): 2}, interval_s=15.0))
    assert run.preemptions, "seeded preemptions expected"
    s = summarize(spec, run, "fixed")
    assert s["dropped"] > 0  # arrivals during the outage (no Ready replica)
    first = run.preemptions[0][0]
    during = [st for st in run.steps if first + 1 < st.t < first + 120]
    assert during and all(st.ready.get(("small", "t4-spot"), 0) == 0 for st in during)
    # Same seed, same outcome.
    again = Simulator(spec, arr, cfg).run(Fixed({("small", "t4-spot"): 2}, interval_s=15.0))
    assert again.preemptions == run.preemptions and again.cost_usd == run.cost_usd


def test_signals_like_prometheus(make_spec: SpecFactory) -> None:
    spec = make_spec()
    arr = np.arange(0.0, 120.0, 0.005)  # 200 rps
    seen: list[tuple[float, float | None, float | None]] = []

    class Probe(Fixed):
        def step(self, view: SimView) -> Mapping[Key, int]:
            seen.append((view.rps(30.0), view.latency_ms(99.0), view.utilisation()))
            return self.plan

    Simulator(spec, arr, SimConfig()).run(Probe({("small", "t4-od"): 1}, interval_s=15.0))
    rps, lat, util = seen[3]
    assert rps == pytest.approx(200.0, rel=0.01)
    assert lat is not None and 1.0 < lat < 10.0
    assert util is not None and 0.0 < util < 1.0


def test_trace_formats(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("timestamp_s\n10.5\n10.0\n12.25\n")
    assert load_trace(plain).tolist() == [0.0, 0.5, 2.25]
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    assert load_trace(azure) == pytest.approx([0.0, 4.314579])
    bad = tmp_path / "bad.csv"
    bad.write_text("when\n1\n")
    with pytest.raises(TraceError, match="timestamp_s"):
        load_trace(bad)
    full = load_trace(AZURE_TRACE)
    assert len(full) == 19_366 and full[-1] > 3400


def test_rate_scale_keeps_shape_and_is_deterministic() -> None:
    base = load_trace(AZURE_TRACE)
    scaled = scale_trace(base, 20.0, seed=1)
    assert len(scaled) == 20 * len(base)
    assert np.all(np.diff(scaled) >= 0)
    a = per_window_rate(base, 300.0, 3600.0)
    b = per_window_rate(scaled, 300.0, 3600.0) / 20.0
    # Five-minute shape kept within 10% (the shift window is 60 s).
    assert np.max(np.abs(b[:-1] - a[:-1]) / a[:-1]) < 0.1
    assert np.array_equal(scale_trace(base, 20.0, seed=1), scaled)
    assert not np.array_equal(scale_trace(base, 20.0, seed=2), scaled)
    frac = scale_trace(base, 2.5, seed=0)
    assert abs(len(frac) - 2.5 * len(base)) < 0.02 * len(base)
    assert len(scale_trace(base, 0.5, seed=0)) < 0.6 * len(base)


def test_simulator_drives_the_same_decide(monkeypatch: pytest.MonkeyPatch,
                                          resnet: ScaledModelSpec) -> None:
    calls: list[float] = []
    real = autoscale.decide

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[3])
        return real(*args, **kw)

    monkeypatch.setattr(policies, "decide", spy)
    arr = scale_trace(load_trace(AZURE_TRACE), 5.0)
    arr = arr[arr < 300.0]
    res = run_policy(resnet, arr, "tritonscale", SimConfig(preroll_max_s=0.0))
    assert len(calls) == len(res.run.steps)  # initial + one per interval after it
    # With the steady-state pre-roll the same decide runs every 15 s from the start
    # of the pre-roll, on one clock, through the measured replay.
    calls.clear()
    res = run_policy(resnet, arr, "tritonscale")
    assert calls == [15.0 * i for i in range(len(calls))]
    assert len(calls) > len(res.run.steps) == 20
    assert policies.decide is spy and policies.TritonscalePolicy.__module__.endswith("policies")


def test_summary_fields(resnet: ScaledModelSpec) -> None:
    arr = scale_trace(load_trace(AZURE_TRACE), 10.0)
    arr = arr[arr < 600.0]
    s = run_policy(resnet, arr, "tritonscale").summary
    for k in ("policy", "requests", "slo_attainment", "windows_met", "cost_usd",
              "mean_cost_per_hour", "p50_ms", "p95_ms", "p99_ms", "dropped"):
        assert k in s
    assert s["requests"] == len(arr)
    assert 0.99 <= s["windows_met"] <= 1.0 and s["slo_attainment"] >= 0.99
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]

"""Simulator speed: one hour of traffic at 1,000 req/s, per policy, on one core.

    PYTHONPATH=operator python benchmarks/bench_sim.py

Each policy runs twice in the same process: with the default yardsticks (random
load balancing, 30-s client timeout, Triton's prefetching batcher) and with the
former flattering ones (round-robin, endless patience, a batch that grows until it
runs), so the ratio shows what the honest yardsticks cost in replay time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from tritonscale.commands.simulate import load_spec  # noqa: E402
from tritonscale.sim.engine import SimConfig  # noqa: E402
from tritonscale.sim.policies import POLICIES  # noqa: E402
from tritonscale.sim.report import run_policy  # noqa: E402
from tritonscale.sim.trace import load_trace, scale_trace  # noqa: E402


def main() -> int:
    spec = load_spec(str(ROOT / "examples/resnet50.yaml"))
    base = load_trace(ROOT / "examples/traces/azure_llm_conv_2023.csv")
    # The trace is 3,502 s: scale it to 1,000 req/s on average and stretch to one hour.
    k = 1000.0 * 3600.0 / len(base)
    arr = scale_trace(base, k) * (3600.0 / base[-1])
    print(f"{len(arr):,} requests over {arr[-1] / 3600:.2f} h "
          f"({len(arr) / arr[-1]:,.0f} req/s)")
    former = SimConfig(load_balancing="round-robin", client_timeout_s=None, batch_growth=1.0)
    for p in POLICIES:
        t0 = time.perf_counter()
        res = run_policy(spec, arr, p)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = run_policy(spec, arr, p, former)
        dt_old = time.perf_counter() - t0
        rate = len(arr) / dt
        print(f"{p:<12} {dt:6.2f} s  ({rate / 1e6:.2f} M req/s simulated)  "
              f"x{dt / dt_old:.2f} the former yardsticks' {dt_old:.2f} s  "
              f"goal < 20 s: {'MET' if dt < 20 else 'MISSED'}  "
              f"[p99 {res.summary['p99_ms']} ms (former {old.summary['p99_ms']}), "
              f"${res.summary['cost_usd']:.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""All policies on the shared Azure trace at several rate scales.

Prints, per rate scale: every policy's summary, tritonscale's cost ratio to the
oracle, and to the cheapest HPA configuration (sweeping metric and target)
whose windows_met reaches tritonscale's; then the goals, met or not.

    PYTHONPATH=operator python benchmarks/bench_policies.py [--scales 100 300 600 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from tritonscale.commands.simulate import format_table, load_spec  # noqa: E402
from tritonscale.sim.engine import SimConfig  # noqa: E402
from tritonscale.sim.policies import POLICIES, HPAConfig, default_deployment  # noqa: E402
from tritonscale.sim.report import run_policy  # noqa: E402
from tritonscale.sim.trace import load_trace, scale_trace  # noqa: E402

UTIL_TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LATENCY_FRACTIONS = (0.4, 0.6, 0.8, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "examples/resnet50.yaml"))
    ap.add_argument("--trace", default=str(ROOT / "examples/traces/azure_llm_conv_2023.csv"))
    ap.add_argument("--scales", type=float, nargs="+", default=[100.0, 300.0, 600.0, 1000.0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = load_spec(args.spec)
    base = load_trace(args.trace)
    cfg = SimConfig(seed=args.seed)
    pool_max = default_deployment(spec)[1].max_replicas
    target_ms = spec.slo.latency.target_ms
    pct = spec.slo.latency.percentile
    verdicts: list[str] = []
    for k in args.scales:
        arr = scale_trace(base, k, seed=args.seed)
        t0 = time.perf_counter()
        rows = {p: run_policy(spec, arr, p, cfg).summary for p in POLICIES}
        print(f"\n=== rate scale {k:g}: {len(arr):,} requests, mean "
              f"{len(arr) / arr[-1]:,.0f} req/s")
        print(format_table(list(rows.values())))
        sweep = []
        for u in UTIL_TARGETS:
            h = HPAConfig(metric="utilisation", target=u, max_replicas=pool_max)
            s = run_policy(spec, arr, "hpa", cfg, h).summary
            sweep.append((f"utilisation {u:.0%}", s))
        for f in LATENCY_FRACTIONS:
            h = HPAConfig(metric="latency", target=f * target_ms, max_replicas=pool_max)
            s = run_policy(spec, arr, "hpa", cfg, h).summary
            sweep.append((f"p{pct:g} latency {f * target_ms:g} ms", s))
        print("HPA sweep (target: windows_met, $/h):")
        for name, s in sweep:
            print(f"  {name:<24} {s['windows_met']:.3f}  {s['mean_cost_per_hour']:.3f}")
        ts = rows["tritonscale"]
        oracle = rows["oracle"]
        reach = [(s["mean_cost_per_hour"], n) for n, s in sweep
                 if s["windows_met"] >= ts["windows_met"]]
        r_oracle = ts["mean_cost_per_hour"] / oracle["mean_cost_per_hour"]
        print(f"tritonscale / oracle cost: {r_oracle:.3f}")
        if reach:
            hcost, hname = min(reach)
            r_hpa = ts["mean_cost_per_hour"] / hcost
            print(f"tritonscale / cheapest HPA reaching windows_met {ts['windows_met']:.3f} "
                  f"({hname}, ${hcost:.3f}/h): {r_hpa:.3f}")
        else:
            r_hpa = float("nan")
            best = max(sweep, key=lambda x: x[1]["windows_met"])
            print(f"no HPA configuration reaches windows_met {ts['windows_met']:.3f} "
                  f"(best: {best[0]}, {best[1]['windows_met']:.3f} at "
                  f"${best[1]['mean_cost_per_hour']:.3f}/h; tritonscale costs "
                  f"{ts['mean_cost_per_hour'] / best[1]['mean_cost_per_hour']:.3f} x that)")
        goals: list[tuple[str, bool | None]] = [
            ("windows_met >= 0.99", ts["windows_met"] >= 0.99),
            (f"slo_attainment >= {pct / 100:g}", ts["slo_attainment"] >= pct / 100),
            ("cost <= 1.15 x oracle", r_oracle <= 1.15),
            ("cost <= 0.5 x cheapest HPA at same windows_met",
             (r_hpa <= 0.5) if reach else None),
        ]
        for g, ok in goals:
            word = "n/a (no HPA configuration reaches it)" if ok is None else (
                "MET" if ok else "MISSED")
            verdicts.append(f"scale {k:g}: {g}: {word}")
        print(f"(scale {k:g} took {time.perf_counter() - t0:.0f} s)")
    print("\n=== goals")
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

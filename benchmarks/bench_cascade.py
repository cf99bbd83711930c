"""A cascade against the same spec without it, at the same accuracy floor, in one run.

For each trace (the bundled Azure trace scaled, and a generated bursty trace from
benchmarks/bursty_trace.py at the same mean rate) it replays, with the request-level
simulator and the operator's own ``decide``:

* ``cascade``: examples/bert-cascade.yaml (DistilBERT first, BERT-Large for the
  unsure; the curve is the example's illustrative one);
* ``no cascade``: the same spec with ``spec.cascade`` removed: at the 0.89 floor only
  BERT-Large qualifies, so it serves everything.

and prints both summaries, the cost ratio, and the issue's done-when checks:
windows_met >= 0.99 (1-minute windows meeting the SLO percentile), accuracy served
>= the floor, cascade cost <= 0.6 x the no-cascade cost. Nothing is asserted: the
numbers are printed as they come.

    PYTHONPATH=operator python benchmarks/bench_cascade.py [--scale 500] [--minutes 60]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bursty_trace import BurstyConfig, generate  # noqa: E402
from tritonscale.commands.simulate import format_table  # noqa: E402
from tritonscale.core.spec import ScaledModelSpec, parse_manifest  # noqa: E402
from tritonscale.sim.engine import SimConfig  # noqa: E402
from tritonscale.sim.report import run_policy  # noqa: E402
from tritonscale.sim.trace import load_trace, scale_trace  # noqa: E402

GOAL_WINDOWS = 0.99
GOAL_COST_RATIO = 0.6


def specs(path: Path) -> tuple[ScaledModelSpec, ScaledModelSpec]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    plain = copy.deepcopy(doc)
    plain["spec"].pop("cascade")
    # The safe plan must name a variant the plain spec may run at its floor.
    plain["spec"]["scaling"]["safePlan"] = [
        e for e in plain["spec"]["scaling"].get("safePlan", [])
        if e["variant"] != doc["spec"]["cascade"]["tiers"][0]["variant"]
    ]
    return parse_manifest(doc)[2], parse_manifest(plain)[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "examples/bert-cascade.yaml"))
    ap.add_argument("--trace", default=str(ROOT / "examples/traces/azure_llm_conv_2023.csv"))
    ap.add_argument("--scale", type=float, default=500.0,
                    help="rate scale of the bundled trace (500: ~2,800 req/s)")
    ap.add_argument("--minutes", type=float, default=60.0, help="replay the first N minutes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cascade, plain = specs(Path(args.spec))
    floor = cascade.slo.min_accuracy
    base = scale_trace(load_trace(args.trace), args.scale, seed=args.seed)
    base = base[base < args.minutes * 60.0]
    mean = len(base) / (args.minutes * 60.0)
    bursty = generate(BurstyConfig(duration_s=args.minutes * 60.0, mean_rps=mean,
                                   seed=args.seed))
    cfg = SimConfig(seed=args.seed)
    verdicts: list[tuple[str, bool, str]] = []
    for label, arr in (("bundled Azure trace", base), ("generated bursty trace", bursty)):
        arr = np.asarray(arr, dtype=np.float64)
        t0 = time.perf_counter()
        a = run_policy(cascade, arr, "tritonscale", cfg).summary
        a["policy"] = "cascade"
        b = run_policy(plain, arr, "tritonscale", cfg).summary
        b["policy"] = "no cascade"
        print(f"\n=== {label}: {len(arr):,} requests over {args.minutes:g} min, mean "
              f"{len(arr) / (args.minutes * 60):,.0f} req/s; SLO "
              f"p{cascade.slo.latency.percentile:g} <= {cascade.slo.latency.target_ms:g} ms, "
              f"floor {floor:g} ({time.perf_counter() - t0:.0f} s)")
        print(format_table([a, b]))
        print(f"accuracy served: cascade {a['accuracy']}, no cascade {b['accuracy']}")
        ratio = a["mean_cost_per_hour"] / b["mean_cost_per_hour"]
        print(f"cost ratio cascade / no cascade: {ratio:.3f}")
        verdicts += [
            (f"{label}: cascade windows_met >= {GOAL_WINDOWS}", a["windows_met"] >= GOAL_WINDOWS,
             f"{a['windows_met']:.4f}"),
            (f"{label}: cascade accuracy >= floor {floor:g}",
             a["accuracy"] is not None and a["accuracy"] >= floor, f"{a['accuracy']}"),
            (f"{label}: cost ratio <= {GOAL_COST_RATIO}", ratio <= GOAL_COST_RATIO,
             f"{ratio:.3f}"),
        ]
    print("\nGoals:")
    for what, ok, value in verdicts:
        print(f"  {'MET    ' if ok else 'NOT MET'} {what} ({value})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
numbers are printed as they come. Both runs use the same policy (``decide``), the
same simulator settings (warm-up, seed) and the same arrivals.

Also printed, per run: the most replicas ever desired on each pool against its
``maxReplicas`` (a plan, surge included, must never exceed it), and the minutes that
missed the SLO with their highest 10-s arrival rate; per trace, what holding that
trace's highest 10-s rate all the time would cost (``plan``'s answer at that load,
within the floor and the pools), which bounds what any policy that meets the SLO in
every minute must pay when bursts are shorter than a replica's startup.

    PYTHONPATH=operator python benchmarks/bench_cascade.py [--scale 500] [--minutes 60]
        [--traces both|bundled|bursty]
"""

from __future__ import annotations

import argparse
import copy
import math
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
from tritonscale.core.autoscale import plan_once  # noqa: E402
from tritonscale.core.spec import ScaledModelSpec, parse_manifest  # noqa: E402
from tritonscale.sim.engine import SimConfig, SimRun  # noqa: E402
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


def pool_peaks(spec: ScaledModelSpec, run: SimRun) -> str:
    """Most replicas desired on each pool at any step, against its maxReplicas."""
    peak: dict[str, int] = {}
    for st in run.steps:
        per: dict[str, int] = {}
        for (_, pool), n in st.desired.items():
            per[pool] = per.get(pool, 0) + n
        for pool, n in per.items():
            peak[pool] = max(peak.get(pool, 0), n)
    return ", ".join(
        f"{p.name} {peak.get(p.name, 0)}/{p.max_replicas}"
        + (" EXCEEDED" if peak.get(p.name, 0) > p.max_replicas else "")
        for p in spec.node_pools)


def missed(spec: ScaledModelSpec, run: SimRun, cfg: SimConfig) -> str:
    """Minutes after warm-up whose SLO percentile missed, with their 10-s peak rate."""
    slo = spec.slo.latency
    lat = (run.done - run.arrivals) * 1000.0
    w = (run.arrivals // cfg.slo_window_s).astype(np.int64)
    out = []
    for k in np.unique(w):
        if k * cfg.slo_window_s < cfg.warmup_s:
            continue
        seg = lat[w == k]
        q = max(0, math.ceil(slo.percentile / 100.0 * len(seg)) - 1)
        if float(np.partition(seg, q)[q]) > slo.target_ms:
            arr = run.arrivals[w == k]
            peak = np.bincount(((arr - k * cfg.slo_window_s) // 10).astype(np.int64)).max()
            out.append(f"{int(k)} ({peak / 10:,.0f})")
    return ", ".join(out)


def standing(cascade: ScaledModelSpec, plain: ScaledModelSpec, arr: np.ndarray,
             plain_cost: float) -> str:
    """What holding the trace's highest 10-s rate all the time costs, both ways."""
    peak = float(np.bincount((arr // 10).astype(np.int64)).max()) / 10.0
    got = plan_once(cascade, peak)
    alone = plan_once(plain, peak)
    c = got.cost_per_hour or 0.0
    verdict = ("holds it" if got.slo_feasible else "cannot hold it within the pools")
    plain_verdict = ("holds it" if alone.slo_feasible
                     else "cannot hold it within the pools")
    return (f"holding the trace's 10-s peak ({peak:,.0f} req/s, +headroom) all the time: "
            f"cascade ${c:.2f}/h ({verdict}; {c / plain_cost:.2f}x the no-cascade run's "
            f"cost), no cascade ${alone.cost_per_hour or 0.0:.2f}/h ({plain_verdict})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "examples/bert-cascade.yaml"))
    ap.add_argument("--trace", default=str(ROOT / "examples/traces/azure_llm_conv_2023.csv"))
    ap.add_argument("--scale", type=float, default=500.0,
                    help="rate scale of the bundled trace (500: ~2,800 req/s)")
    ap.add_argument("--minutes", type=float, default=60.0, help="replay the first N minutes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--traces", choices=("both", "bundled", "bursty"), default="both",
                    help="which traces to replay (one only: shorter development runs)")
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
    runs = [("bundled Azure trace", base), ("generated bursty trace", bursty)]
    runs = [r for r, key in zip(runs, ("bundled", "bursty"), strict=True)
            if args.traces in ("both", key)]
    for label, arr in runs:
        arr = np.asarray(arr, dtype=np.float64)
        t0 = time.perf_counter()
        ra = run_policy(cascade, arr, "tritonscale", cfg)
        a = ra.summary
        a["policy"] = "cascade"
        rb = run_policy(plain, arr, "tritonscale", cfg)
        b = rb.summary
        b["policy"] = "no cascade"
        print(f"\n=== {label}: {len(arr):,} requests over {args.minutes:g} min, mean "
              f"{len(arr) / (args.minutes * 60):,.0f} req/s; SLO "
              f"p{cascade.slo.latency.percentile:g} <= {cascade.slo.latency.target_ms:g} ms, "
              f"floor {floor:g} ({time.perf_counter() - t0:.0f} s)")
        print(format_table([a, b]))
        print(f"accuracy served: cascade {a['accuracy']}, no cascade {b['accuracy']}")
        ratio = a["mean_cost_per_hour"] / b["mean_cost_per_hour"]
        print(f"cost ratio cascade / no cascade: {ratio:.3f}")
        for name, spec, res in (("cascade", cascade, ra), ("no cascade", plain, rb)):
            print(f"{name}: most replicas desired per pool: {pool_peaks(spec, res.run)}; "
                  f"missed minutes (10-s peak req/s): {missed(spec, res.run, cfg) or 'none'}")
        print(standing(cascade, plain, arr, b["mean_cost_per_hour"]))
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

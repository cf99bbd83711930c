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
every minute must pay when bursts are shorter than a replica's startup; and a looser,
optimistic lower bound (:func:`bound`) that lets the accuracy floor hold over the run
rather than at every instant (calm requests at the curve's best point, burst requests
as little escalated as the floor then allows, down to tier 1 alone).

    PYTHONPATH=operator python benchmarks/bench_cascade.py [--scale 500] [--minutes 60]
        [--traces both|bundled|bursty]
"""

from __future__ import annotations

import argparse
import copy
import itertools
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
from tritonscale.core import cascade as cc  # noqa: E402
from tritonscale.core import planner as pl  # noqa: E402
from tritonscale.core.autoscale import plan_once  # noqa: E402
from tritonscale.core.cascade_step import tier1_only  # noqa: E402
from tritonscale.core.spec import ScaledModelSpec, parse_manifest  # noqa: E402
from tritonscale.sim.engine import SimConfig, SimRun  # noqa: E402
from tritonscale.sim.report import run_policy  # noqa: E402
from tritonscale.sim.trace import load_trace, scale_trace  # noqa: E402

GOAL_WINDOWS = 0.99
GOAL_COST_RATIO = 0.6
# A 10-s window above this multiple of the trace's mean rate is a burst (bound()).
BURST_FACTOR = 3.0


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


def _escalation_for(points: list[tuple[float, float]], acc: float) -> float | None:
    """The least escalated fraction reaching ``acc`` on the piecewise-linear frontier
    of (escalated, accuracy) points (mixing two thresholds over time); None if above
    the best point."""
    if acc <= points[0][1]:
        return 0.0
    for (e0, a0), (e1, a1) in itertools.pairwise(points):
        if a0 < acc <= a1:
            return e0 + (e1 - e0) * (acc - a0) / (a1 - a0)
    return None


def _hot_windows(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Requests per 10-s window, and which windows are above BURST_FACTOR x the mean."""
    r10 = np.bincount((arr // 10).astype(np.int64))
    return r10, r10 > BURST_FACTOR * len(arr) / len(r10)


def bursts(spec: ScaledModelSpec, arr: np.ndarray) -> str:
    """The trace's bursts (runs of 10-s windows above BURST_FACTOR x the mean): how
    many, how long against the pools' quickest startup, and the requests they carry."""
    r10, hot = _hot_windows(arr)
    if not hot.any():
        return f"bursts: no 10-s window above {BURST_FACTOR:g}x the mean"
    edges = np.flatnonzero(np.diff(np.r_[0, hot.astype(np.int8), 0]))
    lengths = (edges[1::2] - edges[::2]) * 10
    startup = min(p.startup_seconds for p in spec.node_pools)
    short = int(np.count_nonzero(lengths < startup))
    return (f"bursts: {len(lengths)} runs of 10-s windows above {BURST_FACTOR:g}x the mean, "
            f"{lengths.min()}-{lengths.max()} s long ({short} of them shorter than the "
            f"pools' quickest startup, {startup:g} s), carrying "
            f"{r10[hot].sum() / len(arr):.1%} of the requests")


def unforeseen(arr: np.ndarray, cfg: SimConfig) -> str:
    """When the first burst comes, against the judged minutes.

    Capacity for a burst shorter than a replica's startup must stand when it starts.
    A policy learns of bursts only by seeing one, so the minute of the first burst
    after the warm-up is met only by a fleet already standing for a peak it has never
    seen: without that, at most all the other judged minutes are met.
    """
    hot = np.flatnonzero(_hot_windows(arr)[1])
    if not len(hot):
        return "first burst: none"
    first = float(hot[0]) * 10.0
    w = cfg.slo_window_s
    minutes = int(np.unique((arr // w).astype(np.int64)).size)
    judged = minutes - math.ceil(cfg.warmup_s / w)
    at = int(first // w)
    if first < cfg.warmup_s:
        return (f"first burst at {first:.0f} s, in the warm-up (minute {at}): it is seen "
                f"before the {judged} judged minutes")
    return (f"first burst at {first:.0f} s, in judged minute {at}, before any burst was "
            f"seen: without capacity standing for a peak never seen, at most "
            f"{judged - 1}/{judged} judged minutes ({(judged - 1) / judged:.3f}) are met")


def router(summary: dict[str, Any]) -> str:
    """What the simulated router did: fallbacks, the requests it held per pod (in its
    threads or waiting for one) and those it dropped because their client had gone."""
    peak = summary.get("router_peak") or [0, 0]
    gone = summary.get("router_abandoned") or [0, 0]
    return (f"cascade router: {summary.get('fallback')} of answers were tier 1's after a "
            f"failed or late tier-2 call; most requests one pod's router held (in its "
            f"{summary.get('router_threads')} threads per stage or waiting for one): "
            f"{peak[0]:,} in its tier-1 stage, {peak[1]:,} in its tier-2 stage; dropped "
            f"without a call because the client had gone: {gone[0]:,} before tier 1, "
            f"{gone[1]:,} before tier 2")


def bound(spec: ScaledModelSpec, arr: np.ndarray, plain_cost: float) -> str:
    """What meeting the SLO in every minute at the floor costs at least, on this trace.

    Bursts (10-s windows above BURST_FACTOR x the mean) shorter than a replica's
    startup are met only by capacity standing when they start, and they come at
    random times, so it stands all the time: tier 1 for the trace's 10-s peak. The
    floor over the run sets how many burst requests must escalate: with every other
    request at the curve's most accurate point, the burst requests need the rest, on
    the frontier from tier 1 alone to the curve's points (two thresholds mixed over
    time). Tier 2 must stand for that fraction of the peak: either all of it in time,
    or (generous to the policy) less the whole share the percentile lets miss in
    the burst minute that has the most other requests, as if every late request were
    an escalated one. Both tiers get the whole latency budget
    and no headroom (an optimistic bound).
    """
    cas = spec.cascade
    assert cas is not None
    slo = spec.slo.latency
    floor = spec.slo.min_accuracy
    r10 = np.bincount((arr // 10).astype(np.int64)).astype(np.float64) / 10.0
    mean = len(arr) / max(float(arr[-1]), 1.0)
    hot = r10 > BURST_FACTOR * mean
    share = float(r10[hot].sum() / r10.sum())
    if not hot.any():
        return (f"lower bound for every minute at the floor: no 10-s window above "
                f"{BURST_FACTOR:g}x the mean, no burst to stand for")
    peak = float(r10.max())
    # Each minute's requests over its burst requests (at most): how far the minute's
    # share the percentile lets miss stretches over its burst requests.
    n = len(r10) - len(r10) % 6
    per_min = r10[:n].reshape(-1, 6)
    hot_min = np.where(hot[:n].reshape(-1, 6), per_min, 0.0).sum(axis=1)
    stretch = float(max(per_min.sum(axis=1)[hot_min > 0] / hot_min[hot_min > 0],
                        default=1.0))
    t1 = tier1_only(spec)
    frontier = [(t1.escalated, t1.accuracy), *sorted(
        (p.escalated, p.accuracy) for p in cas.points if p.escalated > t1.escalated)]
    best = max(a for _, a in frontier)
    need = (floor - (1.0 - share) * best) / share if share > 0 else floor
    e = _escalation_for(frontier, need)
    head = (f"bursts (10-s rate > {BURST_FACTOR:g}x mean) carry {share:.1%} of requests; "
            f"with the rest at the curve's best ({best:g}) they need accuracy {need:.4f}")
    if e is None:
        return head + ": above the curve's best, no policy keeps the floor"
    budget = slo.target_ms - cas.hop_ms

    def stand(variant: str, load: float, used: dict[str, int]) -> pl.Plan | None:
        combos = cc._reduced(cc.tier_candidates(spec, variant, (), slo.percentile, budget),
                             used)
        return pl.solve(combos, pl.Request(load, 0.0, 1 if load > 0 else 0,
                                           spec.scaling.max_replicas, None))

    p1 = stand(cas.first.variant, peak, {})
    if p1 is None:
        return head + f", {e:.1%} escalated; tier 1 cannot hold the peak within the pools"
    used = cc._pool_use(p1)
    out = [head + f" ({e:.1%} of them escalated)"]
    allowance = (1.0 - slo.percentile / 100.0) * stretch
    for what, frac in (("all escalations in time", e),
                       ("the whole p95 allowance spent on escalations",
                        max(0.0, e - allowance))):
        p2 = stand(cas.last.variant, frac * peak, used)
        if p2 is None:
            out.append(f"{what}: tier 2 cannot stand for {frac * peak:,.0f} req/s")
            continue
        cost = p1.cost_per_hour + p2.cost_per_hour
        out.append(f"{what}: {pl.describe(p1)} -> {pl.describe(p2)} at ${cost:.2f}/h "
                   f"({cost / plain_cost:.2f}x the no-cascade run's cost)")
    return "lower bound for every minute at the floor: " + "; ".join(out)


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
        print(router(a))
        ratio = a["mean_cost_per_hour"] / b["mean_cost_per_hour"]
        print(f"cost ratio cascade / no cascade: {ratio:.3f}")
        for name, spec, res in (("cascade", cascade, ra), ("no cascade", plain, rb)):
            print(f"{name}: most replicas desired per pool: {pool_peaks(spec, res.run)}; "
                  f"missed minutes (10-s peak req/s): {missed(spec, res.run, cfg) or 'none'}")
        print(bursts(cascade, arr))
        print(unforeseen(arr, cfg))
        print(standing(cascade, plain, arr, b["mean_cost_per_hour"]))
        print(bound(cascade, arr, b["mean_cost_per_hour"]))
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

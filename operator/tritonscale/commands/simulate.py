"""``tritonscale simulate``: replay an arrival trace against policies and compare them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tritonscale.commands import inputs
from tritonscale.core.batcher import ABANDONED
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.sim.engine import DEFAULT_PREROLL_S, LOAD_BALANCING, SimConfig, StepRecord
from tritonscale.sim.policies import POLICIES, HPAConfig
from tritonscale.sim.report import PolicyResult, run_policy

HELP = "replay an arrival trace against policies and compare cost and SLO"
DEFAULT_RATE_SCALE = 500.0

COLUMNS = (
    ("policy", "policy", "{}"),
    ("runs_on", "runs on", "{}"),
    ("requests", "requests", "{:,}"),
    ("slo_attainment", "SLO att.", "{:.4f}"),
    ("windows_met", "win. met", "{:.3f}"),
    ("warmup_windows_met", "warm-up", "{:.3f}"),
    ("cost_usd", "cost $", "{:.2f}"),
    ("mean_cost_per_hour", "$/h", "{:.3f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("dropped", "dropped", "{:,}"),
    ("timed_out", "timed out", "{:,}"),
    ("max_replicas", "max rep.", "{}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="ScaledModel YAML (whole object or spec)")
    parser.add_argument(
        "--trace",
        required=True,
        help="arrival trace CSV: Azure LLM format (TIMESTAMP) or one 'timestamp_s' per row",
    )
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=DEFAULT_RATE_SCALE,
        help=f"multiply the arrival rate, keeping the trace's shape (default "
        f"{DEFAULT_RATE_SCALE:g}: the bundled Azure trace then averages ~2,800 req/s)",
    )
    parser.add_argument(
        "--policy", default="all", choices=[*POLICIES, "all"], help="policy to replay"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for scaling and preemptions")
    parser.add_argument("--json", action="store_true", help="one JSON object per policy")
    parser.add_argument("--plot", metavar="OUT.png", help="draw the replay (needs matplotlib)")
    parser.add_argument(
        "--preemptions-per-hour",
        type=float,
        default=0.0,
        help="mean spot preemptions per hour per spot pool (default 0: none)",
    )
    parser.add_argument("--hpa-metric", choices=["utilisation", "latency"], default="utilisation")
    parser.add_argument(
        "--hpa-target",
        type=float,
        default=None,
        help="HPA target: utilisation fraction (default 0.7) or latency ms (default SLO target)",
    )
    parser.add_argument(
        "--load-balancing",
        choices=list(LOAD_BALANCING),
        default=None,
        help="how requests spread over Ready replicas: random (kube-proxy iptables; "
        "the default for spec.routing.mode service), round-robin (IPVS rr) or weighted "
        "(by the policy's route weights; the default for spec.routing.mode gateway)",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a request still queued this long is abandoned and counted as timed out "
        "(default: the spec's scaling.clientTimeoutSeconds, else 30; 0 = clients wait "
        "forever)",
    )
    parser.add_argument(
        "--abandoned",
        choices=list(ABANDONED),
        default="cancelled",
        help="what Triton does with a request whose client timed out while it was "
        "queued (measured on Triton 2.51, tests/real/test_abandoned_real.py): cancelled "
        "(the default; gRPC clients: it leaves the queue unserved unless the batcher had "
        "already taken it into the batch it prepares, which is computed whole: under "
        "sustained overload most of the GPU then goes to gone clients), rejected (a "
        "model queue policy, timeout_action REJECT, below the clients' timeout: it "
        "leaves the queue unserved) or computed (HTTP clients: the request stays queued "
        "and uses the GPU in its batch, only its response is discarded); either way it "
        "counts as timed out. A cascade's router drops a "
        "gone client's request itself, so the flag does not change a cascade",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="minutes starting in the first SECONDS are reported apart (default 300)",
    )
    parser.add_argument(
        "--preroll",
        type=float,
        default=DEFAULT_PREROLL_S,
        metavar="SECONDS",
        help="before the measured replay, run each policy on the trace's first minute "
        "until its fleet is settled, at most SECONDS (default "
        f"{DEFAULT_PREROLL_S:g}; 0 = start from the policy's initial fleet)",
    )
    parser.add_argument(
        "--baseline-variant",
        help="variant for hpa/kpa/static-peak (default: each one's fair choice, swept)",
    )
    parser.add_argument(
        "--baseline-pool",
        help="node pool for hpa/kpa/static-peak (default: each one's fair choice, swept "
        "over on-demand pools only when spec.scaling.spotProtection is set; a spot pool "
        "named here is used anyway, ignoring spotProtection)",
    )


def load_spec(path: str) -> ScaledModelSpec:
    """The ScaledModel at ``path``, read with the CLI's bounds (commands/inputs.py)."""
    return inputs.load_spec(path)


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for _, title, _ in COLUMNS]]
    for r in rows:
        cells.append([fmt.format(r[key]) for key, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for j, row in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(
                zip(row, widths, strict=True)))
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress_printer(policy: str, duration_s: float) -> Callable[[StepRecord], None]:
    """A step callback drawing one self-overwriting progress line on stderr."""
    last = [-1]

    def show(step: StepRecord) -> None:
        pct = int(100 * step.t / duration_s) if duration_s > 0 else 100
        if pct == last[0]:
            return
        last[0] = pct
        sys.stderr.write(
            f"\r\033[K{policy}: {pct:3d}% ({step.t / 60:.1f} of {duration_s / 60:.1f} min "
            f"replayed, {sum(step.desired.values())} replicas)"
        )
        sys.stderr.flush()

    return show


def client_timeout(spec: ScaledModelSpec, option: float | None) -> float:
    """The replay's client patience in seconds (0 = forever): ``--client-timeout``
    when given, else the spec's ``scaling.clientTimeoutSeconds`` (every policy faces
    the clients the spec describes), else the simulator's default."""
    if option is not None:
        return float(option)
    spec_t = spec.scaling.client_timeout_seconds
    if spec_t is not None:
        return float(spec_t)
    dflt = SimConfig().client_timeout_s
    return 0.0 if dflt is None else float(dflt)


def run(args: argparse.Namespace) -> int:
    try:
        spec, arrivals = inputs.simulate_inputs(args)
    except inputs.InputError as e:
        print(inputs.clip(f"error: {e}"), file=sys.stderr)
        return inputs.EXIT_BAD_INPUT
    timeout = client_timeout(spec, args.client_timeout)
    if not (timeout >= 0 and timeout < float("inf")):
        print(f"error: --client-timeout: {timeout!r} must be >= 0 seconds", file=sys.stderr)
        return 2
    if not (args.warmup >= 0 and args.warmup < float("inf")):
        print(f"error: --warmup: {args.warmup!r} must be >= 0 seconds", file=sys.stderr)
        return 2
    cfg = SimConfig(
        warmup_s=args.warmup,
        seed=args.seed,
        preemption_rate_per_hour=args.preemptions_per_hour,
        load_balancing=args.load_balancing
        or ("weighted" if spec.routing.weighted else "random"),
        client_timeout_s=timeout if timeout > 0 else None,
        abandoned=args.abandoned,
        preroll_max_s=args.preroll,
    )
    duration = float(arrivals[-1]) if len(arrivals) else 0.0
    show_progress = not args.json and sys.stderr.isatty()
    target = args.hpa_target
    if target is None:
        target = 0.7 if args.hpa_metric == "utilisation" else spec.slo.latency.target_ms
    # maxReplicas: the pool's, whichever pool the HPA runs on.
    hpa = HPAConfig(metric=args.hpa_metric, target=target)
    names = list(POLICIES) if args.policy == "all" else [args.policy]
    results: list[PolicyResult] = []
    for name in names:
        try:
            res = run_policy(
                spec, arrivals, name, cfg, hpa if name == "hpa" else None,
                args.baseline_variant, args.baseline_pool,
                progress=(lambda label: progress_printer(label, duration))
                if show_progress else None,
            )
        except (KeyError, ValueError) as e:
            print(f"error: policy {name}: {e}", file=sys.stderr)
            return 2
        if show_progress:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        if args.json:
            print(json.dumps(res.summary), flush=True)
        results.append(res)
    if not args.json:
        slo = spec.slo.latency
        dur = float(arrivals[-1]) if len(arrivals) else 0.0
        print(
            f"{len(arrivals):,} requests over {dur / 60:.1f} min "
            f"(rate scale {args.rate_scale:g}, mean {len(arrivals) / max(dur, 1e-9):,.0f} req/s); "
            f"SLO p{slo.percentile:g} <= {slo.target_ms:g} ms"
        )
        print(format_table([r.summary for r in results]))
        for r in results:
            if "note" in r.summary:
                print(f"note: {r.summary['policy']}: {r.summary['note']}")
    if args.plot:
        from tritonscale.sim.plot import plot_runs

        plot_runs(spec, results, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0

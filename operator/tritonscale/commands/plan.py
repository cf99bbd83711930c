"""``tritonscale plan``: one planning decision for a steady load, explained."""

from __future__ import annotations

import argparse
import json
import sys

from tritonscale.commands.inputs import EXIT_BAD_INPUT, InputError, check_number, clip, load_spec
from tritonscale.core.autoscale import plan_once

HELP = "make one planning decision for a given load and explain it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="ScaledModel YAML (whole object or spec)")
    parser.add_argument("--rps", required=True, type=float, help="steady arrival rate (req/s)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


# Far beyond any one model's traffic; keeps the planner's arithmetic in range.
MAX_RPS = 1e9


def run(args: argparse.Namespace) -> int:
    try:
        check_number(args.rps, "--rps", low=0.0, high=MAX_RPS)
        spec = load_spec(args.spec)
    except InputError as e:
        print(clip(f"error: {e}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    d = plan_once(spec, args.rps)
    if args.json:
        out = {
            "rps": args.rps,
            "reason": d.reason,
            "placements": [
                {"variant": p.variant, "pool": p.pool, "replicas": p.replicas}
                for p in d.placements
            ],
            "cost_per_hour": round(d.cost_per_hour, 4),
            "predicted_latency_ms": d.predicted_latency_ms,
            "slo_feasible": d.slo_feasible,
            "binding_constraint": d.binding_constraint,
            "runner_up": d.runner_up,
            "runner_up_cost_per_hour": d.runner_up_cost_per_hour,
            "message": d.message,
            "details": dict(d.details),
        }
        print(json.dumps(out))
        return 0
    slo = spec.slo.latency
    print(f"load {args.rps:g} rps (+{spec.scaling.headroom:.0%} headroom), "
          f"SLO p{slo.percentile:g} <= {slo.target_ms:g} ms")
    print(f"reason:    {d.reason}")
    for p in d.placements:
        print(f"  {p.replicas} x {p.variant} on {p.pool}")
    if d.predicted_latency_ms is not None:
        print(f"predicted: p{slo.percentile:g} {d.predicted_latency_ms:.1f} ms")
    print(f"cost:      ${d.cost_per_hour:.3f}/h")
    print(f"binding:   {d.binding_constraint}")
    if d.runner_up:
        print(f"runner-up: {d.runner_up} at ${d.runner_up_cost_per_hour or 0.0:.3f}/h")
    print(d.message)
    return 0

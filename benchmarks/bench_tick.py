"""Decisions per second of the reconciler's tick, in-process, for many ScaledModels.

The operator's CPU per decision without the API server, the watch or Kopf: ``--count``
ScaledModels (bench_scale.py's, ``metrics.source: none``) ticked by one
:class:`Reconciler` against an in-memory API that keeps each model's Deployments and
status (a status patch is merged into the body the next tick reads, as the watch
would deliver it). Two phases, each timed with ``time.process_time``:

1. **settling**: the first ``--settle`` decisions of every model (the first five
   change status: the held plan counts its failures, then the initial plan), every
   one writing a status patch;
2. **steady**: ``--rounds`` more decisions of every model, with nothing changing
   (status unchanged, no API call).

Prints ms of CPU per decision and decisions per second of one core per phase, and
the number of status patches written. ``--profile N`` prints cProfile's top N
functions (cumulative) of the steady phase. ``--baseline-ref REF`` also runs the
same benchmark, in the same run, against the ``operator/`` package of git ref
``REF`` (extracted with ``git archive`` into a temporary directory) and prints the
ratio of its CPU per decision to this tree's. A benchmark: it prints, it asserts
nothing about timings.

    PYTHONPATH=operator python benchmarks/bench_tick.py --count 2000 --baseline-ref 6188d4e
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if "BENCH_TICK_OPERATOR" not in os.environ:
    sys.path.insert(0, str(ROOT / "operator"))
else:  # the baseline run: the package of another git ref
    sys.path.insert(0, os.environ["BENCH_TICK_OPERATOR"])
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tritonscale.core.status import merge_patch  # noqa: E402
from tritonscale.handlers.reconcile import Reconciler  # noqa: E402
from tritonscale.handlers.signals import SpecSignalSource  # noqa: E402


class MemKube:
    """In-memory API for many ScaledModels: Deployments and status per model."""

    def __init__(self, bodies: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.bodies = bodies
        self.deployments: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.patches = 0

    def list_deployments(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        return list(self.deployments.get((namespace, scaledmodel), {}).values())

    def list_backend_services(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        return []

    def get_scaledmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bodies.get((namespace, name))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None  # nothing foreign: the ownership checks find no namesake

    def apply(self, obj: Any) -> dict[str, Any]:
        if obj.get("kind") == "Deployment":
            meta = obj["metadata"]
            owner = meta["ownerReferences"][0]["name"]
            dep = dict(obj)
            n = obj["spec"]["replicas"]
            dep["status"] = {"replicas": n, "readyReplicas": n, "availableReplicas": n}
            self.deployments.setdefault((meta["namespace"], owner), {})[meta["name"]] = dep
        return dict(obj)

    def delete_deployment(self, namespace: str, name: str) -> None:
        for deps in self.deployments.values():
            deps.pop(name, None)

    def delete_service(self, namespace: str, name: str) -> None:
        return None

    def delete_configmap(self, namespace: str, name: str) -> None:
        return None

    def delete_route(self, kind: str, namespace: str, name: str) -> None:
        return None

    def patch_status(self, namespace: str, name: str, status: Any) -> None:
        self.patches += 1
        body = self.bodies[(namespace, name)]
        body["status"] = merge_patch(body.get("status") or {}, status)

    def event(self, *args: Any, **kwargs: Any) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--count", type=int, default=2000, help="ScaledModels (default 2000)")
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--settle", type=int, default=6,
                    help="decisions per model in the settling phase (default 6)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="decisions per model in the steady phase (default 3)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print cProfile's top N functions of the steady phase")
    ap.add_argument("--baseline-ref", metavar="REF",
                    help="also measure the operator package of this git ref, same run")
    args = ap.parse_args(argv)
    if args.baseline_ref:
        return compare(args)

    # Imported after tritonscale: bench_scale puts this tree's operator/ first on
    # sys.path (the baseline run must keep the other ref's package).
    from bench_scale import scaledmodel

    interval = 15.0
    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    for i in range(args.count):
        ns, name = f"bench-{i % args.namespaces:02d}", f"sm-{i:05d}"
        body = scaledmodel(ns, name, interval)
        body["metadata"].update(uid=f"u-{i}", generation=1)
        bodies[(ns, name)] = body
    kube = MemKube(bodies)
    now = [1.0e9]
    r = Reconciler(kube=kube, signals=SpecSignalSource(), clock=lambda: now[0])

    def phase(rounds: int) -> tuple[float, int, int]:
        decisions, patches0 = 0, kube.patches
        t0 = time.process_time()
        for _ in range(rounds):
            now[0] += interval
            for key in bodies:
                body = bodies[key]
                out = r.tick(body, list(kube.deployments.get(key, {}).values()))
                decisions += out is not None and out.decided
        return time.process_time() - t0, decisions, kube.patches - patches0

    print(f"bench_tick: {args.count} ScaledModels, in-process, one thread "
          f"(tritonscale from {Path(sys.modules['tritonscale'].__file__ or '').parent})",
          flush=True)
    for label, rounds in (("settling", args.settle), ("steady", args.rounds)):
        prof = cProfile.Profile() if args.profile and label == "steady" else None
        if prof is not None:
            prof.enable()
        cpu, decisions, patches = phase(rounds)
        if prof is not None:
            prof.disable()
        ms = 1000 * cpu / max(decisions, 1)
        print(f"  {label:9s} {decisions:6d} decisions  {ms:6.3f} ms CPU each  "
              f"{1000 / ms if ms > 0 else float('inf'):7.0f} decisions/s per core  "
              f"{patches} status patches", flush=True)
        if prof is not None:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
    return 0


def _run(argv: list[str], operator: Path | None) -> dict[str, float]:
    """One benchmark run in a fresh interpreter: ms per decision per phase."""
    env = dict(os.environ)
    if operator is not None:
        env["BENCH_TICK_OPERATOR"] = str(operator)
    out = subprocess.run([sys.executable, __file__, *argv], env=env, check=True,
                         capture_output=True, text=True, timeout=1800).stdout
    sys.stdout.write(out)
    return {m[1]: float(m[2]) for m in re.finditer(r"^ +(\w+) +\d+ decisions +([\d.]+) ms",
                                                  out, re.M)}


def compare(args: argparse.Namespace) -> int:
    argv = [f"--count={args.count}", f"--namespaces={args.namespaces}",
            f"--settle={args.settle}", f"--rounds={args.rounds}"]
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", args.baseline_ref, "operator"],
            check=True, capture_output=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True, timeout=120)
        print(f"baseline: operator/ at {args.baseline_ref}", flush=True)
        base = _run(argv, Path(tmp) / "operator")
        print("this tree:", flush=True)
        mine = _run(argv, None)
    for phase in ("settling", "steady"):
        if phase in base and phase in mine and mine[phase] > 0:
            print(f"  {phase}: {base[phase]:.3f} -> {mine[phase]:.3f} ms per decision, "
                  f"{base[phase] / mine[phase]:.2f}x the baseline's decisions/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

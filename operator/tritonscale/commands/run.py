"""``tritonscale run``: start the operator (Kopf) against the current cluster.

Examples::

    tritonscale run --all-namespaces
    tritonscale run --namespace ml --namespace ml-staging --peering tritonscale
    tritonscale run -A --liveness http://0.0.0.0:8080/healthz --metrics-port 9090

Credentials: the in-cluster service account, else the local kubeconfig.
Without ``--peering`` the operator runs standalone (one replica); with a peering
name, replicas coordinate through Kopf's peering objects (the KopfPeering /
ClusterKopfPeering CRDs must be installed) and only the highest ``--priority``
one is active.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import secrets
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HELP = "run the operator (Kopf) against the current cluster"
NAMESPACES_ENV = "TRITONSCALE_NAMESPACES"
ALLOWED_PROMETHEUS_ENV = "TRITONSCALE_ALLOWED_PROMETHEUS_URLS"
ALLOWED_IMAGES_ENV = "TRITONSCALE_ALLOWED_IMAGES"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed); "
        f"default from ${NAMESPACES_ENV} (comma separated), else all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch the whole cluster"
    )
    parser.add_argument(
        "--peering", metavar="NAME",
        help="Kopf peering name for high availability (default: standalone)",
    )
    parser.add_argument(
        "--priority", type=int, default=None,
        help="peering priority of this replica; the highest acts, equal priorities "
        "pause each other (default: random, so identical replicas elect one)",
    )
    parser.add_argument(
        "--liveness", metavar="URL", default="http://0.0.0.0:8080/healthz",
        help="Kopf liveness endpoint (default %(default)s; 'none' disables)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9090,
        help="port of the operator's Prometheus /metrics (default %(default)s; 0 disables)",
    )
    parser.add_argument(
        "--tick-seconds", type=float, default=1.0,
        help="resolution of the operator-wide tick loop; each ScaledModel decides once "
        "per its intervalSeconds, at its own phase (default %(default)s)",
    )
    parser.add_argument(
        "--tick-workers", type=int, default=4,
        help="ticks reconciled concurrently by the tick loop (default %(default)s)",
    )
    parser.add_argument(
        "--spec-workers", type=int, default=8,
        help="threads reconciling spec changes (create, update, resume): a lane of "
        "their own, ahead of ticks and Deployment events (default %(default)s)",
    )
    parser.add_argument(
        "--shards", type=int, default=1,
        help="split the ScaledModels over this many operators by uid hash "
        "(default %(default)s: one owns all)",
    )
    parser.add_argument(
        "--shard", type=int, default=0,
        help="which share this operator owns, 0 .. shards-1 (default %(default)s); "
        "give each shard its own --peering name",
    )
    parser.add_argument(
        "--peering-lifetime", type=int, default=60, metavar="SECONDS",
        help="how long a silent peer counts as alive: the failover delay after a "
        "replica dies (default %(default)s)",
    )
    parser.add_argument(
        "--pool-stall-seconds", type=float, default=120.0,
        help="a node pool whose Deployment stays unavailable for 2 x its startupSeconds, "
        "and at least this long, is avoided for a while (default %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=16, help="handler thread pool size (default 16)"
    )
    parser.add_argument(
        "--prometheus-rate-window", type=int, default=60, metavar="SECONDS",
        help="range of rate() in Prometheus queries; span at least 4 scrape intervals "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--api-timeout", type=float, default=10.0, metavar="SECONDS",
        help="client-side timeout of every Kubernetes API call the reconciler makes; a "
        "stalled API server holds a model no longer than this (default %(default)s)",
    )
    parser.add_argument(
        "--prometheus-max-timeout", type=float, default=10.0, metavar="SECONDS",
        help="cap on a ScaledModel's spec.metrics.prometheus.timeoutSeconds "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--allow-prometheus-url", action="append", default=[], metavar="URL",
        help="a Prometheus base URL ScaledModels may query (repeatable; the ScaledModel's "
        "URL must have the same scheme, host and port and a path at or below this one; "
        "'*' allows any). Default from $" + ALLOWED_PROMETHEUS_ENV + " (comma separated), "
        "else any URL (a warning is logged)",
    )
    parser.add_argument(
        "--allow-image", action="append", default=[], metavar="PATTERN",
        help="a glob pattern spec.model.tritonImage must match (repeatable, e.g. "
        "'nvcr.io/nvidia/tritonserver:*'); a ScaledModel with another image gets "
        "SpecValid=False (ImageNotAllowed) and nothing is applied. Default from $"
        + ALLOWED_IMAGES_ENV + " (comma separated), else any image",
    )
    parser.add_argument(
        "--debug-memory", metavar="DIR", type=Path, default=None,
        help="profiling aid: on SIGUSR1 write a census of live Python objects by type "
        "(count, shallow bytes) to DIR/census-<n>.txt",
    )
    parser.add_argument(
        "--debug-tracemalloc", action="store_true",
        help="with --debug-memory: also trace allocations and write a tracemalloc "
        "snapshot DIR/tracemalloc-<n>.snap on each SIGUSR1 (slow: never in production)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format", choices=("full", "plain", "json"), default="full",
        help="log format (default %(default)s)",
    )


def scope_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Kopf's clusterwide/namespaces arguments from the flags and environment."""
    namespaces = [n for n in args.namespace if n]
    if not namespaces and not args.all_namespaces:
        env = os.environ.get(NAMESPACES_ENV, "")
        namespaces = [n.strip() for n in env.split(",") if n.strip()]
    if namespaces:
        return {"clusterwide": False, "namespaces": namespaces}
    return {"clusterwide": True, "namespaces": ()}


def scans_namespaces(scope: dict[str, Any]) -> bool:
    """Whether Kopf must list and watch Namespaces: only for glob or negated patterns.

    Exact names need no listing, and a namespace-scoped service account usually may
    not list Namespaces: Kopf would retry the 403 for ~55 s (its error backoffs) at
    every start before falling back to the exact names anyway. Kopf has one switch
    for both of its cluster scans, so with exact names it also stops watching CRDs:
    the ScaledModel CRD must exist when the operator starts (the chart installs it
    first)."""
    if scope["clusterwide"]:
        return False
    return any(any(c in n for c in "!*?,") for n in scope["namespaces"])


def prometheus_allowlist(args: argparse.Namespace) -> Any:
    """The operator's Prometheus URL allowlist from the flags, else the environment.

    ``None`` when neither is set: every URL that passes validation is allowed."""
    from tritonscale.adapters.prometheus import UrlAllowlist

    entries = [u for u in args.allow_prometheus_url if u.strip()]
    if not entries:
        env = os.environ.get(ALLOWED_PROMETHEUS_ENV, "")
        entries = [u for u in env.split(",") if u.strip()]
    if not entries:
        return None
    return UrlAllowlist.parse(entries)


def image_policy(args: argparse.Namespace) -> Any:
    """The operator's image allowlist from the flags, else the environment."""
    from tritonscale.core.admission import ImagePolicy

    entries = [p for p in args.allow_image if p.strip()]
    if not entries:
        entries = os.environ.get(ALLOWED_IMAGES_ENV, "").split(",")
    return ImagePolicy.parse(entries)


def peering_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.peering:
        priority = args.priority
        if priority is None:
            priority = secrets.randbelow(2**31 - 1) + 1
        return {"standalone": False, "peering_name": args.peering, "priority": priority}
    return {"standalone": True}


def shard_of_args(args: argparse.Namespace) -> Any:
    from tritonscale.core.fleet import Shard

    try:
        return Shard(args.shard, args.shards)
    except ValueError as e:
        raise SystemExit(f"tritonscale run: --shard/--shards: {e}") from e


def install_memory_dump(directory: Path, trace: bool = False, frames: int = 6) -> None:
    """On every SIGUSR1 write ``directory/census-<n>.txt`` (live objects by type) and,
    with ``trace``, ``directory/tracemalloc-<n>.snap`` (tracemalloc started now)."""
    import gc
    import tracemalloc

    directory.mkdir(parents=True, exist_ok=True)
    if trace:
        tracemalloc.start(frames)
    count = [0]

    def dump(signum: int, frame: Any) -> None:
        count[0] += 1
        n = count[0]
        if trace:
            tmp = directory / f"tracemalloc-{n}.tmp"
            tracemalloc.take_snapshot().dump(str(tmp))
            os.replace(tmp, directory / f"tracemalloc-{n}.snap")
        sizes: dict[str, list[int]] = {}
        for obj in gc.get_objects():
            t = type(obj)
            entry = sizes.setdefault(f"{t.__module__}.{t.__qualname__}", [0, 0])
            entry[0] += 1
            entry[1] += sys.getsizeof(obj)
        rows = sorted(sizes.items(), key=lambda kv: -kv[1][1])
        tmp = directory / f"census-{n}.tmp"
        tmp.write_text("".join(f"{b:>12} {c:>9} {name}\n" for name, (c, b) in rows[:200]))
        os.replace(tmp, directory / f"census-{n}.txt")  # whole or absent
        logging.getLogger("tritonscale").warning("memory dump %d written to %s", n, directory)

    signal.signal(signal.SIGUSR1, dump)


def run(args: argparse.Namespace) -> int:
    import kopf
    from kopf._core.engines.peering import detect_own_id

    from tritonscale.adapters.kube import KubeAdapter
    from tritonscale.adapters.metrics import OperatorMetrics
    from tritonscale.adapters.prometheus import PrometheusSignals
    from tritonscale.handlers import lifecycle  # registers the handlers
    from tritonscale.handlers.interruption import NodeNotices
    from tritonscale.handlers.reconcile import Reconciler
    from tritonscale.handlers.signals import SpecSignalSource
    from tritonscale.handlers.telemetry import MetricsListener
    from tritonscale.handlers.ticker import PeeringGate

    fmt = {"full": kopf.LogFormat.FULL, "plain": kopf.LogFormat.PLAIN,
           "json": kopf.LogFormat.JSON}[args.log_format]
    kopf.configure(verbose=args.verbose, log_format=fmt)
    if not args.verbose:
        lifecycle.quiet_event_handlers()
    log = logging.getLogger("tritonscale")
    try:
        allowlist = prometheus_allowlist(args)
    except ValueError as e:
        print(f"tritonscale run: --allow-prometheus-url: {e}", file=sys.stderr)
        return 2
    try:
        images = image_policy(args)
    except ValueError as e:
        print(f"tritonscale run: --allow-image: {e}", file=sys.stderr)
        return 2
    if allowlist is None:
        log.warning(
            "no Prometheus allowlist (--allow-prometheus-url / $%s): ScaledModels may "
            "make the operator query any http(s) URL", ALLOWED_PROMETHEUS_ENV,
        )
    for flag, value in (("--api-timeout", args.api_timeout),
                        ("--prometheus-max-timeout", args.prometheus_max_timeout)):
        if not value > 0:
            print(f"tritonscale run: {flag} must be positive", file=sys.stderr)
            return 2
    for flag, count in (("--spec-workers", args.spec_workers),
                        ("--tick-workers", args.tick_workers)):
        if count < 1:
            print(f"tritonscale run: {flag} must be at least 1", file=sys.stderr)
            return 2
    # Lanes: spec changes get threads of their own; ticks and Deployment events share
    # the background lane (handlers/lifecycle.py). Every thread may hold a connection.
    spec_executor = ThreadPoolExecutor(args.spec_workers, thread_name_prefix="spec")
    background_executor = ThreadPoolExecutor(args.tick_workers + 2,
                                              thread_name_prefix="background")
    kube = KubeAdapter.from_environment(
        pool_size=args.workers + args.spec_workers + args.tick_workers + 8,
        timeout_seconds=args.api_timeout)
    metrics = OperatorMetrics()
    reconciler = Reconciler(
        kube=kube,
        signals=SpecSignalSource(
            list_pods=kube.list_pods,
            prometheus_factory=functools.partial(
                PrometheusSignals.from_source, window_s=args.prometheus_rate_window,
                allowlist=allowlist, max_timeout_s=args.prometheus_max_timeout,
            ),
        ),
        interruptions=NodeNotices(kube.list_nodes, kube.list_pods),
        listeners=[MetricsListener(metrics)],
        pool_stall_floor_seconds=args.pool_stall_seconds,
        image_policy=images,
    )
    shard = shard_of_args(args)
    scope = scope_kwargs(args)
    peering = peering_kwargs(args)
    identity = detect_own_id(manual=False)
    gate = PeeringGate()
    if not peering["standalone"]:
        from tritonscale.adapters.peering import PeeringReader

        gate = PeeringGate(
            source=PeeringReader(None, args.peering),
            identity=str(identity), priority=int(peering["priority"]),
            clusterwide=bool(scope["clusterwide"]),
        )
    memo = kopf.Memo(
        reconciler=reconciler, max_workers=args.workers, metrics=metrics, shard=shard,
        tick_seconds=args.tick_seconds, tick_workers=args.tick_workers, gate=gate,
        peering_lifetime=args.peering_lifetime,
        spec_executor=spec_executor, background_executor=background_executor,
        scan_cluster=bool(scope["clusterwide"]) or scans_namespaces(scope),
    )
    if args.metrics_port > 0:
        metrics.serve(args.metrics_port)
    log.info(
        "tritonscale operator starting: %s, %s, %s, tick loop every %.1fs (handlers: %s)",
        "cluster-wide" if scope["clusterwide"] else f"namespaces {scope['namespaces']}",
        f"peering {args.peering!r} priority {peering['priority']} as {identity}"
        if args.peering else "standalone",
        shard, args.tick_seconds, lifecycle.__name__,
    )
    liveness = None if args.liveness in ("", "none") else args.liveness
    if args.debug_memory is not None:  # after the imports: tracemalloc sees what grows
        install_memory_dump(args.debug_memory, trace=args.debug_tracemalloc)
    try:
        kopf.run(
            liveness_endpoint=liveness,
            memo=memo,
            identity=identity,
            **scope,
            **peering,
        )
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    except asyncio.CancelledError:  # pragma: no cover
        return 1
    finally:
        for executor in (spec_executor, background_executor):
            executor.shutdown(wait=False, cancel_futures=True)
    sys.stdout.flush()
    return 0

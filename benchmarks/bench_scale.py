"""Scale benchmark: the operator with many ScaledModels on a real control plane.

Starts its own local control plane (etcd, kube-apiserver, controller-manager,
scheduler, KWOK; tests/harness/k8s), KWOK GPU nodes with room for every replica, the CRD,
``--namespaces`` namespaces, and the operator as a subprocess (``tritonscale run
--all-namespaces``). Then:

1. **burst**: creates ``--count`` ScaledModels (spread over the namespaces,
   ``minReplicas: 1``, ``metrics.source: none`` so no metrics backend is needed)
   and times each from its creation to ``status.observedGeneration ==
   metadata.generation`` (seen through a watch);
2. **steady**: leaves them alone for ``--steady-seconds`` (the operator-wide tick
   loop decides for each every ``--interval`` seconds, nothing else changes) and
   measures the operator's CPU over that window;
3. **updates**: during the steady window, changes the spec of ``--updates``
   ScaledModels one at a time, spaced evenly, and times each from the patch to
   ``observedGeneration`` catching up (the latency a user sees under load).

Prints operator CPU (user+sys seconds from /proc, average cores per phase), peak
RSS (VmHWM), reconcile latency p50/p99 from the operator's own histogram
``tritonscale_reconcile_duration_seconds`` and from the end-to-end timings, and
the ratios to the goals (issue 12): update p99 <= 5 x the API server's GET p99
measured in the same run (a GET of one ScaledModel by this script every 0.5 s
during the steady window: the baseline moves with the machine's load), peak RSS <
400 MiB, steady CPU < 0.5 cores. A benchmark: it prints, it asserts nothing
about timings. ``--json`` prints ONE JSON object on stdout (the human report goes
to stderr) with ``update_p99_s``, ``api_get_p99_s``, ``rss_mib`` (peak),
``cpu_cores`` (steady average) and the rest.

    PYTHONPATH=operator python benchmarks/bench_scale.py --count 200
    PYTHONPATH=operator python benchmarks/bench_scale.py --count 2000 --namespaces 20 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.harness.k8s import Cluster, k8s_binaries, wait_for  # noqa: E402
from tests.harness.k8s.cluster import NODE_POOL_LABEL  # noqa: E402
from tests.harness.operator import OperatorProcess, ProcStats  # noqa: E402

from tritonscale.core.api import GROUP, PLURAL, VERSION  # noqa: E402

POOL_NODES = "bench-gpu"
PODS_PER_NODE = 250
GOAL_UPDATE_VS_GET = 5.0  # update p99 <= 5 x the API server's GET p99, same run
GOAL_CPU = 0.5
GOAL_RSS_MIB = 400.0


def scaledmodel(namespace: str, name: str, interval: float) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ScaledModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                # One ScaledModel per Triton model name and namespace (core/admission.py):
                # a shared name would leave all but one ModelNameConflict (invalid, cheap).
                "name": name,
                "repository": "s3://models/resnet50",
                "tritonImage": "nvcr.io/nvidia/tritonserver:24.10-py3",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            },
            "variants": [
                {
                    "name": "int8",
                    "precision": "int8",
                    "accuracy": 0.757,
                    "configName": "int8",
                    "profiles": [
                        {
                            "accelerator": "T4",
                            "maxBatchSize": 64,
                            "maxQueueDelayMs": 2,
                            "batches": [
                                {"size": 1, "latencyMs": 1.0},
                                {"size": 64, "latencyMs": 11.25},
                            ],
                        }
                    ],
                }
            ],
            "nodePools": [
                {
                    "name": "t4",
                    "accelerator": "T4",
                    "capacityType": "onDemand",
                    "pricePerHour": 0.526,
                    "maxReplicas": 4,
                    "startupSeconds": 30,
                    "nodeSelector": {NODE_POOL_LABEL: POOL_NODES},
                }
            ],
            "slo": {"latency": {"percentile": 99, "targetMs": 25}, "minAccuracy": 0.75},
            "scaling": {"minReplicas": 1, "maxReplicas": 4, "intervalSeconds": interval},
            "metrics": {"source": "none"},
        },
    }


# --------------------------------------------------------------------------- timing


class Watcher:
    """Watches every ScaledModel; records when observedGeneration reaches a target."""

    def __init__(self, cluster: Cluster) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(cluster.api_client())
        self.lock = threading.Lock()
        # key -> (generation to wait for, start time); done -> latency
        self.waiting: dict[str, tuple[int, float]] = {}
        self.seen: dict[str, tuple[int, float]] = {}  # key -> (observedGeneration, when)
        self.phases: dict[str, str] = {}
        self.invalid: set[str] = set()  # keys whose SpecValid condition is False
        self.slowest: dict[str, list[tuple[float, str]]] = {}  # phase -> (latency, key)
        self.latencies: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def expect(self, key: str, generation: int, started: float, phase: str) -> None:
        with self.lock:
            og, when = self.seen.get(key, (0, 0.0))
            if og >= generation:  # the watch was faster than the caller
                self.latencies.setdefault(phase, []).append(max(0.0, when - started))
                return
            self.waiting[key] = (generation, started)
            self.phases[key] = phase

    def pending(self) -> int:
        with self.lock:
            return len(self.waiting)

    def _run(self) -> None:
        from kubernetes import watch

        rv = ""
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                kwargs: dict[str, Any] = {"timeout_seconds": 60, "allow_watch_bookmarks": True}
                if rv:
                    kwargs["resource_version"] = rv
                for ev in w.stream(
                    self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                ):
                    obj = ev["object"]
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion", rv)
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._saw(obj)
                    if self._stop.is_set():
                        break
            except Exception:  # expired resourceVersion, connection reset: relist
                rv = ""
                time.sleep(0.5)
            finally:
                w.stop()

    def _saw(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        status = obj.get("status") or {}
        og = int(status.get("observedGeneration") or 0)
        invalid = any(c.get("type") == "SpecValid" and c.get("status") == "False"
                      for c in status.get("conditions") or ())
        with self.lock:
            if invalid:
                self.invalid.add(key)
            else:
                self.invalid.discard(key)
            if og > self.seen.get(key, (0, 0.0))[0]:
                self.seen[key] = (og, now)
            want = self.waiting.get(key)
            if want is not None and og >= want[0]:
                del self.waiting[key]
                phase = self.phases.pop(key)
                self.latencies.setdefault(phase, []).append(now - want[1])
                self.slowest.setdefault(phase, []).append((now - want[1], key))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _finite(v: Any) -> Any:
    """JSON has no NaN: missing measurements become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def histogram_quantiles(
    text: str, name: str, qs: tuple[float, ...]
) -> tuple[dict[float, float], int]:
    """Quantiles of a Prometheus histogram (summed over labels), interpolated in buckets."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        labels, value = line.rsplit(" ", 1)
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        bound = math.inf if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    if not buckets:
        return {q: math.nan for q in qs}, 0
    bounds = sorted(buckets)
    total = buckets[math.inf]
    out = {}
    for q in qs:
        rank = q / 100.0 * total
        prev_b, prev_c = 0.0, 0.0
        for b in bounds:
            c = buckets[b]
            if c >= rank:
                if math.isinf(b):
                    out[q] = prev_b
                else:
                    frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
                    out[q] = prev_b + (b - prev_b) * frac
                break
            prev_b, prev_c = b, c
    return out, int(total)


def cpu_between(a: ProcStats, b: ProcStats, seconds: float) -> tuple[float, float]:
    used = b.cpu_s - a.cpu_s
    return used, used / seconds if seconds > 0 else math.nan


class _MemKube:
    """In-memory API for :func:`compute_cost`: keeps what is applied, no copies."""

    def __init__(self) -> None:
        self.deployments: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}

    def list_deployments(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        return list(self.deployments.values())

    def list_backend_services(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        return []

    def get_scaledmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Deployment":
            return self.deployments.get(name)
        return None

    def apply(self, obj: Any) -> dict[str, Any]:
        if obj.get("kind") == "Deployment":
            dep = dict(obj)
            n = obj["spec"]["replicas"]
            dep["status"] = {"replicas": n, "readyReplicas": n, "availableReplicas": n}
            self.deployments[obj["metadata"]["name"]] = dep
        return dict(obj)

    def delete_deployment(self, namespace: str, name: str) -> None:
        self.deployments.pop(name, None)

    def delete_service(self, namespace: str, name: str) -> None:
        return None

    def delete_configmap(self, namespace: str, name: str) -> None:
        return None

    def delete_route(self, kind: str, namespace: str, name: str) -> None:
        return None

    def patch_status(self, namespace: str, name: str, status: Any) -> None:
        self.status.update(status)

    def event(self, *args: Any, **kwargs: Any) -> None:
        return None


def compute_cost(interval: float, n: int = 300) -> tuple[float, float, float]:
    """Operator CPU per decision without the API: (reconcile ms, copy ms, not-due tick µs).

    One ScaledModel of the benchmark, reconciled ``n`` times in-process against an
    in-memory API (status written back into the body as the API server would)."""
    from tritonscale.handlers.lifecycle import plain
    from tritonscale.handlers.reconcile import Reconciler
    from tritonscale.handlers.signals import SpecSignalSource

    body = scaledmodel("bench-00", "sm-00000", interval)
    body["metadata"].update(uid="u-0", generation=1, annotations={"x": "y" * 1500})
    kube = _MemKube()
    now = [1.0e9]
    r = Reconciler(kube=kube, signals=SpecSignalSource(), clock=lambda: now[0])
    for _ in range(8):  # past the InitialPlan and the failure threshold
        now[0] += interval
        r.tick(plain(body))
        body["status"] = dict(kube.status)
    t0 = time.process_time()
    for _ in range(n):
        now[0] += interval
        r.tick(plain(body))
    per_tick = (time.process_time() - t0) / n
    t0 = time.process_time()
    for _ in range(n):
        plain(body)
    per_copy = (time.process_time() - t0) / n
    t0 = time.process_time()
    for _ in range(n * 10):
        r.due(body)
    per_due = (time.process_time() - t0) / (n * 10)
    return 1000 * per_tick, 1000 * per_copy, 1e6 * per_due


def snapshot(operator: OperatorProcess, directory: Path, n: int) -> None:
    """Ask the operator (``--debug-memory``) for dump ``n`` and wait for it."""
    os.kill(operator.pid, signal.SIGUSR1)
    path = directory / f"census-{n}.txt"
    wait_for(path.exists, timeout=300, interval=1.0, what=f"memory dump {path}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500, help="ScaledModels (goal 2,000)")
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--interval", type=float, default=15.0, help="spec.scaling.intervalSeconds")
    ap.add_argument("--tick-seconds", type=float, default=1.0, help="operator --tick-seconds")
    ap.add_argument("--steady-seconds", type=float, default=120.0)
    ap.add_argument("--updates", type=int, default=40, help="spec updates timed while steady")
    ap.add_argument("--create-threads", type=int, default=4)
    ap.add_argument("--burst-timeout", type=float, default=900.0)
    ap.add_argument("--workdir", type=Path, help="keep the cluster's workdir here")
    ap.add_argument("--memory-dumps", type=Path, metavar="DIR",
                    help="profiling: run the operator with --debug-memory DIR and take a "
                    "census of its objects after the burst and at the end")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="with --memory-dumps: tracemalloc snapshots too (slows the operator "
                    "a lot: the numbers are then not comparable)")
    ap.add_argument("--operator-arg", action="append", default=[], metavar="ARG",
                    help="extra argument of `tritonscale run` (repeatable), e.g. "
                    "--operator-arg=--log-format=json")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object on stdout (the report goes to stderr)")
    args = ap.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    rec_ms, copy_ms, due_us = compute_cost(args.interval)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tritonscale-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_scale: {args.count} ScaledModels over {args.namespaces} namespaces; "
        f"workdir {workdir}",
        flush=True, file=out,
    )
    cluster = Cluster(k8s_binaries(), workdir / "cluster")
    operator: OperatorProcess | None = None
    watcher: Watcher | None = None
    ok = False
    try:
        t = time.monotonic()
        cluster.start()
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "scaledmodel.yaml"))
        # `kubectl wait` fails outright while the new CRD has no status yet: retry.
        wait_for(
            lambda: cluster.kubectl(
                "wait", "--for=condition=Established", "crd/scaledmodels.tritonscale.io",
                "--timeout=10s", check=False,
            ).returncode == 0,
            timeout=60, interval=0.5, what="the ScaledModel CRD Established",
        )
        nodes = max(1, math.ceil(args.count * 1.1 / PODS_PER_NODE))
        cluster.add_node_pool(
            POOL_NODES,
            gpus_per_node=PODS_PER_NODE,
            count=nodes,
            cpu="1000",
            memory="4000Gi",
            pods=PODS_PER_NODE,
        )
        namespaces = [f"bench-{i:02d}" for i in range(args.namespaces)]
        for ns in namespaces:
            cluster.create_namespace(ns)
        print(
            f"control plane, {nodes} KWOK nodes and namespaces ready in "
            f"{time.monotonic() - t:.0f} s",
            flush=True, file=out,
        )

        operator = OperatorProcess(
            kubeconfig=cluster.kubeconfig,
            workdir=workdir / "operator",
            tick_seconds=args.tick_seconds,
            extra_args=[
                *args.operator_arg,
                *(["--debug-memory", str(args.memory_dumps)] if args.memory_dumps else []),
                *(["--debug-tracemalloc"] if args.tracemalloc else []),
            ],
        ).start()
        time.sleep(3.0)
        s_start = operator.stats()
        t_start = time.monotonic()

        from kubernetes import client

        api = client.CustomObjectsApi(cluster.api_client())
        watcher = Watcher(cluster)
        watcher.start()
        time.sleep(1.0)

        # ---- burst
        names = [(namespaces[i % len(namespaces)], f"sm-{i:05d}") for i in range(args.count)]

        def create(item: tuple[str, str]) -> None:
            ns, name = item
            body = scaledmodel(ns, name, args.interval)
            started = time.monotonic()
            for attempt in range(5):
                try:
                    obj = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                    break
                except Exception:
                    if attempt == 4:
                        raise
                    time.sleep(1.0)
            watcher.expect(f"{ns}/{name}", int(obj["metadata"]["generation"]), started, "burst")

        t_burst = time.monotonic()
        with ThreadPoolExecutor(args.create_threads) as pool:
            list(pool.map(create, names))
        t_created = time.monotonic()
        print(
            f"created {args.count} in {t_created - t_burst:.1f} s; waiting for status...",
            flush=True, file=out,
        )
        deadline = time.monotonic() + args.burst_timeout
        while watcher.pending() and time.monotonic() < deadline:
            time.sleep(1.0)
        t_burst_done = time.monotonic()
        s_burst = operator.stats()
        burst_lat = watcher.latencies.get("burst", [])
        metrics_after_burst = operator.metrics()
        if args.memory_dumps:
            snapshot(operator, args.memory_dumps, 1)

        # ---- steady (+ spaced spec updates, + the API's own latency as a baseline)
        api_lat: list[float] = []
        probing = threading.Event()

        def probe() -> None:
            i = 0
            while not probing.wait(0.5):
                ns, name = names[i % len(names)]
                i += 7
                t0 = time.monotonic()
                try:
                    api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                    api_lat.append(time.monotonic() - t0)
                except Exception:
                    pass

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        s_steady0 = operator.stats()
        t_steady0 = time.monotonic()
        gap = args.steady_seconds / max(1, args.updates + 1)
        for k in range(args.updates):
            time.sleep(gap)
            ns, name = names[(k * 7919) % len(names)]  # distinct models (7919 is prime)
            started = time.monotonic()
            obj = api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                name,
                {"spec": {"scaling": {"maxReplicas": 3}}},  # from 4: a real spec change
            )
            watcher.expect(f"{ns}/{name}", int(obj["metadata"]["generation"]), started, "update")
        rest = t_steady0 + args.steady_seconds - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        t_steady1 = time.monotonic()
        s_steady1 = operator.stats()
        probing.set()
        metrics_end = operator.metrics()
        if args.memory_dumps:
            snapshot(operator, args.memory_dumps, 2)
        update_lat = watcher.latencies.get("update", [])
        ok = True

        # ---- report
        pods = len(cluster.get_json("pods", "-A", "-l", "tritonscale.io/scaledmodel")["items"])
        burst_cpu, burst_cores = cpu_between(s_start, s_burst, t_burst_done - t_start)
        steady_cpu, steady_cores = cpu_between(s_steady0, s_steady1, t_steady1 - t_steady0)
        total_cpu, total_cores = cpu_between(s_start, s_steady1, t_steady1 - t_start)
        hq_burst, n_burst = histogram_quantiles(
            metrics_after_burst, "tritonscale_reconcile_duration_seconds", (50, 99)
        )
        hq_end, n_end = histogram_quantiles(
            metrics_end, "tritonscale_reconcile_duration_seconds", (50, 99)
        )
        rss_mib = s_steady1.hwm_kib / 1024.0
        update_ratio = percentile(update_lat, 99) / percentile(api_lat, 99)
        unfinished = watcher.pending()
        with watcher.lock:
            invalid = len(watcher.invalid)

        def ms(x: float) -> str:
            return f"{1000 * x:8.1f} ms"

        lines = [
            "",
            f"== bench_scale: {args.count} ScaledModels, {args.namespaces} namespaces, "
            f"interval {args.interval:g} s, operator tick {args.tick_seconds:g} s ==",
            f"pods (KWOK): {pods}; not yet reconciled at the end: {unfinished}; "
            f"SpecValid=False (not really served): {invalid}",
            f"burst:  created in {t_created - t_burst:6.1f} s, all observed in "
            f"{t_burst_done - t_burst:6.1f} s",
            f"  create -> observedGeneration   p50 {ms(percentile(burst_lat, 50))}  "
            f"p99 {ms(percentile(burst_lat, 99))}  max {ms(max(burst_lat, default=math.nan))}"
            f"  (n={len(burst_lat)})",
            f"  operator histogram (burst)     p50 {ms(hq_burst[50])}  p99 {ms(hq_burst[99])}"
            f"  (n={n_burst})",
            f"  CPU {burst_cpu:7.1f} s over {t_burst_done - t_start:6.1f} s = "
            f"{burst_cores:.3f} cores",
            f"steady: {t_steady1 - t_steady0:6.1f} s with {len(update_lat)} spec updates",
            f"  update -> observedGeneration   p50 {ms(percentile(update_lat, 50))}  "
            f"p99 {ms(percentile(update_lat, 99))}  max {ms(max(update_lat, default=math.nan))}",
            f"  operator histogram (whole run) p50 {ms(hq_end[50])}  p99 {ms(hq_end[99])}"
            f"  (n={n_end}, {n_end - n_burst} during steady)",
            "  slowest updates: " + ", ".join(
                f"{k} {v:.1f} s" for v, k in sorted(watcher.slowest.get("update", []))[-3:]),
            f"  baseline: GET of one ScaledModel by this script  p50 "
            f"{ms(percentile(api_lat, 50))}  p99 {ms(percentile(api_lat, 99))}  (n={len(api_lat)})",
            f"  CPU {steady_cpu:7.1f} s over {t_steady1 - t_steady0:6.1f} s = "
            f"{steady_cores:.3f} cores",
            f"whole run: CPU {total_cpu:.1f} s over {t_steady1 - t_start:.1f} s = "
            f"{total_cores:.3f} cores; peak RSS (VmHWM) {rss_mib:.1f} MiB; "
            f"RSS after the burst {s_burst.rss_kib / 1024:.1f} MiB, now "
            f"{s_steady1.rss_kib / 1024:.1f} MiB",
            f"in-process, no API: one decision {rec_ms:.2f} ms CPU (incl. body copy "
            f"{copy_ms:.2f} ms); a tick before intervalSeconds {due_us:.1f} us; "
            f"{args.count} models every {args.interval:g} s = "
            f"{args.count / args.interval * rec_ms / 1000:.3f} cores for decisions",
            "goals (value / goal, <= 1 meets it):",
            f"  update p99 / ({GOAL_UPDATE_VS_GET:g} x API GET p99)      "
            f"{update_ratio / GOAL_UPDATE_VS_GET:6.3f}  "
            f"(update p99 = {update_ratio:.2f} x GET p99)",
            f"  CPU average, steady / {GOAL_CPU:g} core         {steady_cores / GOAL_CPU:6.3f}",
            f"  peak RSS / {GOAL_RSS_MIB:g} MiB                  {rss_mib / GOAL_RSS_MIB:6.3f}",
        ]
        print("\n".join(lines), flush=True, file=out)
        if unfinished:
            print(f"warning: {unfinished} ScaledModels never reached their generation",
                  flush=True, file=out)
        if invalid:
            print(f"warning: {invalid} ScaledModels are invalid (cheap to reconcile): the "
                  "numbers flatter the operator", flush=True, file=out)
        if args.json:
            result = {
                "count": args.count, "namespaces": args.namespaces,
                "interval_s": args.interval, "tick_seconds": args.tick_seconds,
                "update_p50_s": percentile(update_lat, 50),
                "update_p99_s": percentile(update_lat, 99),
                "update_max_s": max(update_lat, default=math.nan),
                "updates": len(update_lat),
                "api_get_p50_s": percentile(api_lat, 50),
                "api_get_p99_s": percentile(api_lat, 99),
                "api_gets": len(api_lat),
                "update_p99_over_api_get_p99": update_ratio,
                "rss_mib": rss_mib,
                "rss_now_mib": s_steady1.rss_kib / 1024.0,
                "rss_after_burst_mib": s_burst.rss_kib / 1024.0,
                "cpu_cores": steady_cores,
                "cpu_cores_whole_run": total_cores,
                "burst_p50_s": percentile(burst_lat, 50),
                "burst_p99_s": percentile(burst_lat, 99),
                "burst_seconds": t_burst_done - t_burst,
                "reconcile_p99_s": hq_end[99],
                "not_reconciled": unfinished,
                "invalid": invalid,
                "goals": {
                    "update_p99_le_5x_api_get_p99": update_ratio <= GOAL_UPDATE_VS_GET,
                    "rss_mib_lt_400": rss_mib < GOAL_RSS_MIB,
                    "cpu_cores_lt_0.5": steady_cores < GOAL_CPU,
                },
            }
            print(json.dumps({k: _finite(v) for k, v in result.items()}), flush=True)
    finally:
        if watcher is not None:
            watcher.stop()
        if operator is not None:
            if not ok:
                print(operator.tail(40), file=sys.stderr)
            operator.stop()
        cluster.stop()
        if ok and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""A fleet emulator: Triton-format metrics for every Running pod of a ScaledModel.

KWOK pods run no container, so nothing would export Triton's metrics. For the
closed loop (operator -> API server -> scheduler/KWOK -> pods -> Prometheus ->
operator) this emulator stands in for the Triton servers: it offers a load that
follows a (compressed) trace, spreads it evenly over the Ready pods (as the
Service does), and for each pod derives throughput and latency from the
performance model of the pod's (variant, accelerator) profile. It exports, per
pod, the series real Triton exports with ``--metrics-config
summary_latencies=true``: ``nv_inference_request_success``/``_failure``,
``nv_inference_count``, ``nv_inference_request_duration_us``,
``nv_inference_queue_duration_us``, ``nv_inference_pending_request_count`` and
``nv_inference_request_summary_us{quantile=...}``.

Prometheus scrapes it through ``file_sd`` targets (one per pod, distinguished by
``__metrics_path__``) carrying the labels a real scrape configuration would add
(namespace, pod, ``tritonscale_io_variant``, ``tritonscale_io_pool``).

It also keeps score of the *emulated* SLO: the share of requests served while the
fleet's predicted percentile (max over pods) met the target, and the share of
one-minute windows meeting it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tritonscale.core.perf import predict_replica
from tritonscale.core.spec import ScaledModelSpec

QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    variant: str
    pool: str
    ready: bool


@dataclass
class _PodCounters:
    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0
    queue_us: float = 0.0
    pending: float = 0.0
    quantiles_us: dict[float, float] = field(default_factory=dict)
    info: PodInfo | None = None


@dataclass
class Score:
    requests: float = 0.0
    requests_within: float = 0.0
    windows: dict[int, list[float]] = field(default_factory=dict)  # window -> [req, ok_req]

    @property
    def attainment(self) -> float:
        return self.requests_within / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class Sample:
    """One emulator step: time since start, offered load, Ready pods, worst percentile."""

    t: float
    dt: float
    load_rps: float
    ready: int
    worst_ms: float


class FleetEmulator:
    def __init__(
        self,
        spec: ScaledModelSpec,
        load_rps: Callable[[float], float],
        list_pods: Callable[[], Sequence[PodInfo]],
        sd_file: Path,
        scaledmodel: str,
        tick_s: float = 0.5,
        window_s: float = 60.0,
    ) -> None:
        self.spec = spec
        self.scaledmodel = scaledmodel
        self.load_rps = load_rps
        self.list_pods = list_pods
        self.sd_file = sd_file
        self.tick_s = tick_s
        self.window_s = window_s
        self.pods: dict[str, _PodCounters] = {}
        self.score = Score()
        self.history: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ http
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[0] == "metrics":
                    body = emu.render(f"{parts[1]}/{parts[2]}")
                    if body is not None:
                        data = body.encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "text/plain; version=0.0.4")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                self.send_response(404)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    def render(self, pod_key: str) -> str | None:
        with self._lock:
            c = self.pods.get(pod_key)
            if c is None or c.info is None:
                return None
            model = self.spec.model.name
            lab = f'model="{model}",version="1"'
            lines = [
                "# TYPE nv_inference_request_success counter",
                f"nv_inference_request_success{{{lab}}} {c.success:.3f}",
                "# TYPE nv_inference_request_failure counter",
                f'nv_inference_request_failure{{{lab},reason="REJECTED"}} {c.failure:.3f}',
                "# TYPE nv_inference_count counter",
                f"nv_inference_count{{{lab}}} {c.success:.3f}",
                "# TYPE nv_inference_request_duration_us counter",
                f"nv_inference_request_duration_us{{{lab}}} {c.duration_us:.1f}",
                "# TYPE nv_inference_queue_duration_us counter",
                f"nv_inference_queue_duration_us{{{lab}}} {c.queue_us:.1f}",
                "# TYPE nv_inference_pending_request_count gauge",
                f"nv_inference_pending_request_count{{{lab}}} {c.pending:.3f}",
                "# TYPE nv_inference_request_summary_us summary",
            ]
            for q in QUANTILES:
                v = c.quantiles_us.get(q, math.nan)
                lines.append(f'nv_inference_request_summary_us{{{lab},quantile="{q}"}} {v:.1f}')
            lines.append(f"nv_inference_request_summary_us_count{{{lab}}} {c.success:.3f}")
            lines.append(f"nv_inference_request_summary_us_sum{{{lab}}} {c.duration_us:.1f}")
            return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ loop
    def step(self, now: float, dt: float) -> None:
        """Advance the emulated fleet by ``dt`` seconds at wall time ``now``."""
        pods = [p for p in self.list_pods()]
        ready = [p for p in pods if p.ready]
        load = max(0.0, self.load_rps(now - self._t0))
        target = self.spec.slo.latency.target_ms
        pct = self.spec.slo.latency.percentile
        worst = 0.0 if ready else math.inf
        with self._lock:
            live_keys = {f"{p.namespace}/{p.name}" for p in pods}
            for k in list(self.pods):
                if k not in live_keys:
                    del self.pods[k]
            per_pod = load / len(ready) if ready else 0.0
            for p in pods:
                c = self.pods.setdefault(f"{p.namespace}/{p.name}", _PodCounters())
                c.info = p
                if not p.ready:
                    continue
                prof = self.spec.variant(p.variant).profile_for(self.spec.pool(p.pool).accelerator)
                if prof is None:
                    self.errors.append(f"pod {p.name}: no profile for {p.variant}/{p.pool}")
                    continue
                pt = predict_replica(prof, per_pod, pct)
                served = per_pod
                if not math.isfinite(pt.latency_ms):
                    # Overloaded: it serves at saturation, the rest is rejected
                    # and latency is what a full queue gives (bounded for export).
                    mu = 1000.0 * prof.max_batch_size / max(pt.cycle_ms, 1e-6)
                    served = min(per_pod, mu)
                    c.failure += (per_pod - served) * dt
                    lat_ms = 10.0 * target
                    c.quantiles_us = {q: lat_ms * 1000.0 for q in QUANTILES}
                else:
                    lat_ms = pt.latency_ms
                    c.quantiles_us = {
                        q: predict_replica(prof, per_pod, q * 100.0).latency_ms * 1000.0
                        for q in QUANTILES
                    }
                mean_ms = predict_replica(prof, per_pod, 50.0).latency_ms
                if not math.isfinite(mean_ms):
                    mean_ms = lat_ms
                c.success += served * dt
                c.duration_us += served * dt * mean_ms * 1000.0
                c.queue_us += served * dt * max(0.0, mean_ms - pt.cycle_ms) * 1000.0
                c.pending = served * mean_ms / 1000.0
                worst = max(worst, lat_ms)
            # Score: every offered request counts; it is "within" when the fleet's
            # predicted percentile (max over pods) meets the target.
            reqs = load * dt
            ok = reqs if worst <= target else 0.0
            self.score.requests += reqs
            self.score.requests_within += ok
            window = int((now - self._t0) // self.window_s)
            w = self.score.windows.setdefault(window, [0.0, 0.0])
            w[0] += reqs
            w[1] += ok
            self.history.append(Sample(now - self._t0, dt, load, len(ready), worst))
        self._write_sd(pods)

    def _write_sd(self, pods: Sequence[PodInfo]) -> None:
        targets = [
            {
                "targets": [f"127.0.0.1:{self.port}"],
                "labels": {
                    "__metrics_path__": f"/metrics/{p.namespace}/{p.name}",
                    "namespace": p.namespace,
                    "pod": p.name,
                    "tritonscale_io_scaledmodel": self.scaledmodel,
                    "tritonscale_io_variant": p.variant,
                    "tritonscale_io_pool": p.pool,
                },
            }
            for p in pods
        ]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.sd_file)  # atomic, as file_sd requires

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            try:
                self.step(now, now - last)
            except Exception as e:  # keep emulating; the test inspects errors
                self.errors.append(repr(e))
            last = now

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._write_sd([])
        for target in (self._server.serve_forever, self._loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def windows_met(self, skip_windows: int = 0) -> float:
        """Share of windows (``window_s`` long, from the start) meeting the SLO: at
        least the SLO's percentile of their requests were served within target."""
        ws = [w for m, w in self.score.windows.items() if m >= skip_windows and w[0] > 0]
        if not ws:
            return 1.0
        need = self.spec.slo.latency.percentile / 100.0
        return sum(1 for w in ws if w[1] >= w[0] * need) / len(ws)

    def attainment_since(self, t: float) -> float:
        """Share of the requests offered after ``t`` (s since start) served while the
        fleet's predicted percentile met the target."""
        target = self.spec.slo.latency.target_ms
        with self._lock:
            req = sum(s.load_rps * s.dt for s in self.history if s.t >= t)
            ok = sum(s.load_rps * s.dt for s in self.history if s.t >= t and s.worst_ms <= target)
        return ok / req if req else 1.0


def pod_lister(api_client: object, namespace: str, scaledmodel: str) -> Callable[[], list[PodInfo]]:
    """List a ScaledModel's Running pods from the API server (KWOK makes them Running).

    Terminating pods are left out (the Service stops routing to them); a pod is
    ready when its Ready condition is True.
    """
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    selector = f"tritonscale.io/scaledmodel={scaledmodel}"

    def pods() -> list[PodInfo]:
        out = []
        for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
            meta, status = pod.metadata, pod.status
            if meta.deletion_timestamp is not None or status is None:
                continue
            if status.phase != "Running":
                continue
            labels = meta.labels or {}
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
            out.append(
                PodInfo(
                    name=meta.name,
                    namespace=namespace,
                    variant=labels.get("tritonscale.io/variant", ""),
                    pool=labels.get("tritonscale.io/pool", ""),
                    ready=ready,
                )
            )
        return out

    return pods

"""Shared helpers of the ``tests/real`` suite (the fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests.harness.real.servers import (
    PrometheusServer,
    ScrapeTarget,
    TritonServer,
    find_triton,
    write_model,
)

from tritonscale.core.spec import Profile

NAMESPACE = "prod"
MODEL = "sleepy"  # the Triton model name, i.e. spec.model.name
HOSTILE_NAMESPACE = 'ns"}or vector(1)#'
HOSTILE_MODEL = 'a"} or vector(1) # \\ \n\t é'


@dataclass(frozen=True)
class Timing:
    """Service time of the sleepy model: a batch of b takes base_ms + per_item_ms * b."""

    base_ms: float
    per_item_ms: float
    max_batch: int = 8
    queue_delay_us: int = 2000

    def batch_ms(self, b: int) -> float:
        return self.base_ms + self.per_item_ms * b


class TritonFactory:
    """Starts real tritonservers; every one still running is stopped at session end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.install = find_triton()  # raises (fails the test) if the wheel is missing
        self.servers: list[TritonServer] = []

    def start(
        self, label: str, models: Mapping[str, Timing], args: Sequence[str] = ()
    ) -> TritonServer:
        workdir = self.log_dir / f"triton-{label}-{len(self.servers)}"
        workdir.mkdir(parents=True)
        server = TritonServer(workdir=workdir, models=list(models), install=self.install,
                              extra_args=tuple(args))
        server.repo.mkdir(parents=True)
        for name, t in models.items():
            write_model(
                server.repo,
                name,
                base_ms=t.base_ms,
                per_item_ms=t.per_item_ms,
                max_batch=t.max_batch,
                queue_delay_us=t.queue_delay_us,
            )
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for s in self.servers:
            s.stop()


def warm_up(server: TritonServer, model: str, requests: int = 3) -> None:
    """First inferences of a Python-backend model are slow (~70 ms); keep them out."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    try:
        t = httpclient.InferInput("INPUT", [1, 1], "FP32")
        t.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
        for _ in range(requests):
            client.infer(model, [t])
    finally:
        client.close()


@dataclass(frozen=True)
class Group:
    variant: str
    pool: str
    timing: Timing
    server: TritonServer


@dataclass(frozen=True)
class Fleet:
    """One ScaledModel served by two groups, scraped by one Prometheus.

    Targets carry the default LabelMapping labels (``tritonscale_io_variant``,
    ``tritonscale_io_pool``) and short aliases (``variant``, ``pool``) plus ``pod`` and
    ``scaledmodel``.  A second job scrapes the fp16 server again with hostile
    namespace/model label values, for the injection tests.
    """

    fp16: Group
    int8: Group
    prometheus: PrometheusServer

    @property
    def groups(self) -> tuple[Group, Group]:
        return (self.fp16, self.int8)


def fleet_targets(groups: tuple[Group, ...]) -> list[ScrapeTarget]:
    targets = [
        ScrapeTarget(
            address=f"127.0.0.1:{g.server.metrics_port}",
            labels={
                "namespace": NAMESPACE,
                "pod": f"{MODEL}-{g.variant}-{g.pool}-0",
                "scaledmodel": MODEL,
                "tritonscale_io_variant": g.variant,
                "tritonscale_io_pool": g.pool,
                "variant": g.variant,
                "pool": g.pool,
            },
        )
        for g in groups
    ]
    targets.append(
        ScrapeTarget(
            address=f"127.0.0.1:{groups[0].server.metrics_port}",
            labels={
                "namespace": HOSTILE_NAMESPACE,
                # A target label overrides Triton's own "model" label on every series.
                "model": HOSTILE_MODEL,
                "tritonscale_io_variant": groups[0].variant,
                "tritonscale_io_pool": groups[0].pool,
            },
            job="hostile",
        )
    )
    return targets


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``predicate()`` until truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# -- perf model vs the real server (test_perf_model_real.py, bench_perf_real.py) -------


def idle_client_overhead_ms(server: TritonServer, model: str, requests: int = 30) -> float:
    """Median of (client latency - Triton's own request duration) over isolated
    single-item requests: HTTP, tritonclient's Python and the server's front end,
    which the performance model (a replica's queue + compute time) does not contain."""
    import tritonclient.http as httpclient

    from tritonscale.adapters.triton import TritonPod

    pod = TritonPod(server.url)
    client = httpclient.InferenceServerClient(server.url)
    t = httpclient.InferInput("INPUT", [1, 1], "FP32")
    t.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
    gaps: list[float] = []
    try:
        for _ in range(requests):
            before = pod.statistics(model)
            start = time.perf_counter()
            client.infer(model, [t])
            client_ms = (time.perf_counter() - start) * 1000.0
            if before is None:
                continue
            after = pod.statistics_after(model, before, 1)
            if after is None:
                continue
            delta = after - before
            if delta.success.count == 1 and delta.success.mean_ms is not None:
                gaps.append(client_ms - delta.success.mean_ms)
    finally:
        client.close()
        pod.close()
    if len(gaps) < requests // 2:
        pytest.fail(f"statistics extension answered for only {len(gaps)}/{requests} requests")
    return sorted(gaps)[len(gaps) // 2]


PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True)
class PerfRow:
    """Predicted vs measured latency percentiles (ms, per PERCENTILES) at one load."""

    fraction: float  # of max_throughput_rps(profile)
    rps: float  # asked for
    achieved_rps: float
    requests: int
    max_lateness_ms: float  # worst send delay of the load generator
    errors: int
    predicted: tuple[float, ...]
    client: tuple[float, ...]  # client-side minus the idle client overhead
    raw: tuple[float, ...]  # client-side as measured
    server: tuple[float, ...]  # Triton's nv_inference_request_summary_us quantiles
    predicted_batch: float
    mean_batch: float  # inference_count / execution_count
    predicted_batch_ms: float  # S(predicted batch)
    mean_batch_ms: float  # mean compute time of one execution (statistics extension)

    def rel_errors(self, which: str = "client") -> tuple[float, ...]:
        """(predicted - measured) / measured; > 0 means the model is pessimistic."""
        measured = getattr(self, which)
        return tuple((p - m) / m for p, m in zip(self.predicted, measured, strict=True))


def reload_model(server: TritonServer, model: str) -> None:
    """Unload and load ``model``: resets Triton's latency summaries (they have no
    window a test can choose), then warms the fresh Python-backend instance up."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    try:
        client.unload_model(model)
        client.load_model(model)
    finally:
        client.close()
    warm_up(server, model)


def measure_perf_point(
    server: TritonServer,
    model: str,
    profile: Profile,
    fraction: float,
    *,
    overhead_ms: float,
    duration_s: float,
    seed: int,
    settle_s: float = 2.0,
) -> PerfRow:
    """Drive Poisson load at ``fraction`` of the profile's saturation throughput and
    compare the perf model's percentiles with the client's (leaving out the first
    ``settle_s`` of arrivals, while the queue fills) and with Triton's own summary."""
    import requests
    from tests.harness.real.load import percentile, run_poisson_load

    from tritonscale.adapters.triton import MetricsSnapshot, TritonPod
    from tritonscale.core import perf

    top = perf.max_throughput_rps(profile)
    rps = fraction * top
    point = perf.predict_replica(profile, rps, 50.0)
    predicted = tuple(perf.predict_replica(profile, rps, p).latency_ms for p in PERCENTILES)
    # Open loop needs a free worker per request in flight (Little: rate x latency),
    # with margin for the tail.
    workers = max(8, min(64, int(rps * 3.0 * predicted[-1] / 1000.0) + 4))
    reload_model(server, model)
    pod = TritonPod(server.url)
    try:
        before = pod.statistics(model)
        res = run_poisson_load(
            server.url, model, rate=rps, duration_s=duration_s, seed=seed, workers=workers
        )
        # Every answered request is in Triton's statistics, not only those in flight
        # when the load ended (Triton records them after replying).
        after = None if before is None else pod.statistics_after(model, before, len(res.ok_records))
    finally:
        pod.close()
    text = requests.get(server.metrics_url, timeout=5).text
    summary = MetricsSnapshot.parse(text, model, time.monotonic()).quantiles
    if before is None or after is None or not all(p / 100 in summary for p in PERCENTILES):
        pytest.fail(f"no statistics or latency summary from {server.url}: {summary}")
    delta = after - before
    executions = sum(b.count for b in delta.batches)
    compute_ms = sum(
        (b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns) for b in delta.batches
    )
    kept = [r for r in res.ok_records if r.scheduled >= res.started + settle_s]
    if len(kept) < 50 or executions == 0:
        pytest.fail(f"only {len(kept)} requests completed at {rps:.0f} req/s")
    raw = tuple(percentile([r.latency_ms for r in kept], p) for p in PERCENTILES)
    return PerfRow(
        fraction=fraction,
        rps=rps,
        achieved_rps=len(kept) / (duration_s - settle_s),
        requests=len(kept),
        max_lateness_ms=res.max_lateness_s * 1000.0,
        errors=res.errors,
        predicted=predicted,
        client=tuple(x - overhead_ms for x in raw),
        raw=raw,
        server=tuple(summary[p / 100] / 1000.0 for p in PERCENTILES),
        predicted_batch=point.batch,
        mean_batch=delta.inference_count / max(delta.execution_count, 1),
        predicted_batch_ms=perf.batch_latency_ms(profile, point.batch),
        mean_batch_ms=compute_ms / executions / 1e6,
    )


def measure_on_schedule(
    server: TritonServer,
    model: str,
    profile: Profile,
    fraction: float,
    *,
    overhead_ms: float,
    duration_s: float,
    seed: int,
    attempts: int,
    max_late_ms: float,
) -> list[PerfRow]:
    """:func:`measure_perf_point`, repeated with a new seed while the load generator sent
    a request more than ``max_late_ms`` late (a starved machine did not apply the asked
    load), at most ``attempts`` times. Every attempt's row; the last is the one to judge
    (still late if every attempt was)."""
    tried: list[PerfRow] = []
    for attempt in range(max(attempts, 1)):
        tried.append(measure_perf_point(server, model, profile, fraction,
                                        overhead_ms=overhead_ms, duration_s=duration_s,
                                        seed=seed + 1000 * attempt))
        if tried[-1].max_lateness_ms <= max_late_ms:
            break
    return tried


def perf_table(rows: list[PerfRow], goal: float | None = None) -> str:
    """Predicted vs measured table; with ``goal``, whether every |error| is within it."""

    def three(xs: tuple[float, ...]) -> str:
        return "/".join(f"{x:5.1f}" for x in xs)

    def errs(xs: tuple[float, ...]) -> str:
        return "/".join(f"{e * 100:+4.0f}%" for e in xs)

    lines = [
        "load req/s got/s late | predicted p50/p95/p99 | client-overhead      | "
        "Triton summary       | err vs client     | err vs Triton     | batch pred/got "
        "| S(b) pred/got" + (" | goal client/Triton" if goal is not None else "")
    ]
    for r in rows:
        line = (
            f"{r.fraction * 100:3.0f}% {r.rps:5.0f} {r.achieved_rps:5.0f} "
            f"{r.max_lateness_ms:4.0f} | "
            f"{three(r.predicted)}     | {three(r.client)}    | {three(r.server)}    | "
            f"{errs(r.rel_errors('client'))} | {errs(r.rel_errors('server'))} | "
            f"{r.predicted_batch:4.2f}/{r.mean_batch:4.2f}      | "
            f"{r.predicted_batch_ms:5.1f}/{r.mean_batch_ms:5.1f}"
        )
        if goal is not None:
            met = [all(abs(e) <= goal for e in r.rel_errors(w)) for w in ("client", "server")]
            line += " | " + "/".join("MET" if m else "MISSED" for m in met)
        lines.append(line)
    return "\n".join(lines)


def spec_profile_of(block: Mapping[str, object]) -> Profile:
    """The ``Profile`` the operator would use for a ``tritonscale profile`` block: it
    goes through the real spec parser, inside examples/resnet50.yaml's first variant."""
    import copy

    import yaml

    from tritonscale.core.spec import parse_spec

    example = Path(__file__).resolve().parents[3] / "examples" / "resnet50.yaml"
    spec = copy.deepcopy(yaml.safe_load(example.read_text())["spec"])
    accelerator = spec["nodePools"][0]["accelerator"]
    variant = spec["variants"][0]
    others = [p for p in variant.get("profiles", []) if p["accelerator"] != accelerator]
    variant["profiles"] = [*others, {**block, "accelerator": accelerator}]
    parsed = parse_spec(spec).variants[0].profile_for(accelerator)
    assert parsed is not None
    return parsed

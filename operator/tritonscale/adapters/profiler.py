"""``tritonscale profile``: measure a live Triton model for the ScaledModel spec.

Two measurements, both against the running server:

1. **Batch latency.**  For each batch size 1, 2, 4, ... up to ``max_batch`` (and
   ``max_batch`` itself) one request of that many items is sent at a time
   (concurrency 1, so the dynamic batcher never merges requests).  Around each
   request the statistics extension is read, and the delta of that batch size's
   compute time (input + infer + output) is that batch's server time; a sample in
   which other traffic also ran a batch of that size is discarded.  The *median* of
   the samples is the ``latencyMs`` the planner's performance model expects (the time
   one replica is busy with one batch): queueing and HTTP are excluded, and a few
   slow outliers (a busy host, a GC pause) do not move it.  Client-side
   p50/p95/p99 are reported alongside.
   Sizes are forced non-decreasing (the spec requires it), which only matters when
   measurement noise exceeds the difference between two sizes.
2. **Concurrency sweep.**  ``c`` closed-loop clients each send single-item requests
   back to back for a few seconds; throughput and client-side p50/p95/p99 per level.

The result prints as a table (stderr) and as a ``profiles`` YAML block (stdout or
``--output``) ready to paste under a variant::

    profiles:
    - accelerator: T4
      maxBatchSize: 8
      maxQueueDelayMs: 2.0
      batches:
      - {size: 1, latencyMs: 12.1}
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from tritonscale.adapters import resolve
from tritonscale.adapters.triton import ModelStatistics, TritonPod


class ProfileError(RuntimeError):
    """The model could not be profiled (unreachable, not ready, failing requests)."""


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in [0, 100]) of ``values``; NaN if empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class BatchMeasurement:
    size: int
    latency_ms: float  # server compute time of one batch (what goes in the spec)
    measured_ms: float  # before forcing monotonicity
    server_ms: float | None  # median from statistics; None if unavailable
    client_p50_ms: float
    client_p95_ms: float
    client_p99_ms: float
    samples: int


@dataclass(frozen=True)
class ConcurrencyPoint:
    concurrency: int
    requests: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int = 0


@dataclass(frozen=True)
class ProfileResult:
    model: str
    accelerator: str
    max_batch_size: int
    max_queue_delay_ms: float
    batches: tuple[BatchMeasurement, ...]
    sweep: tuple[ConcurrencyPoint, ...]

    def spec_profile(self) -> dict[str, Any]:
        """One entry of ``spec.variants[].profiles``."""
        return {
            "accelerator": self.accelerator,
            "maxBatchSize": self.max_batch_size,
            "maxQueueDelayMs": round(self.max_queue_delay_ms, 3),
            "batches": [
                {"size": b.size, "latencyMs": round(b.latency_ms, 3)} for b in self.batches
            ],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump({"profiles": [self.spec_profile()]}, sort_keys=False)

    def table(self) -> str:
        lines = [
            f"model {self.model} on {self.accelerator}: maxBatchSize {self.max_batch_size}, "
            f"maxQueueDelayMs {self.max_queue_delay_ms:g}",
            "",
            "batch  latencyMs  server_ms  client_p50  client_p95  client_p99  n",
        ]
        for b in self.batches:
            server = f"{b.server_ms:9.3f}" if b.server_ms is not None else "        -"
            lines.append(
                f"{b.size:5d}  {b.latency_ms:9.3f}  {server}  {b.client_p50_ms:10.3f}  "
                f"{b.client_p95_ms:10.3f}  {b.client_p99_ms:10.3f}  {b.samples}"
            )
        if self.sweep:
            lines += ["", "concurrency  req/s     p50_ms    p95_ms    p99_ms  requests  errors"]
            for c in self.sweep:
                lines.append(
                    f"{c.concurrency:11d}  {c.throughput_rps:7.1f}  {c.p50_ms:8.3f}  "
                    f"{c.p95_ms:8.3f}  {c.p99_ms:8.3f}  {c.requests:8d}  {c.errors:6d}"
                )
        return "\n".join(lines)


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch``, and ``max_batch`` itself."""
    sizes, s = [], 1
    while s <= max_batch:
        sizes.append(s)
        s *= 2
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


@dataclass(frozen=True)
class _InputSpec:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension


class _Requester:
    """One tritonclient connection sending requests of a given batch size."""

    def __init__(
        self, url: str, model: str, inputs: Sequence[_InputSpec], batched: bool, timeout_s: float
    ) -> None:
        import tritonclient.http as httpclient

        self._http = httpclient
        self.model = model
        self.inputs = inputs
        self.batched = batched
        self.client = httpclient.InferenceServerClient(
            url, connection_timeout=timeout_s, network_timeout=timeout_s
        )
        self._cache: dict[int, list[Any]] = {}

    def _tensors(self, size: int) -> list[Any]:
        if size not in self._cache:
            from tritonclient.utils import triton_to_np_dtype

            tensors = []
            for spec in self.inputs:
                shape = [size, *spec.dims] if self.batched else list(spec.dims)
                t = self._http.InferInput(spec.name, shape, spec.datatype)
                if spec.datatype == "BYTES":
                    data = np.full(shape, b"0", dtype=np.object_)
                else:
                    data = np.zeros(shape, dtype=triton_to_np_dtype(spec.datatype))
                t.set_data_from_numpy(data)
                tensors.append(t)
            self._cache[size] = tensors
        return self._cache[size]

    def send(self, size: int) -> float:
        """Send one request; its client-side latency in ms."""
        tensors = self._tensors(size)
        start = time.perf_counter()
        self.client.infer(self.model, tensors)
        return (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        self.client.close()


def _model_inputs(pod: TritonPod, model: str) -> tuple[list[_InputSpec], int, float]:
    config = pod.model_config(model)
    if config is None:
        raise ProfileError(f"cannot read the config of {model!r}: {pod.last_error}")
    max_batch = int(config.get("max_batch_size", 0) or 0)
    delay_us = 0.0
    dyn = config.get("dynamic_batching")
    if isinstance(dyn, Mapping):
        delay_us = float(dyn.get("max_queue_delay_microseconds", 0) or 0)
    inputs = []
    for inp in config.get("input", []):
        dims = tuple(int(d) if int(d) > 0 else 1 for d in inp.get("dims", []))
        datatype = str(inp.get("data_type", "TYPE_FP32")).removeprefix("TYPE_")
        datatype = "BYTES" if datatype == "STRING" else datatype
        inputs.append(_InputSpec(str(inp["name"]), datatype, dims))
    if not inputs:
        raise ProfileError(f"model {model!r} declares no inputs")
    return inputs, max_batch, delay_us / 1000.0


def _sweep_level(
    make: Callable[[], _Requester], concurrency: int, duration_s: float
) -> ConcurrencyPoint:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker() -> None:
        req = make()
        try:
            barrier.wait()
            mine: list[float] = []
            while time.perf_counter() < stop_at[0]:
                try:
                    mine.append(req.send(1))
                except Exception:
                    with lock:
                        errors[0] += 1
            with lock:
                latencies.extend(mine)
        finally:
            req.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration_s
    start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(duration_s + 60)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return ConcurrencyPoint(
        concurrency=concurrency,
        requests=len(latencies),
        throughput_rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        errors=errors[0],
    )


def profile(
    url: str,
    model: str,
    max_batch: int | None = None,
    *,
    accelerator: str,
    requests_per_batch: int = 20,
    warmup: int = 3,
    concurrency: Sequence[int] = (1, 2, 4, 8),
    sweep_seconds: float = 3.0,
    timeout_s: float = 30.0,
) -> ProfileResult:
    """Measure ``model`` on the Triton server at ``url`` (``host:port`` of HTTP).

    ``max_batch`` defaults to the model's ``max_batch_size``.  Raises
    :class:`ProfileError` if the model is not ready or requests fail.
    """
    url = url.removeprefix("http://")
    try:  # tritonclient's own lookups have no deadline: connect to the address
        url = resolve.pinned(url, timeout_s)
    except ValueError as e:
        raise ProfileError(f"Triton server {url}: {e}") from None
    pod = TritonPod(url, timeout_s=timeout_s)
    try:
        ready = pod.readiness(model)
        if not ready.ok:
            raise ProfileError(f"model {model!r} at {url} is not ready: {ready}")
        inputs, config_max, delay_ms = _model_inputs(pod, model)
        batched = config_max > 0
        top = max_batch if max_batch is not None else max(config_max, 1)
        if batched and top > config_max:
            raise ProfileError(f"max_batch {top} exceeds the model's max_batch_size {config_max}")
        if top < 1:
            raise ProfileError("max_batch must be >= 1")
        sizes = batch_sizes(top) if batched else [1]

        def make() -> _Requester:
            return _Requester(url, model, inputs, batched, timeout_s)

        batches: list[BatchMeasurement] = []
        req = make()
        try:
            floor = 0.0
            for size in sizes:
                for _ in range(warmup):
                    req.send(size)
                client: list[float] = []
                server_samples: list[float] = []
                for _ in range(requests_per_batch):
                    before = pod.statistics(model)
                    client.append(req.send(size))
                    after = None if before is None else pod.statistics_after(model, before, 1)
                    sample = _server_batch_ms(before, after, size)
                    if sample is not None:
                        server_samples.append(sample)
                server = percentile(server_samples, 50) if server_samples else None
                measured = server if server is not None else percentile(client, 50)
                floor = max(floor, measured)
                batches.append(
                    BatchMeasurement(
                        size=size,
                        latency_ms=floor,
                        measured_ms=measured,
                        server_ms=server,
                        client_p50_ms=percentile(client, 50),
                        client_p95_ms=percentile(client, 95),
                        client_p99_ms=percentile(client, 99),
                        samples=len(client),
                    )
                )
        except ProfileError:
            raise
        except Exception as exc:
            raise ProfileError(f"request to {model!r} failed: {exc}") from exc
        finally:
            req.close()
        sweep = tuple(_sweep_level(make, c, sweep_seconds) for c in concurrency if c >= 1)
        return ProfileResult(
            model=model,
            accelerator=accelerator,
            max_batch_size=top if batched else 1,
            max_queue_delay_ms=delay_ms,
            batches=tuple(batches),
            sweep=sweep,
        )
    finally:
        pod.close()


def _server_batch_ms(
    before: ModelStatistics | None, after: ModelStatistics | None, size: int
) -> float | None:
    """Compute time of the one batch of ``size`` run between two snapshots, or ``None``
    (statistics unavailable, or other traffic ran batches of that size too)."""
    if before is None or after is None:
        return None
    delta = (after - before).batch(size)
    return delta.compute_ms if delta.count == 1 else None


# -- command line ---------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be >= 1")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="localhost:8000", help="Triton HTTP host:port")
    parser.add_argument("--model", required=True, help="Triton model name")
    parser.add_argument(
        "--accelerator", help="accelerator name for the profile (e.g. T4); required "
        "unless --cascade"
    )
    parser.add_argument(
        "--max-batch", type=int, default=None, help="largest batch (default: model's)"
    )
    parser.add_argument("--requests-per-batch", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests per size")
    parser.add_argument(
        "--concurrency", type=_int_list, default=[1, 2, 4, 8], help="sweep levels, e.g. 1,2,4,8"
    )
    parser.add_argument("--sweep-seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument(
        "--out",
        "--output",
        "-o",
        dest="output",
        default="-",
        help="YAML destination (default stdout)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.accelerator:
        print("tritonscale profile: --accelerator is required", file=sys.stderr)
        return 2
    try:
        result = profile(
            args.url,
            args.model,
            args.max_batch,
            accelerator=args.accelerator,
            requests_per_batch=args.requests_per_batch,
            warmup=args.warmup,
            concurrency=args.concurrency,
            sweep_seconds=args.sweep_seconds,
            timeout_s=args.timeout,
        )
    except ProfileError as exc:
        print(f"tritonscale profile: {exc}", file=sys.stderr)
        return 1
    print(result.table(), file=sys.stderr)
    text = result.to_yaml()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonscale profile", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""Shared helpers of the ``tests/real`` suite (the fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from realservers import PrometheusServer, ScrapeTarget, TritonServer, find_triton, write_model

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

    def start(self, label: str, models: Mapping[str, Timing]) -> TritonServer:
        workdir = self.log_dir / f"triton-{label}-{len(self.servers)}"
        workdir.mkdir(parents=True)
        server = TritonServer(workdir=workdir, models=list(models), install=self.install)
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

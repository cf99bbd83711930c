"""Shared fixtures for the planner/simulator unit tests: small specs built in code."""

from __future__ import annotations

import copy
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.harness.fakes import load_example
from tests.harness.net import HUNG_HOST

from tritonscale.core.spec import ScaledModelSpec, parse_manifest, parse_spec
from tritonscale.router import router_source

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "resnet50.yaml"
AZURE_TRACE = ROOT / "examples" / "traces" / "azure_llm_conv_2023.csv"

# Two variants x three pools: "big" is accurate and slow, "small" fast and less accurate.
BASE: dict[str, Any] = {
    "model": {"name": "m", "repository": "s3://m"},
    "variants": [
        {
            "name": "big",
            "precision": "fp16",
            "accuracy": 0.80,
            "profiles": [
                {"accelerator": "T4", "maxBatchSize": 8, "maxQueueDelayMs": 1,
                 "batches": [{"size": 1, "latencyMs": 4.0}, {"size": 8, "latencyMs": 12.0}]},
                {"accelerator": "A100", "maxBatchSize": 8, "maxQueueDelayMs": 1,
                 "batches": [{"size": 1, "latencyMs": 1.5}, {"size": 8, "latencyMs": 4.0}]},
            ],
        },
        {
            "name": "small",
            "precision": "int8",
            "accuracy": 0.75,
            "profiles": [
                {"accelerator": "T4", "maxBatchSize": 8, "maxQueueDelayMs": 1,
                 "batches": [{"size": 1, "latencyMs": 2.0}, {"size": 8, "latencyMs": 5.0}]},
            ],
        },
    ],
    "nodePools": [
        {"name": "t4-spot", "accelerator": "T4", "capacityType": "spot",
         "pricePerHour": 0.2, "maxReplicas": 4, "startupSeconds": 60},
        {"name": "t4-od", "accelerator": "T4", "pricePerHour": 0.5, "maxReplicas": 4,
         "startupSeconds": 60},
        {"name": "a100-od", "accelerator": "A100", "pricePerHour": 3.0, "maxReplicas": 2,
         "startupSeconds": 120},
    ],
    "slo": {"latency": {"percentile": 99, "targetMs": 40}, "minAccuracy": 0.7},
    "scaling": {"minReplicas": 1, "maxReplicas": 10, "intervalSeconds": 15,
                "scaleDownStabilizationSeconds": 300, "headroom": 0.0},
    "metrics": {"source": "none"},
}


def build_spec(**patch: Any) -> ScaledModelSpec:
    """BASE with top-level sections updated (dicts merged one level deep)."""
    d = copy.deepcopy(BASE)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    return parse_spec(d)


@pytest.fixture
def make_spec() -> Callable[..., ScaledModelSpec]:
    return build_spec


@pytest.fixture(scope="session")
def resnet() -> ScaledModelSpec:
    return parse_manifest(yaml.safe_load(EXAMPLE.read_text()))[2]


@pytest.fixture
def resnet50() -> dict[str, Any]:
    return load_example("resnet50.yaml")


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The C resolver call under ``socket.getaddrinfo`` blocks for HUNG_HOST until the
    event is set (as glibc does for minutes when the DNS server drops queries).

    requests' ``timeout`` bounds connect and reads only, never the lookup, so before
    outbound.get had its own deadline every request to such a host blocked its
    caller -- a reconcile, a tick worker -- until the resolver gave up."""
    import _socket

    release = threading.Event()
    real = _socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HUNG_HOST:
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(_socket, "getaddrinfo", getaddrinfo)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cascade router's ``model.py`` as a module. It imports Triton's
    ``triton_python_backend_utils``, which only exists inside the Python-backend stub;
    an empty stand-in under that name lets the parts that do not use it be tested."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils",
                        types.ModuleType("triton_python_backend_utils"))
    module = types.ModuleType("cascade_router")
    exec(compile(router_source(), "model.py", "exec"), module.__dict__)
    return module

"""The cascade router's bounds (data/router/model.py), one layer at a time: what an
instance holds under a flood (and the memory that takes), where a wedged tier-1 call
is cut, and which timeout a tier-2 call gets.

The router runs here on an in-process stand-in for Triton's
``triton_python_backend_utils`` (tensors, responses, BLS requests whose ``exec`` the
test controls, custom metrics that keep their value); tests/real/
test_cascade_bounds_real.py checks the same bounds on the real tritonserver.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from tritonscale.router import router_source

WAIT_S = 30.0  # generous: any scheduling delay of a loaded machine is far below it
ROW = 16_384  # floats per request: 64 KiB, so holding a request shows in memory


class _Metric:
    def __init__(self) -> None:
        self.value = 0.0

    def increment(self, by: float) -> None:
        self.value += by

    def set(self, value: float) -> None:
        self.value = value


class _Tier1:
    """What the router's BLS requests reach: answers CONFIDENCE ``confidence`` (1:
    nothing escalates) once ``release`` is set; records each request's timeout."""

    def __init__(self) -> None:
        self.confidence = 1.0
        self.release = threading.Event()
        self.timeouts: list[int] = []
        self.returned = 0
        self.lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        with self.lock:
            self.timeouts.append(request.timeout)
        self.release.wait(WAIT_S)
        n = len(request.inputs[0].as_numpy())
        resp = _Utils.InferenceResponse(output_tensors=[
            _Utils.Tensor("LABEL", np.ones((n, 1), np.int32)),
            _Utils.Tensor("CONFIDENCE", np.full((n, 1), self.confidence, np.float32))])
        with self.lock:
            self.returned += 1
        return resp


class _Utils:
    """The parts of ``triton_python_backend_utils`` the router uses."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    tier1: Callable[[Any], Any]

    class Tensor:
        def __init__(self, name: str, array: Any) -> None:
            self.name, self.array = name, np.asarray(array)

        def as_numpy(self) -> Any:
            return self.array

    class TritonError:
        UNAVAILABLE = "UNAVAILABLE"

        def __init__(self, message: str, code: str = "INTERNAL") -> None:
            self.msg, self.code = message, code

        def message(self) -> str:
            return self.msg

    class InferenceResponse:
        def __init__(self, output_tensors: Any = (), error: Any = None) -> None:
            self.tensors, self.err = list(output_tensors), error

        def has_error(self) -> bool:
            return self.err is not None

        def error(self) -> Any:
            return self.err

    class InferenceRequest:
        def __init__(self, model_name: str, requested_output_names: list[str],
                     inputs: list[Any], timeout: int = 0) -> None:
            self.inputs, self.timeout = inputs, timeout

        def exec(self) -> Any:
            return _Utils.tier1(self)

    class MetricFamily:
        COUNTER, GAUGE = "counter", "gauge"
        metrics: ClassVar[dict[tuple[str, str], _Metric]] = {}

        def __init__(self, name: str, description: str, kind: str) -> None:
            self.name = name

        def Metric(self, labels: dict[str, str]) -> _Metric:
            return self.metrics.setdefault((self.name, labels.get("stage", "")), _Metric())

    @staticmethod
    def get_input_tensor_by_name(request: Any, name: str) -> Any:
        return request.tensors[name]

    @staticmethod
    def get_output_tensor_by_name(response: Any, name: str) -> Any:
        return next(t for t in response.tensors if t.name == name)


class _Sender:
    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.answered = threading.Event()

    def send(self, response: Any, flags: int = 0) -> None:
        self.responses.append(response)
        self.answered.set()

    def is_cancelled(self) -> bool:
        return False

    def error(self) -> Any:
        assert len(self.responses) == 1, self.responses
        return self.responses[0].err


class _Request:
    def __init__(self, rows: Any, timeout_s: float = 0.0) -> None:
        self.tensors = {"INPUT": _Utils.Tensor("INPUT", rows)}
        self.sender = _Sender()
        self.timeout_us = int(timeout_s * 1e6)

    def get_response_sender(self) -> _Sender:
        return self.sender

    def parameters(self) -> str:
        return "{}"

    def timeout(self) -> int:
        return self.timeout_us


_SHARED = tempfile.TemporaryDirectory(prefix="router-windows-")


@pytest.fixture
def tier1(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Tier1]:
    calls = _Tier1()
    utils = types.ModuleType("triton_python_backend_utils")
    for name in dir(_Utils):
        if not name.startswith("__"):
            setattr(utils, name, getattr(_Utils, name))
    utils.tier1 = calls  # type: ignore[attr-defined]
    monkeypatch.setattr(_Utils, "tier1", calls, raising=False)
    monkeypatch.setattr(_Utils.MetricFamily, "metrics", {})
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    yield calls
    calls.release.set()


def _router(**params: str) -> Any:
    module = types.ModuleType("cascade_router")
    exec(compile(router_source(), "model.py", "exec"), module.__dict__)
    module.SHARED_BASE = _SHARED.name  # not the machine's /dev/shm
    config = {
        "name": "m-cascade",
        "input": [{"name": "INPUT"}],
        "output": [{"name": "LABEL"}, {"name": "CONFIDENCE"}],
        "parameters": {k: {"string_value": v} for k, v in {
            "tier1_model": "m", "tier2_url": "http://127.0.0.1:9", "tier2_model": "m",
            "threshold": "0.5", **params}.items()},
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_name": "m-cascade"})
    return model


def _metric(name: str, stage: str = "") -> float:
    return _Utils.MetricFamily.metrics[(name, stage)].value


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"not within {WAIT_S:g} s: {what}"
        time.sleep(0.01)


def test_a_flood_holds_at_most_max_pending_and_its_memory_stays_flat(tier1: _Tier1) -> None:
    """2,000 requests of 64 KiB each while tier 1 answers none: the router holds 8
    (0.5 MiB), answers the others at once with UNAVAILABLE. Before the bound it held
    every one: 125 MiB."""
    model = _router(workers="2", max_pending="8")
    n, held = 2_000, 8
    requests = [_Request(np.full((1, ROW), k, np.float32)) for k in range(n)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(0, n, 50):
            model.execute(requests[k:k + 50])
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    rejected = [r for r in requests if r.sender.responses]
    assert len(rejected) == n - held  # answered during execute: at once
    assert all(r.sender.error().code == "UNAVAILABLE" and
               "exceeds its maximum of 8 held requests (max_pending)" in r.sender.error().msg
               for r in rejected)
    assert grown < 4 * 2**20, grown / 2**20  # 8 x 64 KiB held, plus the bookkeeping
    assert _metric("tritonscale_cascade_rejected_total") == n - held
    assert _metric("tritonscale_cascade_pending_requests") == held
    tier1.release.set()
    _wait(lambda: all(r.sender.responses for r in requests), "the held answered")
    assert [r for r in requests if r.sender.responses[0].err is None] == requests[:held]
    _wait(lambda: _metric("tritonscale_cascade_pending_requests") == 0, "all released")
    model.finalize()


def test_a_wedged_tier1_call_is_answered_at_its_bound_and_keeps_its_place(
    tier1: _Tier1,
) -> None:
    model = _router(tier1_timeout_s="0.3", workers="1", max_pending="2")
    first = _Request(np.zeros((1, 4), np.float32))
    model.execute([first])
    assert first.sender.answered.wait(WAIT_S)
    assert "tier 1 (m) did not answer within 0.3 s (tier1_timeout_s)" in first.sender.error().msg
    assert 0 < tier1.timeouts[0] <= 300_000  # the BLS request carries the bound
    assert _metric("tritonscale_cascade_tier1_timeout_total") == 1
    # Its call still runs: the request keeps its place, the thread is free again.
    assert _metric("tritonscale_cascade_pending_requests") == 1
    second = _Request(np.zeros((1, 4), np.float32), timeout_s=0.2)
    model.execute([second])
    assert second.sender.answered.wait(WAIT_S)
    assert "did not answer within the request's deadline" in second.sender.error().msg
    assert 0 < tier1.timeouts[1] <= 200_000
    third = _Request(np.zeros((1, 4), np.float32))
    model.execute([third])  # two wedged calls hold both places
    assert third.sender.error().code == "UNAVAILABLE"
    tier1.release.set()
    _wait(lambda: _metric("tritonscale_cascade_pending_requests") == 0, "calls returned")
    assert tier1.returned == 2 and len(first.sender.responses) == 1
    model.finalize()


@pytest.mark.parametrize(("deadline_s", "low", "high"), [(None, 9.0, 10.0), (1.0, 0.0, 1.0)])
def test_a_tier2_call_gets_the_sooner_of_its_timeout_and_the_deadline(
    tier1: _Tier1, deadline_s: float | None, low: float, high: float,
) -> None:
    tier1.release.set()
    tier1.confidence = 0.0  # below the threshold: every row escalates
    model = _router(tier2_timeout_s="10")
    given: list[float] = []

    def tier2(inputs: Any, timeout: float) -> Any:
        given.append(timeout)
        raise TimeoutError("stand-in")

    model._tier2 = tier2
    request = _Request(np.zeros((1, 4), np.float32), timeout_s=deadline_s or 0.0)
    model.execute([request])
    assert request.sender.answered.wait(WAIT_S)
    assert request.sender.responses[0].err is None  # tier 1's answer, a fallback
    assert _metric("tritonscale_cascade_fallback_total") == 1
    assert low < given[0] <= high, given
    model.finalize()


def test_a_deadline_passing_after_the_gone_check_is_a_drop_not_a_tier1_timeout(
    tier1: _Tier1,
) -> None:
    """The deadline can pass between the stage-1 thread's check that the client still
    waits and the tier-1 bound it computes (a moment under load): the request is then
    not sent, so it is counted as dropped before tier 1, as the check would have,
    never as a tier-1 call that timed out (which tests/real/test_cascade_overload_real
    counts as computed by tier 1: CI33 saw tier 1 compute one request fewer)."""
    tier1.release.set()
    model = _router()
    model._gone = lambda sender, deadline: ""  # looked just before the deadline
    request = _Request(np.zeros((1, 4), np.float32), timeout_s=1e-6)  # 1 us: passed
    model.execute([request])
    assert request.sender.answered.wait(WAIT_S)
    assert "not sent to tier1: its deadline" in request.sender.error().msg
    assert tier1.timeouts == []  # no BLS request made
    assert _metric("tritonscale_cascade_abandoned_total", "tier1") == 1
    assert _metric("tritonscale_cascade_tier1_timeout_total") == 0
    model.finalize()


def test_a_deadline_passing_before_the_tier2_call_is_a_drop_not_a_fallback(
    tier1: _Tier1,
) -> None:
    tier1.release.set()
    tier1.confidence = 0.0  # every row escalates
    model = _router()
    model._gone = lambda sender, deadline: ""  # looked just before the deadline
    called: list[float] = []
    model._tier2 = lambda inputs, timeout: called.append(timeout)
    request = _Request(np.zeros((1, 4), np.float32), timeout_s=1e-6)
    # Stage 1's bound (the first asked for) is let through, as if it came just
    # before the deadline; stage 2's is the real one, past the deadline.
    real_left = type(model)._left
    asked: list[float] = []

    def left(bound: float, deadline: float | None) -> tuple[float, str]:
        asked.append(bound)
        return (1.0, "the timeout") if len(asked) == 1 else real_left(bound, deadline)

    model._left = left
    model.execute([request])
    assert request.sender.answered.wait(WAIT_S)
    assert "not sent to tier2: its deadline" in request.sender.error().msg
    assert called == []
    assert _metric("tritonscale_cascade_abandoned_total", "tier2") == 1
    assert _metric("tritonscale_cascade_fallback_total") == 0
    model.finalize()

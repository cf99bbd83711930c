"""What the real tritonserver does with a request whose client gave up while it was queued.

The simulator's ``--abandoned`` modes (core/batcher.py) stand on these measurements.
One tritonserver (2.51, the nvidia-pytriton wheel) serves copies of the ``ledger`` test
model (tests/harness/real/models/ledger): max batch 2, one instance, and every batch
it computes is written, with its request ids and monotonic start time, to a file --
the server's own record of what it computed, checked against Triton's statistics and
its ``nv_inference_request_failure{reason}`` counters.

Behind a 4-s batch, 10 requests wait in the dynamic batcher's queue; their clients
give up after 1 s:

* gRPC (``client_timeout``: the call's deadline, which Triton sees as a cancellation):
  the requests still in the queue are dropped, never computed (reason ``CANCELED``);
  but the first few -- those the batcher had already put into the next batches
  while the instance was busy (up to two batches per instance) -- are computed after
  their clients had gone;
* HTTP (a client's socket timeout closes its connection): every one is computed;
* a queue policy (``default_queue_policy { timeout_action: REJECT ... }``, 1 s): every
  one is rejected at its timeout (``REJECTED``), while the instance is still busy, and
  none is computed: with a queue policy that times requests out, Triton forms no
  batch ahead of a busy instance.

Then sustained overload (40 req/s on a model that computes 20/s, clients' patience
1 s): with gRPC clients alone the batcher takes requests from the head of its queue,
the oldest, which time out while their batch waits for the instance: most of the
compute goes to clients that have gone. A queue policy half a second shorter than the
clients' patience rejects them before they reach a batch: what is computed is
answered in time.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tests.harness.real.servers import TritonServer, find_triton, write_ledger_model

pytestmark = pytest.mark.triton

MAX_BATCH = 2
QUEUED = 10  # requests queued behind the blocking batch
PATIENCE_S = 1.0  # the clients' timeout
BLOCK_MS = 4000.0  # the blocking batch
# Sustained overload: a batch takes 100 ms whatever its size (max 2): 20 req/s.
OVER_BATCH_MS = 100.0
OVER_RATE = 40.0
OVER_SECONDS = 8.0
OVER_QUEUE_TIMEOUT_S = 0.5  # the queue policy, half a second below the clients' patience

MODELS: dict[str, dict[str, Any]] = {
    "grpc_queue": {},
    "http_queue": {},
    "policy_queue": {"queue_timeout_us": int(PATIENCE_S * 1e6)},
    "grpc_over": {"base_ms": OVER_BATCH_MS},
    "policy_over": {"base_ms": OVER_BATCH_MS,
                    "queue_timeout_us": int(OVER_QUEUE_TIMEOUT_S * 1e6)},
}


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


@dataclass
class Ledger:
    """The model's record: request id -> monotonic time its batch started."""

    path: Path

    def started(self) -> dict[int, float]:
        out: dict[int, float] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            what, at, ids = line.split(" ")
            if what == "start":
                for i in ids.split(","):
                    out[int(i)] = float(at)
        return out

    def done(self) -> set[int]:
        if not self.path.exists():
            return set()
        return {int(i) for line in self.path.read_text().splitlines()
                if line.startswith("done ") for i in line.split(" ")[2].split(",")}


@dataclass
class Served:
    """One tritonserver with the models of :data:`MODELS` and their ledgers."""

    server: TritonServer
    ledgers: dict[str, Ledger]
    grpc: Any = field(default=None)

    def stats(self, model: str) -> dict[str, int]:
        st = self.grpc.get_inference_statistics(model, as_json=True)["model_stats"][0]
        inf = st["inference_stats"]
        return {"success": int(inf.get("success", {}).get("count", 0)),
                "fail": int(inf.get("fail", {}).get("count", 0)),
                "inferences": int(st.get("inference_count", 0)),
                "executions": int(st.get("execution_count", 0))}

    def failures(self, model: str) -> dict[str, int]:
        """``nv_inference_request_failure`` of ``model`` by reason (metrics port)."""
        with urllib.request.urlopen(self.server.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, int] = {}
        for m in re.finditer(r"^nv_inference_request_failure\{([^}]*)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("model") == model:
                out[labels["reason"]] = int(float(m.group(2)))
        return out

    def settled(self, model: str, requests: int) -> None:
        """Wait until Triton has finished (answered or failed) ``requests`` requests."""
        def finished() -> bool:
            s = self.stats(model)
            return s["success"] + s["fail"] >= requests
        wait_for(finished, 120, f"{model}: {requests} requests finished")


@pytest.fixture(scope="module")
def served(real_log_dir: Path) -> Iterator[Served]:
    workdir = real_log_dir / "triton-abandoned"
    workdir.mkdir(parents=True, exist_ok=True)
    server = TritonServer(workdir=workdir, models=list(MODELS), install=find_triton())
    server.repo.mkdir(parents=True, exist_ok=True)
    ledgers = {}
    for name, kw in MODELS.items():
        ledgers[name] = Ledger(workdir / f"{name}.ledger")
        write_ledger_model(server.repo, name, ledgers[name].path, max_batch=MAX_BATCH, **kw)
    server.start(timeout=180)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        yield Served(server, ledgers, client)
    finally:
        client.close()
        server.stop()


def rows(i: int, extra_ms: float = 0.0) -> np.ndarray[Any, Any]:
    return np.asarray([[float(i), extra_ms]], dtype=np.float32)


def grpc_input(i: int, extra_ms: float = 0.0) -> list[Any]:
    t = grpcclient.InferInput("INPUT", [1, 2], "FP32")
    t.set_data_from_numpy(rows(i, extra_ms))
    return [t]


def http_infer(server: TritonServer, model: str, i: int, extra_ms: float,
               timeout: float) -> str | None:
    """One KServe v2 HTTP/JSON inference; None if answered, else why not."""
    body = {"inputs": [{"name": "INPUT", "shape": [1, 2], "datatype": "FP32",
                        "data": [float(i), extra_ms]}]}
    req = urllib.request.Request(
        f"http://{server.url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"
    except (TimeoutError, urllib.error.URLError) as exc:
        return f"timeout: {exc}"
    return None


class Outcomes:
    """Client-side outcome per request id: (monotonic time, error or None)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[int, tuple[float, str | None]] = {}

    def put(self, i: int, error: str | None) -> None:
        with self.lock:
            self.by_id[i] = (time.monotonic(), error)

    def grpc_callback(self, i: int) -> Callable[[Any, Any], None]:
        def cb(result: Any, error: Any) -> None:
            self.put(i, None if error is None else str(error))
        return cb

    def count(self) -> int:
        with self.lock:
            return len(self.by_id)


def block(served: Served, model: str, out: Outcomes) -> None:
    """Start the blocking batch (id 0) over gRPC and wait until the model computes it."""
    served.grpc.async_infer(model, grpc_input(0, BLOCK_MS), out.grpc_callback(0))
    wait_for(lambda: 0 in served.ledgers[model].started(), 60, f"{model}: blocker started")


def check_prefix_computed(served: Served, model: str, out: Outcomes) -> set[int]:
    """The queued requests computed: the head of the queue, at most two batches."""
    computed = served.ledgers[model].done() - {0}
    k = len(computed)
    assert computed == set(range(1, k + 1)), f"not the head of the queue: {sorted(computed)}"
    assert 1 <= k <= 2 * MAX_BATCH, (
        f"{k} queued requests computed; the batches the batcher had formed while the "
        f"instance was busy hold 1..{2 * MAX_BATCH}")
    started = served.ledgers[model].started()
    for i in computed:  # computed after their clients had given up
        assert started[i] > out.by_id[i][0], (i, started[i], out.by_id[i])
    return computed


def test_grpc_timeout_drops_queued_requests_but_computes_the_formed_batches(
    served: Served,
) -> None:
    model = "grpc_queue"
    out = Outcomes()
    block(served, model, out)
    for i in range(1, QUEUED + 1):
        served.grpc.async_infer(model, grpc_input(i), out.grpc_callback(i),
                                client_timeout=PATIENCE_S)
        time.sleep(0.03)
    wait_for(lambda: out.count() == QUEUED + 1, 60, "every gRPC client answered")
    served.settled(model, QUEUED + 1)
    assert out.by_id[0][1] is None, out.by_id[0]
    for i in range(1, QUEUED + 1):
        err = out.by_id[i][1]
        assert err is not None and "DEADLINE_EXCEEDED" in err, (i, err)
    computed = check_prefix_computed(served, model, out)
    dropped = QUEUED - len(computed)
    stats = served.stats(model)
    failures = served.failures(model)
    print(f"\ngRPC, 1-s client timeout behind a 4-s batch: sent {QUEUED}, computed "
          f"{len(computed)} (ids {sorted(computed)}, after their clients had gone), "
          f"dropped unserved {dropped}; Triton: {stats}, failures {failures}")
    assert dropped >= QUEUED - 2 * MAX_BATCH
    assert failures.get("CANCELED") == dropped
    assert stats["success"] == 1 + len(computed) and stats["fail"] == dropped
    assert stats["inferences"] == 1 + len(computed)


def test_http_timeout_cancels_nothing(served: Served) -> None:
    model = "http_queue"
    out = Outcomes()
    block(served, model, out)

    def one(i: int) -> None:
        out.put(i, http_infer(served.server, model, i, 0.0, PATIENCE_S))

    with ThreadPoolExecutor(max_workers=QUEUED) as pool:
        for i in range(1, QUEUED + 1):
            pool.submit(one, i)
            time.sleep(0.03)
    served.settled(model, QUEUED + 1)
    for i in range(1, QUEUED + 1):
        err = out.by_id[i][1]
        assert err is not None and err.startswith("timeout"), (i, err)
    computed = served.ledgers[model].done() - {0}
    started = served.ledgers[model].started()
    stats = served.stats(model)
    failures = served.failures(model)
    print(f"\nHTTP, 1-s client timeout behind a 4-s batch: sent {QUEUED}, computed "
          f"{len(computed)}, dropped 0; Triton: {stats}, failures {failures}")
    assert computed == set(range(1, QUEUED + 1))
    for i in computed:
        assert started[i] > out.by_id[i][0], (i, started[i], out.by_id[i])
    assert stats["success"] == 1 + QUEUED and stats["fail"] == 0
    assert not any(failures.values()), failures


def test_queue_policy_rejects_timed_out_requests_uncomputed(served: Served) -> None:
    model = "policy_queue"
    out = Outcomes()
    block(served, model, out)
    sent: dict[int, float] = {}

    def one(i: int) -> None:
        sent[i] = time.monotonic()
        out.put(i, http_infer(served.server, model, i, 0.0, 60.0))  # patient clients

    with ThreadPoolExecutor(max_workers=QUEUED) as pool:
        for i in range(1, QUEUED + 1):
            pool.submit(one, i)
            time.sleep(0.03)
    served.settled(model, QUEUED + 1)
    computed = served.ledgers[model].done() - {0}
    rejected = [i for i in range(1, QUEUED + 1) if out.by_id[i][1] is not None]
    waited = [out.by_id[i][0] - sent[i] for i in rejected]
    stats = served.stats(model)
    failures = served.failures(model)
    print(f"\nqueue policy REJECT after 1 s behind a 4-s batch: sent {QUEUED}, computed "
          f"{len(computed)}, rejected unserved {len(rejected)} (answered after "
          f"{min(waited):.2f}-{max(waited):.2f} s); Triton: {stats}, failures {failures}")
    # With a queue policy the batcher forms no batch ahead (Triton does not prefetch
    # from a queue with timeouts): nothing queued is computed, unlike gRPC alone.
    assert computed == set(), sorted(computed)
    assert rejected == list(range(1, QUEUED + 1))
    for i in rejected:
        assert "timeout" in str(out.by_id[i][1]).lower(), out.by_id[i]
        # Rejected at their timeout, while the instance was still busy.
        assert out.by_id[i][0] - sent[i] >= PATIENCE_S and out.by_id[i][0] < out.by_id[0][0]
    assert failures.get("REJECTED") == QUEUED
    assert stats["success"] == 1 and stats["inferences"] == 1


def overload(served: Served, model: str) -> tuple[int, int, int, int]:
    """OVER_RATE req/s for OVER_SECONDS over gRPC, clients' timeout PATIENCE_S:
    (sent, answered in time, computed, computed for clients that had gone)."""
    out = Outcomes()
    n = int(OVER_RATE * OVER_SECONDS)
    t0 = time.monotonic()
    for i in range(1, n + 1):
        due = t0 + (i - 1) / OVER_RATE
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        served.grpc.async_infer(model, grpc_input(i), out.grpc_callback(i),
                                client_timeout=PATIENCE_S)
    wait_for(lambda: out.count() == n, 120, f"{model}: every client answered")
    served.settled(model, n)
    computed = served.ledgers[model].done()
    ok = {i for i, (_, err) in out.by_id.items() if err is None}
    assert ok <= computed
    return n, len(ok), len(computed), len(computed - ok)


def test_sustained_overload_grpc_alone_computes_for_gone_clients(served: Served) -> None:
    """Twice the model's capacity for 8 s. gRPC cancellation alone: the batcher takes
    the oldest requests, which time out while their batch waits, so most of the
    compute is wasted. A queue policy below the clients' patience: none is."""
    sent, ok, computed, wasted = overload(served, "grpc_over")
    p_sent, p_ok, p_computed, p_wasted = overload(served, "policy_over")
    print(f"\noverload 2x, clients' timeout {PATIENCE_S:g} s: gRPC alone: sent {sent}, "
          f"answered in time {ok}, computed {computed} ({wasted} for gone clients); "
          f"with a {OVER_QUEUE_TIMEOUT_S:g}-s queue policy: sent {p_sent}, answered in time "
          f"{p_ok}, computed {p_computed} ({p_wasted} for gone clients)")
    capacity = OVER_SECONDS * 1000.0 / OVER_BATCH_MS * MAX_BATCH
    assert computed >= 0.5 * capacity  # the instance was kept busy
    assert wasted >= 0.5 * computed, "gRPC cancellation alone wasted less than half"
    assert p_computed >= 0.5 * capacity
    assert p_wasted <= 0.05 * p_computed + 2, "the queue policy let gone clients be computed"
    assert p_ok >= 2 * ok

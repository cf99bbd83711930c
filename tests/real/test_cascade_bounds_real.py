"""The cascade router's bounds on what it waits for and what it holds, on the real
tritonserver.

Both tiers are the ``gate`` test model (tests/harness/real/models/gate): a client's row
chooses its confidence (what escalates), how long each tier takes (or that tier 1 holds
it until the test opens a gate), and its id; each tier records in a ledger when it
started and finished every request and the timeout Triton handed it with it. Tier 1
runs in the server of two routers rendered by core/cascade_render.py (only the
cluster-only values and the bounds under test replaced): ``digits-cascade`` with a
2-s tier-1 timeout and ``digits-flood`` holding at most 3 requests per instance, one
thread per stage. Checks, each on the order of events rather than on timings:

* a tier-1 call that does not answer within ``tier1_timeout_s`` is answered with an
  error at that bound while tier 1 still computes it (before: the client waited for
  tier 1, however long), and the call still holds its place in the router until it
  returns;
* a tier-2 call ends at the client's deadline (Triton's ``timeout`` request parameter)
  when that comes before ``tier2_timeout_s``: the client gets tier 1's answer while
  tier 2 still computes (before: it waited for tier 2), and tier 2 received the time
  left as its request's timeout;
* a flood beyond ``max_pending`` is answered at once with an unavailable error and
  counted; the router holds no more than its bound, tier 1 sees only what it held.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests.harness.real.digits import cascade_spec
from tests.harness.real.servers import MODELS_DIR, TritonServer, find_triton

from tritonscale.core import cascade_render as cr
from tritonscale.core.spec import parse_spec
from tritonscale.router import router_source

pytestmark = pytest.mark.triton
MODEL = "digits"
SM, NS = "bounds", "ns"
ROUTER = f"{MODEL}-cascade"  # tier1_timeout_s = TIER1_TIMEOUT_S
FLOOD = f"{MODEL}-flood"  # max_pending = MAX_PENDING, one thread per stage
TIER1_TIMEOUT_S = 2
MAX_PENDING = 3
PENDING = "tritonscale_cascade_pending_requests"


@dataclass
class Cascade:
    tier1: TritonServer
    tier2: TritonServer
    ledger1: Path
    ledger2: Path
    gate: Path


def _gate_model(repo: Path, label: int, column: int, ledger: Path, gate: Path) -> None:
    dst = repo / MODEL
    shutil.copytree(MODELS_DIR / "gate", dst, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = (dst / "config.pbtxt").read_text().replace('name: "gate"', f'name: "{MODEL}"')
    for key, value in (("label", label), ("wait_column", column), ("ledger_path", ledger),
                       ("gate_file", gate)):
        old = f'key: "{key}" value: {{ string_value: "'
        start = cfg.index(old) + len(old)
        cfg = cfg[:start] + str(value) + cfg[cfg.index('"', start):]
    (dst / "config.pbtxt").write_text(cfg)


def _router(repo: Path, name: str, tier2_url: str, threshold_file: Path,
            params: dict[str, str]) -> None:
    """The router as rendered, under ``name``, with ``params`` replacing its values."""
    spec = parse_spec(cascade_spec([{"threshold": 0.5, "escalated": 0.1, "accuracy": 0.93}]))
    data = cr.router_data(spec, SM, NS, router_source())
    cfg = data["config.pbtxt"]
    swaps = {f'name: "{ROUTER}"': f'name: "{name}"', cr.tier2_url(SM, NS): tier2_url,
             cr.THRESHOLD_FILE: str(threshold_file)}
    rendered = {"tier1_timeout_s": str(cr.TIER1_TIMEOUT_SECONDS),
                "workers": str(cr.ROUTER_WORKERS), "max_pending": str(cr.ROUTER_MAX_PENDING)}
    for key, value in params.items():
        swaps[f'key: "{key}" value: {{ string_value: "{rendered[key]}" }}'] = (
            f'key: "{key}" value: {{ string_value: "{value}" }}')
    for old, new in swaps.items():
        assert old in cfg, old
        cfg = cfg.replace(old, new)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(cfg)
    (repo / name / "1" / "model.py").write_text(data["model.py"])


@pytest.fixture(scope="module")
def cascade(real_log_dir: Path) -> Iterator[Cascade]:
    work = real_log_dir / "cascade-bounds"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ledger1, ledger2, gate = work / "tier1.ledger", work / "tier2.ledger", work / "gate"
    tier2 = TritonServer(workdir=work / "tier2", models=[MODEL], install=find_triton())
    tier2.repo.mkdir(parents=True)
    _gate_model(tier2.repo, 2, 2, ledger2, gate)
    tier1 = TritonServer(workdir=work / "tier1", models=[MODEL, ROUTER, FLOOD],
                         install=find_triton())
    tier1.repo.mkdir(parents=True)
    _gate_model(tier1.repo, 1, 1, ledger1, gate)
    threshold = work / "threshold"
    threshold.write_text("0.5\n")
    url = f"http://{tier2.url}"
    _router(tier1.repo, ROUTER, url, threshold, {"tier1_timeout_s": str(TIER1_TIMEOUT_S)})
    _router(tier1.repo, FLOOD, url, threshold,
            {"workers": "1", "max_pending": str(MAX_PENDING), "tier1_timeout_s": "120"})
    try:
        tier2.start(timeout=180)
        tier1.start(timeout=180)
        yield Cascade(tier1, tier2, ledger1, ledger2, gate)
    finally:
        tier1.stop()
        tier2.stop()


def _row(i: int, confidence: float, wait1_ms: float = 0.0,
         wait2_ms: float = 0.0) -> np.ndarray:
    row = np.zeros((1, 64), dtype=np.float32)
    row[0, :4] = (confidence, wait1_ms, wait2_ms, i)
    return row


@dataclass
class Answer:
    at: float  # monotonic time the client had its answer
    label: int | None
    error: str


def _infer(url: str, model: str, row: np.ndarray, timeout_s: float | None = None) -> Answer:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
    try:
        t = httpclient.InferInput("INPUT", [1, 64], "FP32")
        t.set_data_from_numpy(row)
        kw = {} if timeout_s is None else {"timeout": int(timeout_s * 1e6)}
        try:
            label = int(client.infer(model, [t], **kw).as_numpy("LABEL")[0, 0])
        except InferenceServerException as exc:
            return Answer(time.monotonic(), None, f"{exc.status()} {exc.message()}")
        return Answer(time.monotonic(), label, "")
    finally:
        client.close()


def _ledger(path: Path) -> tuple[dict[int, tuple[float, int]], dict[int, float]]:
    """(id -> (start time, timeout it came with, us)), (id -> done time)."""
    started: dict[int, tuple[float, int]] = {}
    done: dict[int, float] = {}
    if not path.exists():
        return started, done
    for line in path.read_text().splitlines():
        what, at, items = line.split(" ")
        for item in items.split(","):
            if what == "start":
                i, timeout = item.split(":")
                started[int(i)] = (float(at), int(timeout))
            else:
                done[int(item)] = float(at)
    return started, done


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def _metric(c: Cascade, name: str, model: str) -> float:
    import urllib.request

    with urllib.request.urlopen(c.tier1.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{model}"' in line)


def test_a_tier1_call_past_its_timeout_is_answered_with_an_error_at_the_bound(
    cascade: Cascade,
) -> None:
    c, i = cascade, 101
    before = _metric(c, "tritonscale_cascade_tier1_timeout_total", ROUTER)
    # Tier 1 takes 12 s over this request; the client would wait 120 s.
    got = _infer(c.tier1.url, ROUTER, _row(i, 1.0, wait1_ms=12_000))
    # Answered while tier 1 still computes it: the call still holds its place.
    pending = _metric(c, PENDING, ROUTER)
    assert got.label is None, got
    assert f"tier 1 ({MODEL}) did not answer within {TIER1_TIMEOUT_S} s" in got.error, got
    assert "tier1_timeout_s" in got.error
    assert _metric(c, "tritonscale_cascade_tier1_timeout_total", ROUTER) == before + 1
    _wait_for(lambda: i in _ledger(c.ledger1)[1], 60, "tier 1 finished the request")
    started, done = _ledger(c.ledger1)
    assert started[i][0] < got.at < done[i], (started[i], got.at, done[i])
    # The BLS request carried the bound as its timeout (Triton applies it in tier 1's
    # queue under a queue policy that allows the override).
    assert 0 < started[i][1] <= TIER1_TIMEOUT_S * 1e6, started[i]
    assert pending >= 1  # (done after this read: tier 1 was still computing)
    _wait_for(lambda: _metric(c, PENDING, ROUTER) == 0, 30, "the router released it")


def test_a_tier2_call_ends_at_the_clients_deadline(cascade: Cascade) -> None:
    c, i = cascade, 201
    deadline_s = 2.0
    before = {name: _metric(c, f"tritonscale_cascade_{name}_total", ROUTER)
              for name in ("escalated", "fallback", "abandoned")}
    # Confidence 0 escalates; tier 2 takes 6 s, less than tier2_timeout_s (10 s) but
    # past the client's 2-s deadline.
    got = _infer(c.tier1.url, ROUTER, _row(i, 0.0, wait2_ms=6_000), timeout_s=deadline_s)
    after = {name: _metric(c, f"tritonscale_cascade_{name}_total", ROUTER)
             for name in ("escalated", "fallback", "abandoned")}
    assert got.error == "" and got.label == 1, got  # tier 1's answer, the fallback
    assert after["escalated"] == before["escalated"] + 1
    assert after["fallback"] == before["fallback"] + 1
    assert after["abandoned"] == before["abandoned"]  # it reached tier 2
    _wait_for(lambda: i in _ledger(c.ledger2)[1], 60, "tier 2 finished the request")
    started, done = _ledger(c.ledger2)
    assert started[i][0] < got.at < done[i], (started[i], got.at, done[i])
    # Tier 2 was sent the time left to the deadline as the request's timeout.
    assert 0 < started[i][1] <= deadline_s * 1e6, started[i]
    _wait_for(lambda: _metric(c, PENDING, ROUTER) == 0, 30, "the router released it")


def _flood(c: Cascade, first_id: int, n: int) -> tuple[list[Answer], float]:
    """``n`` requests at once that tier 1 holds until the gate opens: their answers and
    the router's pending gauge once each request was admitted or rejected."""
    rejected0 = _metric(c, "tritonscale_cascade_rejected_total", FLOOD)
    c.gate.unlink(missing_ok=True)
    rows = [_row(first_id + k, 1.0, wait1_ms=-1) for k in range(n)]
    with ThreadPoolExecutor(n) as pool:
        answers = [pool.submit(_infer, c.tier1.url, FLOOD, r) for r in rows]

        def settled() -> bool:
            rejected = _metric(c, "tritonscale_cascade_rejected_total", FLOOD) - rejected0
            return rejected + _metric(c, PENDING, FLOOD) >= n
        _wait_for(settled, 120, "every request admitted or rejected")
        held = _metric(c, PENDING, FLOOD)
        # The rejected are answered while the admitted are still held by tier 1.
        _wait_for(lambda: sum(a.done() for a in answers) >= n - held, 60,
                  "the rejected answered")
        assert all(not a.done() or a.result().label is None for a in answers)
        c.gate.write_text("open\n")
        return [a.result() for a in answers], held


def _computed(c: Cascade, ids: range, at_least: float) -> list[int]:
    """Which of ``ids`` tier 1 computed, once it finished ``at_least`` of them."""
    def computed() -> list[int]:
        return [i for i in _ledger(c.ledger1)[1] if i in ids]
    _wait_for(lambda: len(computed()) >= at_least, 30, "tier 1's ledger")
    return computed()


def test_a_flood_beyond_max_pending_is_answered_at_once_with_an_error(
    cascade: Cascade,
) -> None:
    c = cascade
    bound = cr.ROUTER_INSTANCES * MAX_PENDING
    for first_id, n in ((1000, 24), (2000, 80)):
        answers, held = _flood(c, first_id, n)
        ok = [a for a in answers if a.error == ""]
        rejected = [a for a in answers if a.error]
        print(f"\nflood of {n} with max_pending {MAX_PENDING} x {cr.ROUTER_INSTANCES} "
              f"instances: held {held:g}, answered {len(ok)}, rejected {len(rejected)}")
        # Each instance that got more than its bound holds exactly its bound.
        assert MAX_PENDING <= held <= bound, held
        assert len(ok) == held and all(a.label == 1 for a in ok)
        assert len(rejected) == n - held
        for a in rejected:
            assert a.error.startswith("503 ") and (
                f"exceeds its maximum of {MAX_PENDING} held requests (max_pending)"
                in a.error), a.error
        # Tier 1 computed the held requests only.
        ids = range(first_id, first_id + n)
        assert len(_computed(c, ids, held)) == held, _computed(c, ids, held)
        _wait_for(lambda: _metric(c, PENDING, FLOOD) == 0, 30, "the router released all")
    # Counted in inferences (one row each): every request not held.
    computed = sum(1 for i in _ledger(c.ledger1)[1] if i >= 1000)
    assert _metric(c, "tritonscale_cascade_rejected_total", FLOOD) == 24 + 80 - computed

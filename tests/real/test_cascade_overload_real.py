"""The rendered cascade router under overload, on the real tritonserver.

The router the operator renders (core/cascade_render.py) is loaded next to a slow tier-1
model; tier 2 is another real tritonserver with a slower model. The rendered
``config.pbtxt`` is used as rendered except for the cluster-only values (the tier-2
Service URL, the threshold ConfigMap path) and its threads: one per stage and router
instance instead of 256, so that a handful of requests overloads it (a real pod needs
hundreds of concurrent requests for that, more than this shared machine should run).

Clients send each request with Triton's ``timeout`` parameter (their deadline).
Checks: requests whose deadline passed while they waited for a stage-1 thread never
reach tier 1 (tier 1's own statistics count only the others), those whose deadline
passed while they waited for a stage-2 thread never reach tier 2, each is answered
with an error, and ``tritonscale_cascade_abandoned_total`` counts them per stage (a
request a thread took just before its deadline has its tier-1 call cut at the deadline,
an error counted in ``tritonscale_cascade_tier1_timeout_total``, and its tier-2 call
ends there too, with tier 1's answer: a fallback); the router's pending gauge shows
the requests it holds beyond its threads (Triton's own pending count of the router
stays ~0) and is 0 again once all are answered.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.harness.real.digits import cascade_spec, counter, train, write_model
from tests.harness.real.servers import TritonServer, find_triton

from tritonscale.adapters.triton import TritonPod
from tritonscale.core import cascade_render as cr
from tritonscale.core.spec import parse_spec
from tritonscale.router import router_source

pytestmark = pytest.mark.triton
MODEL = "digits"
SM, NS = "digits", "overload"
ABANDONED = "tritonscale_cascade_abandoned_total"
PENDING = "tritonscale_cascade_pending_requests"
TIER1_LATE = f"tier 1 ({MODEL}) did not answer within the request's deadline"


def _stage_counter(metrics_url: str, stage: str) -> float:
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(ABANDONED + "{") and f'stage="{stage}"' in line)


def _send(url: str, rows: np.ndarray, threshold: float, timeout_s: float) -> list[str]:
    """Every row as its own request, all at once, each with the deadline ``timeout_s``
    and the router threshold ``threshold``; per request "" (answered) or its error."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    def one(x: np.ndarray) -> str:
        client = httpclient.InferenceServerClient(url, connection_timeout=60,
                                                  network_timeout=60)
        try:
            t = httpclient.InferInput("INPUT", [1, x.size], "FP32")
            t.set_data_from_numpy(np.ascontiguousarray(x.reshape(1, -1)))
            client.infer(f"{MODEL}-cascade", [t], timeout=int(timeout_s * 1e6),
                         parameters={"threshold": threshold})
            return ""
        except InferenceServerException as exc:
            return str(exc) or "error"
        finally:
            client.close()

    with ThreadPoolExecutor(len(rows)) as pool:
        return list(pool.map(one, rows))


def _inferences(pod: TritonPod, expected: int, timeout_s: float = 20.0) -> int:
    """The model's inference count once it reached ``expected`` (Triton records
    statistics after the response), or what it is at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = pod.statistics(MODEL)
        got = -1 if stats is None else stats.inference_count
        if got >= expected or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def test_overloaded_router_drops_requests_whose_client_has_gone(real_log_dir: Path) -> None:
    d = train()
    work = real_log_dir / "cascade-overload"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Tier 1: 100 ms per batch; tier 2: 1.5 s per batch, longer than any deadline here.
    tier2 = TritonServer(workdir=work / "tier2", models=[MODEL], install=find_triton())
    tier2.repo.mkdir(parents=True)
    write_model(tier2.repo, MODEL, d.tier2, sleep_ms=(1500.0, 0.0))
    router_repo = work / "cascade-models"
    tier1 = TritonServer(workdir=work / "tier1", models=[MODEL, f"{MODEL}-cascade"],
                         install=find_triton(), extra_repositories=[router_repo])
    tier1.repo.mkdir(parents=True)
    write_model(tier1.repo, MODEL, d.tier1, sleep_ms=(100.0, 0.0))

    spec = parse_spec(cascade_spec([{"threshold": 0.5, "escalated": 0.05, "accuracy": 0.93},
                                    {"threshold": 0.9, "escalated": 0.3, "accuracy": 0.96}]))
    data = cr.router_data(spec, SM, NS, router_source())
    threshold_file = work / "threshold"
    threshold_file.write_text("0.5\n")
    config = data["config.pbtxt"]
    for rendered, local in ((cr.tier2_url(SM, NS), f"http://{tier2.url}"),
                            (cr.THRESHOLD_FILE, str(threshold_file)),
                            (f'key: "workers" value: {{ string_value: "{cr.ROUTER_WORKERS}" }}',
                             'key: "workers" value: { string_value: "1" }')):
        assert rendered in config, rendered
        config = config.replace(rendered, local)
    (router_repo / f"{MODEL}-cascade" / "1").mkdir(parents=True)
    (router_repo / f"{MODEL}-cascade" / "config.pbtxt").write_text(config)
    (router_repo / f"{MODEL}-cascade" / "1" / "model.py").write_text(data["model.py"])
    threads = cr.ROUTER_INSTANCES  # one per instance and stage

    # Rows tier 1 is unsure of (its own softmax, computed here): at threshold 1 each
    # escalates.
    (w, b), = d.tier1
    z = d.x.astype(np.float64) @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    unsure = d.x[(p / p.sum(axis=1, keepdims=True)).max(axis=1) < 0.9]
    assert len(unsure) >= 24

    pod1, pod2 = TritonPod(tier1.url, timeout_s=10), TritonPod(tier2.url, timeout_s=10)
    try:
        tier2.start()
        tier1.start()
        metrics = tier1.metrics_url

        def totals() -> dict[str, Any]:
            s1, s2 = pod1.statistics(MODEL), pod2.statistics(MODEL)
            assert s1 is not None and s2 is not None
            return {"t1": s1.inference_count, "t2": s2.inference_count,
                    "a1": _stage_counter(metrics, "tier1"),
                    "a2": _stage_counter(metrics, "tier2"),
                    "req": counter(metrics, "tritonscale_cascade_requests_total"),
                    "esc": counter(metrics, "tritonscale_cascade_escalated_total"),
                    "fb": counter(metrics, "tritonscale_cascade_fallback_total"),
                    "late": counter(metrics, "tritonscale_cascade_tier1_timeout_total")}

        # Stage 1: 16 requests at once, none escalating, 0.5-s deadlines. Two stage-1
        # threads, 100 ms per tier-1 call: 8 rounds (0.8 s) would be needed, so the
        # requests still waiting for a thread at 0.5 s are dropped there.
        n = 16
        before = totals()
        errors = _send(tier1.url, unsure[:n], threshold=0.0, timeout_s=0.5)
        dropped = [e for e in errors if e]
        a1 = _stage_counter(metrics, "tier1") - before["a1"]
        # A request a thread took just before its deadline has its tier-1 call cut
        # there (answered with an error, counted in ..._tier1_timeout_total), though
        # tier 1 computes it: Triton does not cancel a call it runs.
        late = [e for e in dropped if TIER1_LATE in e]
        # (At least the first is served: a thread takes it at once. The router's
        # batcher may hand all of them to one instance, hence not n - threads.)
        assert 1 <= len(dropped) <= n - 1, errors
        assert all(("not sent to tier1" in e and "deadline" in e) or e in late
                   for e in dropped), dropped
        assert a1 + len(late) == len(dropped)
        # Tier 1 computed the requests it was sent only (its statistics settle after
        # the responses: wait for them, then check nothing more came).
        assert _inferences(pod1, before["t1"] + n - a1) == before["t1"] + n - a1
        after = totals()
        assert after["t1"] - before["t1"] == n - a1
        assert after["late"] - before["late"] == len(late)
        assert after["req"] - before["req"] == n - a1 - len(late)
        assert after["esc"] == before["esc"] and after["a2"] == before["a2"]

        # Stage 2: 8 requests at once, all escalating, 1-s deadlines. Stage 1 passes
        # them within 0.4 s; the two stage-2 threads are then held 1.5 s by tier 2,
        # so the requests waiting behind them are dropped before their tier-2 call.
        n = 8
        before = after
        assert counter(metrics, PENDING) == 0  # the router's pending gauge, at rest
        with ThreadPoolExecutor(1) as bg:
            sending = bg.submit(_send, tier1.url, unsure[:n], threshold=1.0, timeout_s=1.0)
            # While the tier-2 calls hold both stage-2 threads (1.5 s), the requests
            # behind them are held too: the gauge shows more than the threads.
            peak = 0.0
            while not sending.done() and peak <= threads:
                peak = max(peak, counter(metrics, PENDING))
                time.sleep(0.05)
            errors = sending.result()
        assert peak > threads, peak
        # Every request answered: the gauge is back to 0 (it is decremented after the
        # answer is sent, so allow the router a moment).
        deadline = time.monotonic() + 10
        while counter(metrics, PENDING) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counter(metrics, PENDING) == 0
        dropped = [e for e in errors if e]
        a1 = _stage_counter(metrics, "tier1") - before["a1"]
        a2 = _stage_counter(metrics, "tier2") - before["a2"]
        late = [e for e in dropped if TIER1_LATE in e]
        assert a2 >= 1 and a1 + a2 + len(late) == len(dropped), (a1, a2, errors)
        assert sum("not sent to tier2" in e for e in dropped) == a2, dropped
        called = n - a1 - a2 - len(late)
        assert called >= 1
        # Tier 2 computed no dropped request. It may compute fewer than were called:
        # a call with a moment left can time out before its request reaches tier 2
        # (a fallback all the same).
        t2 = _inferences(pod2, before["t2"] + called) - before["t2"]
        assert 1 <= t2 <= called, (t2, called)
        after = totals()
        assert after["t1"] - before["t1"] == n - a1
        assert after["t2"] - before["t2"] == t2
        answered = n - a1 - len(late)  # tier 1 answered (and routed) these
        assert after["req"] - before["req"] == answered
        assert after["esc"] - before["esc"] == answered
        # Each tier-2 call ended at its client's 1-s deadline, before tier 2's 1.5 s
        # (and the 10-s tier2_timeout_s): tier 1's answer, a fallback.
        assert after["fb"] - before["fb"] == called
    finally:
        pod1.close()
        pod2.close()
        tier1.stop()
        tier2.stop()

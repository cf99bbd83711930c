"""A real cascade's curve, measured by ``tritonscale profile --cascade`` on real models.

Two classifiers are trained at setup on scikit-learn's bundled digits (a small linear
model and a stronger MLP), their weights written as numpy arrays into Python-backend
models (tests/harness/real/models/digits), served by the real tritonserver. The CLI sends the
held-out half to both and prints ``escalateBelow``; nothing of the curve is typed in.

The tiers sleep like the sleepy model (tier 1 15 + 2 b ms per batch of b, tier 2
30 + 6 b ms), so their service times are GPU-like and well above this 2-core
machine's scheduling noise. The router runs in its own tritonserver beside a copy
of tier 1 under the spec's model name (a tier-1 pod) and calls tier 2's server, which
serves the MLP under that name too (a tier-2 pod), over HTTP, as in a cluster. The
router is the one the operator renders (core/cascade_render.py: its config.pbtxt with
the instance count, batching and parameters, and model.py), with only the two
cluster-only values (the tier-2 Service URL, the ConfigMap mount path) pointed at
their local stand-ins.
The last test compares the real cascade's end-to-end p95/p99 under open-loop load
with what the planner predicts for that load from the measured profiles and curve.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from tests.harness.real.digits import ask, cascade_spec, counter, train, write_model
from tests.harness.real.servers import (
    PrometheusServer,
    ScrapeTarget,
    TritonServer,
    find_triton,
    prometheus_query,
    wait_until_scraped,
)

from tritonscale.core import cascade_render as cr
from tritonscale.core.spec import ScaledModelSpec, parse_spec
from tritonscale.router import router_source

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
TIER1, TIER2 = "digits_linear", "digits_mlp"
# The spec's model name: tier 1 in the router's server, tier 2 in the other, as pods.
MODEL = "digits"
SM, NS = "digits", "real"
# Sleep per batch of b: base_ms + per_item_ms * b (see models/digits/1/model.py).
TIMING = {TIER1: (15.0, 2.0), TIER2: (30.0, 6.0)}


@pytest.fixture(scope="module")
def digits(real_log_dir: Path) -> Any:
    d = train()
    workdir = real_log_dir / "triton-cascade"
    workdir.mkdir(parents=True, exist_ok=True)
    server = TritonServer(workdir=workdir, models=[TIER1, TIER2, MODEL],
                          install=find_triton())
    server.repo.mkdir(parents=True, exist_ok=True)
    write_model(server.repo, TIER1, d.tier1, TIMING[TIER1])
    write_model(server.repo, TIER2, d.tier2, TIMING[TIER2])
    write_model(server.repo, MODEL, d.tier2, TIMING[TIER2])  # tier 2, as a tier-2 pod
    sample = workdir / "sample.npz"
    np.savez(sample, x=d.x, y=d.y)
    server.start()
    try:
        yield server, sample, d.tier1_accuracy, d.tier2_accuracy
    finally:
        server.stop()


@pytest.fixture(scope="module")
def curve_run(digits: Any) -> subprocess.CompletedProcess[str]:
    """``tritonscale profile --cascade`` on the live tier models (the CLI, as a user runs it)."""
    server, sample, _acc1, _acc2 = digits
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    return subprocess.run(
        [sys.executable, "-m", "tritonscale", "profile", "--cascade", "--url", server.url,
         "--model", TIER1, "--tier2-model", TIER2, "--sample", str(sample),
         "--thresholds", "0.3", "0.5", "0.7", "0.9"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )


def test_profile_cascade_measures_the_curve_on_the_live_models(
    digits: Any, curve_run: subprocess.CompletedProcess[str]
) -> None:
    _server, _sample, acc1, acc2 = digits
    out = curve_run
    assert out.returncode == 0, out.stderr
    block = yaml.safe_load(out.stdout)["escalateBelow"]
    assert [p["threshold"] for p in block] == [0.3, 0.5, 0.7, 0.9]
    esc = [p["escalated"] for p in block]
    acc = [p["accuracy"] for p in block]
    assert esc == sorted(esc) and 0 < esc[-1] <= 1
    # The live models' answers match the trained ones: tier 1 alone below tier 2 alone.
    assert f"tier 1 alone {acc1:.4f}" in out.stderr and f"tier 2 alone {acc2:.4f}" in out.stderr
    assert acc1 < acc2
    # Escalating the unsure inputs buys most of tier 2's accuracy for a fraction of them.
    assert acc[-1] > acc1 + 0.5 * (acc2 - acc1)
    assert esc[0] < 0.5
    # The printed block is a valid curve for a spec whose floor it meets.
    spec = parse_spec(cascade_spec(
        block, accuracies=(round(acc1, 4), round(acc2, 4)),
        profiles=({"accelerator": "CPU", "batches": [{"size": 1, "latencyMs": 1}]},
                  {"accelerator": "CPU", "batches": [{"size": 1, "latencyMs": 2}]}),
        min_accuracy=round(max(acc), 4)))
    assert spec.cascade is not None and len(spec.cascade.points) == 4


# ------------------------------------------------------------------ the router, for real

def _router_spec() -> ScaledModelSpec:
    """A cascade of the digits models: what the router is rendered from (its tensors
    and model name; the threshold it runs comes from the file)."""
    return parse_spec(cascade_spec([{"threshold": 0.5, "escalated": 0.1, "accuracy": 0.93}]))


ROUTER = cr.router_model(_router_spec())


def _rendered_router(tier2_url: str, threshold_file: Path) -> dict[str, str]:
    """The router ConfigMap's data as the operator renders it, with the tier-2 Service
    URL and the threshold ConfigMap's mount path pointed at their local stand-ins."""
    data = cr.router_data(_router_spec(), SM, NS, router_source())
    cfg = data["config.pbtxt"]
    for key, value in {cr.tier2_url(SM, NS): tier2_url,
                       cr.THRESHOLD_FILE: str(threshold_file)}.items():
        assert key in cfg
        cfg = cfg.replace(key, value)
    return {**data, "config.pbtxt": cfg}


@pytest.fixture(scope="module")
def router(digits: Any, real_log_dir: Path) -> Any:
    """A tier-1 pod: tritonserver with tier 1 and the router; tier 2 is ``digits``'s server."""
    tier2, _sample, _acc1, _acc2 = digits
    workdir = real_log_dir / "triton-router"
    workdir.mkdir(parents=True, exist_ok=True)
    thr_file = workdir / "threshold"
    thr_file.write_text("0.5\n")
    server = TritonServer(workdir=workdir, models=[MODEL, ROUTER], install=find_triton())
    server.repo.mkdir(parents=True, exist_ok=True)
    # Tier 1 under the spec's model name (what the rendered router calls).
    shutil.copytree(tier2.repo / TIER1, server.repo / MODEL)
    cfg = server.repo / MODEL / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(f'name: "{TIER1}"', f'name: "{MODEL}"'))
    data = _rendered_router(f"http://{tier2.url}", thr_file)
    (server.repo / ROUTER / "1").mkdir(parents=True)
    (server.repo / ROUTER / "1" / "model.py").write_text(data["model.py"])
    (server.repo / ROUTER / "config.pbtxt").write_text(data["config.pbtxt"])
    server.start(timeout=180.0)
    try:
        yield server, thr_file
    finally:
        server.stop()


def test_router_escalates_changes_threshold_live_and_prometheus_scrapes_it(
    digits: Any, router: Any, real_log_dir: Path
) -> None:
    from tritonscale.adapters.triton import MetricsScraper

    tier2, sample, _acc1, _acc2 = digits
    server, thr_file = router
    data = np.load(sample)
    x, y = data["x"], data["y"]
    prom = PrometheusServer(real_log_dir / "triton-router-prom", [
        ScrapeTarget(f"127.0.0.1:{server.metrics_port}", {"namespace": "t"})])
    try:
        prom.start()
        wait_until_scraped(prom, 1)
        # Ground truth from tier 1 and tier 2 alone: what the router must reproduce.
        conf, r1, r2 = _answers(tier2, x, y)
        # The operator's own scraper of a tier-1 pod (metrics.source: triton).
        scraper = MetricsScraper(server.metrics_url, ROUTER, timeout_s=5.0)
        for thr in (0.5, 0.9):
            thr_file.write_text(f"{thr}\n")  # no restart: the router re-reads it
            scraper.signals(95.0)  # the scrape the next one is compared with
            before = counter(server.metrics_url, "tritonscale_cascade_escalated_total")
            got = ask(server.url, ROUTER, x)
            esc = counter(server.metrics_url, "tritonscale_cascade_escalated_total") - before
            want_esc = int(np.count_nonzero(conf < thr))
            assert esc == want_esc, (thr, esc, want_esc)
            sig = scraper.signals(95.0)
            assert sig.escalation_error == "" and sig.escalated == pytest.approx(
                want_esc / len(x), abs=1e-9), (thr, sig)
            want_acc = float(np.mean(np.where(conf < thr, r2, r1)))
            assert float(np.mean(got == y)) == pytest.approx(want_acc, abs=1e-9), thr
        assert counter(server.metrics_url, "tritonscale_cascade_fallback_total") == 0
        # Prometheus scrapes the escalation counters from the metrics port.
        deadline = time.monotonic() + 30
        seen = 0.0
        while time.monotonic() < deadline:
            res = prometheus_query(prom.url, "tritonscale_cascade_escalated_total")
            seen = float(res[0]["value"][1]) if res else 0.0  # type: ignore[index]
            if seen >= counter(server.metrics_url, "tritonscale_cascade_escalated_total"):
                break
            time.sleep(0.5)
        assert seen == counter(server.metrics_url, "tritonscale_cascade_escalated_total") > 0
    finally:
        prom.stop()


def _answers(server: TritonServer, x: np.ndarray, y: np.ndarray) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    from tritonscale.adapters.cascade_profiler import measure

    a = measure(server.url, TIER1, server.url, TIER2, x, y, input_name="INPUT",
                confidence="CONFIDENCE", label="LABEL")
    return a.confidence, a.tier1_right, a.tier2_right


def test_a_request_that_does_not_escalate_never_waits_for_tier2(
    digits: Any, router: Any
) -> None:
    """Requests in flight together, half escalating (threshold 1) and half not
    (threshold 0): the router answers each on its own, so the kept ones come back at
    tier 1's pace while the others pay tier 2 (30 + 6 b ms of sleep) on top. A router
    that answered its batch after the batch's tier-2 call would hold the kept ones too."""
    import threading

    import tritonclient.http as httpclient

    tier2, sample, _acc1, _acc2 = digits
    server, _thr_file = router
    x = np.load(sample)["x"]
    conf, _r1, _r2 = _answers(tier2, x, np.zeros(len(x), dtype=np.int64))
    rows = x[conf < 0.99]  # below threshold 1: every one escalates there
    took: dict[float, list[float]] = {0.0: [], 1.0: []}
    lock = threading.Lock()

    def client(thr: float, seed: int) -> None:
        c = httpclient.InferenceServerClient(server.url, network_timeout=30)
        try:
            for i in range(12):
                t = httpclient.InferInput("INPUT", [1, 64], "FP32")
                row = rows[(seed * 12 + i) % len(rows)]
                t.set_data_from_numpy(np.ascontiguousarray(row.reshape(1, 64)))
                start = time.perf_counter()
                c.infer(ROUTER, [t], parameters={"threshold": thr})
                with lock:
                    took[thr].append((time.perf_counter() - start) * 1000.0)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(float(k % 2), k)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    kept, escalated = (float(np.median(took[t])) for t in (0.0, 1.0))
    print(f"\nmedian latency: kept {kept:.1f} ms, escalated {escalated:.1f} ms "
          f"({len(took[0.0])} and {len(took[1.0])} requests)")
    assert len(took[0.0]) == len(took[1.0]) == 48
    base2, _per_item = TIMING[TIER2]
    assert kept < escalated - base2 * 2 / 3, (kept, escalated)


# ------------------------------------------------------------------ latency vs the planner

LOAD_RPS = 40.0  # open-loop Poisson arrivals at the router (one request = one image)
LOAD_SECONDS = 30.0
RUNS = 3
# A load whose worst send is later than this did not run open loop at the asked rate.
MAX_LATENESS_S = 0.1
MAX_ATTEMPTS = 6
SETTLE_SECONDS = 3.0
ROUTER_SUMMARY_REFRESH_S = 0.5  # data/router/model.py's SUMMARY_REFRESH_S
GOAL = 0.20  # |predicted - measured| / measured, per percentile (issue 10, item 7)


def _idle_paths(router_server: TritonServer, tier2: TritonServer, rows: np.ndarray,
                requests: int = 20) -> tuple[float, float, float]:
    """At idle, one request at a time, from server-side durations (the router's own
    duration counter: Triton's statistics of the router end when its execute hands
    the request off; Triton's statistics of both tiers):

    * the hop: router duration of an escalated request minus that of the same request
      not escalated minus tier 2's own duration of it (the HTTP/JSON call to tier 2:
      what ``spec.cascade.hopMs`` stands for);
    * the router's own cost on every request (router minus tier 1), reported only:
      the planner has no term for it, so it counts against the prediction;
    * the client overhead: client latency minus the router's duration (HTTP,
      tritonclient's Python, Triton's front end), subtracted from client percentiles
      as tests/real/test_perf_model_real.py does.
    """
    import tritonclient.http as httpclient

    from tritonscale.adapters.triton import TritonPod

    pod1, pod2 = TritonPod(router_server.url), TritonPod(tier2.url)
    client = httpclient.InferenceServerClient(router_server.url, network_timeout=30)
    hops: list[float] = []
    own: list[float] = []
    client_gaps: list[float] = []

    def one(row: np.ndarray, thr: float) -> tuple[float, float, float, float] | None:
        t = httpclient.InferInput("INPUT", [1, 64], "FP32")
        t.set_data_from_numpy(np.ascontiguousarray(row.reshape(1, 64)))
        b = (pod1.statistics(MODEL), pod2.statistics(MODEL))
        r_b = (counter(router_server.metrics_url, "tritonscale_cascade_request_duration_us"),
               counter(router_server.metrics_url, "tritonscale_cascade_requests_total"))
        start = time.perf_counter()
        client.infer(ROUTER, [t], parameters={"threshold": thr})
        client_ms = (time.perf_counter() - start) * 1000.0
        a = (pod1.statistics(MODEL), pod2.statistics(MODEL))
        r_a = (counter(router_server.metrics_url, "tritonscale_cascade_request_duration_us"),
               counter(router_server.metrics_url, "tritonscale_cascade_requests_total"))
        if any(v is None for v in (*b, *a)) or r_a[1] - r_b[1] != 1:
            return None
        d = [(y - x).success for x, y in zip(b, a, strict=True)]  # type: ignore[operator]
        if d[0].count != 1 or d[0].mean_ms is None:
            return None
        t2 = d[1].mean_ms if d[1].count == 1 and d[1].mean_ms is not None else 0.0
        return client_ms, (r_a[0] - r_b[0]) / 1000.0, d[0].mean_ms, t2

    try:
        for i in range(requests):
            row = rows[i % len(rows)]
            kept = one(row, 0.0)  # confidence is never below 0: tier 1 only
            esc = one(row, 1.0)  # below 1 (every row used here): escalated
            if kept is None or esc is None or esc[3] <= 0:
                continue
            client_gaps.append(kept[0] - kept[1])
            own.append(kept[1] - kept[2])
            hops.append(esc[1] - kept[1] - esc[3])
    finally:
        client.close()
        pod1.close()
        pod2.close()
    if len(hops) < requests // 2:
        pytest.fail(f"statistics answered for only {len(hops)}/{requests} idle requests")
    med = float(np.median(hops)), float(np.median(own)), float(np.median(client_gaps))
    return max(med[0], 0.0), med[1], med[2]


def _open_loop(url: str, rows: np.ndarray, rate: float, duration_s: float,
               seed: int, workers: int = 24) -> Any:
    """Open-loop Poisson arrivals at the router, one image each (as harness/real/load.py)."""
    import queue
    import threading

    import tritonclient.http as httpclient
    from tests.harness.real.load import LoadResult, Record, poisson_arrivals

    arrivals = poisson_arrivals(rate, duration_s, seed)
    order = np.random.default_rng(seed).integers(0, len(rows), size=len(arrivals))
    work: queue.Queue[tuple[float, int] | None] = queue.Queue()
    records: list[Record] = []
    lock = threading.Lock()

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=10,
                                                  network_timeout=30)
        try:
            while (item := work.get()) is not None:
                due, i = item
                t = httpclient.InferInput("INPUT", [1, 64], "FP32")
                t.set_data_from_numpy(np.ascontiguousarray(rows[i].reshape(1, 64)))
                sent = time.time()
                try:
                    client.infer(ROUTER, [t])
                    ok = True
                except Exception:
                    ok = False
                with lock:
                    records.append(Record(due, sent, time.time(), ok))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for th in threads:
        th.start()
    start_wall, start_mono = time.time(), time.monotonic()
    for (off, _slow), i in zip(arrivals, order, strict=True):
        delay = start_mono + off - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put((start_wall + off, int(i)))
    for _ in threads:
        work.put(None)
    for th in threads:
        th.join(60)
    return LoadResult(tuple(sorted(records, key=lambda r: r.done)), start_wall, time.time())


def _reload_router(server: TritonServer, rows: np.ndarray) -> None:
    """Unload and load the router (resets its latency summary), then warm it up."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url, network_timeout=60)
    try:
        client.unload_model(ROUTER)
        client.load_model(ROUTER)
        for i in range(2 * cr.ROUTER_INSTANCES):
            t = httpclient.InferInput("INPUT", [1, 64], "FP32")
            t.set_data_from_numpy(np.ascontiguousarray(rows[i].reshape(1, 64)))
            client.infer(ROUTER, [t])
    finally:
        client.close()


def test_end_to_end_p95_p99_within_20_percent_of_the_planner(
    digits: Any, router: Any, curve_run: subprocess.CompletedProcess[str]
) -> None:
    import requests
    from tests.harness.real.load import percentile

    from tritonscale.adapters import profiler
    from tritonscale.adapters.triton import MetricsSnapshot
    from tritonscale.core import cascade as cc

    tier2, sample, acc1, acc2 = digits
    server, thr_file = router
    assert curve_run.returncode == 0, curve_run.stderr
    block = yaml.safe_load(curve_run.stdout)["escalateBelow"]
    x = np.load(sample)["x"]
    # The planner's inputs, all measured: each tier's profile by `tritonscale profile`
    # (tier 1 in the tier-1 pod the router calls), the curve by `profile --cascade`,
    # the hop at idle.
    profiles = {}
    for tier, url in ((TIER1, server.url), (TIER2, tier2.url)):
        res = profiler.profile(url, MODEL, accelerator="CPU", requests_per_batch=8,
                               warmup=2, concurrency=(1,), sweep_seconds=1.0)
        print("\n" + res.table())
        profiles[tier] = res.spec_profile()
    conf, _r1, _r2 = _answers(tier2, x, np.zeros(len(x), dtype=np.int64))
    hop_ms, router_ms, overhead_ms = _idle_paths(server, tier2, x[conf < 0.99])
    # The threshold escalating closest to a third of the requests: the p95 and p99
    # then lie on the escalated path, the median on tier 1 alone.
    point = min(block, key=lambda p: abs(p["escalated"] - 0.33))
    body = cascade_spec(block, accuracies=(round(acc1, 4), round(acc2, 4)),
                        profiles=(profiles[TIER1], profiles[TIER2]),
                        min_accuracy=point["accuracy"])
    body["nodePools"][0]["maxReplicas"] = 4
    body["slo"]["latency"] = {"percentile": 95, "targetMs": 1000}
    body["scaling"] = {"minReplicas": 2, "maxReplicas": 4}
    body["cascade"]["hopMs"] = round(hop_ms, 3)
    spec = parse_spec(body)
    out = cc.plan_cascade(spec, cc.CascadeRequest(
        LOAD_RPS, min_replicas=2, max_replicas=4,
        thresholds=frozenset({float(point["threshold"])})))
    ch = out.chosen
    # A load it plans for with what runs here: one replica per tier.
    assert ch.feasible and ch.counts == {("linear", "cpu"): 1, ("mlp", "cpu"): 1}, ch
    prof = cc._profiles(spec)
    m1 = cc.tier_mixture(ch.tier1, prof, LOAD_RPS)
    m2 = cc.tier_mixture(ch.tier2, prof, ch.escalated * LOAD_RPS)
    assert m1 is not None and m2 is not None
    predicted = (ch.latency_ms, cc.mixture_percentile(m1, m2, ch.escalated, hop_ms, 99.0))

    thr_file.write_text(f"{point['threshold']}\n")
    # Robust on a shared 2-core machine: RUNS separate loads (the router reloaded before
    # each, which resets its summary), each percentile the median over the runs,
    # so one run disturbed by a neighbour does not decide the outcome.
    runs = []
    disturbed: list[str] = []
    for i in range(MAX_ATTEMPTS):
        if len(runs) == RUNS:
            break
        _reload_router(server, x)
        before = counter(server.metrics_url, "tritonscale_cascade_escalated_total")
        served = counter(server.metrics_url, "tritonscale_cascade_requests_total")
        res = _open_loop(server.url, x, LOAD_RPS, LOAD_SECONDS, seed=7 + i)
        time.sleep(2 * ROUTER_SUMMARY_REFRESH_S)  # the router's summary has every answer
        text = requests.get(server.metrics_url, timeout=5).text
        summary = MetricsSnapshot.parse(text, ROUTER, time.monotonic()).quantiles
        if not all(q in summary for q in (0.95, 0.99)):
            pytest.fail(f"no latency summary for {ROUTER}: {summary}")
        escalated = (counter(server.metrics_url, "tritonscale_cascade_escalated_total")
                     - before) / max(counter(server.metrics_url,
                                             "tritonscale_cascade_requests_total") - served, 1.0)
        kept = [r for r in res.ok_records if r.scheduled >= res.started + SETTLE_SECONDS]
        assert res.errors == 0, f"run {i}: {res.errors} failed requests"
        # The load was the one planned for: the asked rate, the curve's escalation.
        got_rps = len(kept) / (LOAD_SECONDS - SETTLE_SECONDS)
        assert got_rps == pytest.approx(LOAD_RPS, rel=0.15), f"run {i}: {got_rps:.1f} req/s"
        assert escalated == pytest.approx(ch.escalated, abs=0.05), f"run {i}"
        client_run = tuple(percentile([r.latency_ms for r in kept], p) - overhead_ms
                           for p in (95.0, 99.0))
        triton_run = (summary[0.95] / 1000.0, summary[0.99] / 1000.0)
        if res.max_lateness_s > MAX_LATENESS_S:
            # The load generator could not keep its open-loop schedule: the machine was
            # starved (the server as much as the client), so this run did not measure the
            # planned load. It is reported and repeated, never counted.
            disturbed.append(f"run {i}: send delay {res.max_lateness_s * 1000:.0f} ms, "
                             f"router p95/p99 {triton_run[0]:.1f}/{triton_run[1]:.1f} ms")
            print(f"\ndisturbed {disturbed[-1]}")
            continue
        runs.append((triton_run, client_run, escalated, len(kept), res.max_lateness_s))
        print(f"\nrun {i}: router p95/p99 {triton_run[0]:.1f}/{triton_run[1]:.1f} ms, client "
              f"- overhead {client_run[0]:.1f}/{client_run[1]:.1f} ms, escalated "
              f"{escalated:.3f}, {len(kept)} requests, worst send delay "
              f"{res.max_lateness_s * 1000:.0f} ms")
    if len(runs) < RUNS:
        pytest.fail(f"only {len(runs)} of {MAX_ATTEMPTS} loads kept their schedule (the "
                    f"machine is starved): {disturbed}")
    summary = {0.95: float(np.median([r[0][0] for r in runs])) * 1000.0,
               0.99: float(np.median([r[0][1] for r in runs])) * 1000.0}
    client = (float(np.median([r[1][0] for r in runs])),
              float(np.median([r[1][1] for r in runs])))
    escalated = float(np.median([r[2] for r in runs]))
    kept_n = sum(r[3] for r in runs)
    lateness = max(r[4] for r in runs)
    triton = (summary[0.95] / 1000.0, summary[0.99] / 1000.0)
    err = {w: tuple((p - m) / m for p, m in zip(predicted, got, strict=True))
           for w, got in (("router", triton), ("client", client))}
    print(f"\nthreshold {point['threshold']} escalated {ch.escalated:.3f} (observed "
          f"{escalated:.3f}) at {LOAD_RPS:g} req/s, {kept_n} requests in {RUNS} runs, worst "
          f"send delay {lateness * 1000:.0f} ms; hop {hop_ms:.2f} ms, router's own "
          f"{router_ms:.2f} ms, client overhead {overhead_ms:.2f} ms\n"
          f"p95/p99 predicted {predicted[0]:.1f}/{predicted[1]:.1f} ms; the router's summary "
          f"{triton[0]:.1f}/{triton[1]:.1f} ms ({err['router'][0]:+.0%}/{err['router'][1]:+.0%}); "
          f"client - overhead {client[0]:.1f}/{client[1]:.1f} ms "
          f"({err['client'][0]:+.0%}/{err['client'][1]:+.0%}) (medians of the runs)")
    for which, errs in err.items():
        for p, e in zip((95, 99), errs, strict=True):
            assert abs(e) <= GOAL, f"p{p} vs {which}: predicted {e:+.0%} off"

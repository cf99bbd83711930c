"""A real cascade's curve, measured by ``tritonscale profile --cascade`` on real models.

Two classifiers are trained at setup on scikit-learn's bundled digits (a small linear
model and a stronger MLP), their weights written as numpy arrays into Python-backend
models (tests/harness/real/models/digits), served by the real tritonserver. The CLI sends the
held-out half to both and prints ``escalateBelow``; nothing of the curve is typed in.
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
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from tests.harness.real.servers import (
    MODELS_DIR,
    PrometheusServer,
    ScrapeTarget,
    TritonServer,
    find_triton,
    prometheus_query,
    wait_until_scraped,
)

from tritonscale.core.spec import parse_spec

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]
TIER1, TIER2 = "digits_linear", "digits_mlp"


def _write(repo: Path, name: str, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
    dst = repo / name
    shutil.copytree(MODELS_DIR / "digits", dst, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = (dst / "config.pbtxt").read_text().replace('name: "digits"', f'name: "{name}"')
    (dst / "config.pbtxt").write_text(cfg)
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    np.savez(dst / "1" / "weights.npz", **arrays)


@pytest.fixture(scope="module")
def digits(real_log_dir: Path) -> Any:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    # Tier 1: deliberately small (strong L2) so its confidence separates easy and hard.
    small = LogisticRegression(C=0.02, max_iter=500).fit(xtr, ytr)
    big = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=0).fit(xtr, ytr)
    workdir = real_log_dir / "triton-cascade"
    workdir.mkdir(parents=True, exist_ok=True)
    server = TritonServer(workdir=workdir, models=[TIER1, TIER2], install=find_triton())
    server.repo.mkdir(parents=True, exist_ok=True)
    _write(server.repo, TIER1, [(small.coef_.T, small.intercept_)])
    _write(server.repo, TIER2, list(zip(big.coefs_, big.intercepts_, strict=True)))
    sample = workdir / "sample.npz"
    np.savez(sample, x=xte, y=yte)
    server.start()
    try:
        yield server, sample, small.score(xte, yte), big.score(xte, yte)
    finally:
        server.stop()


def test_profile_cascade_measures_the_curve_on_the_live_models(digits: Any) -> None:
    server, sample, acc1, acc2 = digits
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    out = subprocess.run(
        [sys.executable, "-m", "tritonscale", "profile", "--cascade", "--url", server.url,
         "--model", TIER1, "--tier2-model", TIER2, "--sample", str(sample),
         "--thresholds", "0.3", "0.5", "0.7", "0.9"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
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
    spec = parse_spec({
        "model": {"name": "digits", "repository": "s3://m"},
        "variants": [
            {"name": "linear", "precision": "fp32", "accuracy": round(acc1, 4),
             "profiles": [{"accelerator": "CPU", "batches": [{"size": 1, "latencyMs": 1}]}]},
            {"name": "mlp", "precision": "fp32", "accuracy": round(acc2, 4),
             "profiles": [{"accelerator": "CPU", "batches": [{"size": 1, "latencyMs": 2}]}]},
        ],
        "nodePools": [{"name": "cpu", "accelerator": "CPU", "pricePerHour": 0.1}],
        "slo": {"latency": {"targetMs": 50}, "minAccuracy": round(max(acc), 4)},
        "cascade": {"tiers": [{"variant": "linear", "escalateBelow": block},
                              {"variant": "mlp"}],
                    "confidence": {"output": "CONFIDENCE"},
                    "io": {"maxBatchSize": 64,
                           "inputs": [{"name": "INPUT", "dataType": "FP32", "dims": [64]}],
                           "outputs": [{"name": "LABEL", "dataType": "INT32", "dims": [1]},
                                       {"name": "CONFIDENCE", "dataType": "FP32",
                                        "dims": [1]}]}},
    })
    assert spec.cascade is not None and len(spec.cascade.points) == 4


# ------------------------------------------------------------------ the router, for real

ROUTER = "digits_cascade"
ROUTER_SOURCE = ROOT / "operator" / "tritonscale" / "data" / "router" / "model.py"


def _router_config(tier2_url: str, threshold_file: Path) -> str:
    params = {
        "tier1_model": TIER1, "tier2_url": tier2_url, "tier2_model": TIER2,
        "confidence_output": "CONFIDENCE", "threshold": "0.5",
        "threshold_file": str(threshold_file), "tier2_timeout_s": "10",
    }
    body = "\n".join(
        f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in params.items())
    return f"""name: "{ROUTER}"
backend: "python"
max_batch_size: 64
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 64 ] }} ]
output [
  {{ name: "LABEL" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "CONFIDENCE" data_type: TYPE_FP32 dims: [ 1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{body}
"""


def _ask(url: str, x: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
    try:
        labels = []
        for i in range(0, len(x), 32):
            part = np.ascontiguousarray(x[i:i + 32])
            t = httpclient.InferInput("INPUT", list(part.shape), "FP32")
            t.set_data_from_numpy(part)
            res = client.infer(ROUTER, [t])
            labels.append(res.as_numpy("LABEL").reshape(-1))
        return np.concatenate(labels)
    finally:
        client.close()


def test_router_escalates_changes_threshold_live_and_prometheus_scrapes_it(
    digits: Any, real_log_dir: Path
) -> None:
    tier2, sample, _acc1, _acc2 = digits
    data = np.load(sample)
    x, y = data["x"], data["y"]
    workdir = real_log_dir / "triton-router"
    workdir.mkdir(parents=True, exist_ok=True)
    thr_file = workdir / "threshold"
    thr_file.write_text("0.5\n")
    server = TritonServer(workdir=workdir, models=[TIER1, ROUTER], install=find_triton())
    server.repo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tier2.repo / TIER1, server.repo / TIER1)
    (server.repo / ROUTER / "1").mkdir(parents=True)
    shutil.copy2(ROUTER_SOURCE, server.repo / ROUTER / "1" / "model.py")
    (server.repo / ROUTER / "config.pbtxt").write_text(
        _router_config(f"http://{tier2.url}", thr_file))
    server.start()
    prom = PrometheusServer(workdir / "prom", [
        ScrapeTarget(f"127.0.0.1:{server.metrics_port}", {"namespace": "t"})])
    try:
        prom.start()
        wait_until_scraped(prom, 1)
        # Ground truth from tier 1 and tier 2 alone: what the router must reproduce.
        conf, r1, r2 = _answers(tier2, x, y)
        for thr in (0.5, 0.9):
            thr_file.write_text(f"{thr}\n")  # no restart: the router re-reads it
            before = _counter(server, "tritonscale_cascade_escalated_total")
            got = _ask(server.url, x)
            esc = _counter(server, "tritonscale_cascade_escalated_total") - before
            want_esc = int(np.count_nonzero(conf < thr))
            assert esc == want_esc, (thr, esc, want_esc)
            want_acc = float(np.mean(np.where(conf < thr, r2, r1)))
            assert float(np.mean(got == y)) == pytest.approx(want_acc, abs=1e-9), thr
        assert _counter(server, "tritonscale_cascade_fallback_total") == 0
        # Prometheus scrapes the escalation counters from the metrics port.
        deadline = time.monotonic() + 30
        seen = 0.0
        while time.monotonic() < deadline:
            res = prometheus_query(prom.url, "tritonscale_cascade_escalated_total")
            seen = float(res[0]["value"][1]) if res else 0.0  # type: ignore[index]
            if seen >= _counter(server, "tritonscale_cascade_escalated_total"):
                break
            time.sleep(0.5)
        assert seen == _counter(server, "tritonscale_cascade_escalated_total") > 0
    finally:
        prom.stop()
        server.stop()


def _answers(server: TritonServer, x: np.ndarray, y: np.ndarray) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    from tritonscale.adapters.cascade_profiler import measure

    a = measure(server.url, TIER1, server.url, TIER2, x, y, input_name="INPUT",
                confidence="CONFIDENCE", label="LABEL")
    return a.confidence, a.tier1_right, a.tier2_right


def _counter(server: TritonServer, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total

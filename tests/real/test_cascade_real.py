"""A real cascade's curve, measured by ``tritonscale profile --cascade`` on real models.

Two classifiers are trained at setup on scikit-learn's bundled digits (a small linear
model and a stronger MLP), their weights written as numpy arrays into Python-backend
models (tests/real/models/digits), served by the real tritonserver. The CLI sends the
held-out half to both and prints ``escalateBelow``; nothing of the curve is typed in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from realservers import MODELS_DIR, TritonServer, find_triton
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

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
                    "confidence": {"output": "CONFIDENCE"}},
    })
    assert spec.cascade is not None and len(spec.cascade.points) == 4

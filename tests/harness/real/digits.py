"""Two real classifiers for the cascade tests, trained at setup on scikit-learn's
bundled digits (8x8 images, 64 pixels scaled to [0, 1]): tier 1 a deliberately small
logistic regression (strong L2, so its confidence separates easy and hard inputs),
tier 2 an MLP. Their weights are written as numpy arrays into copies of the
Python-backend ``digits`` model (models/digits), which runs the layers in numpy.
"""

from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tests.harness.real.servers import MODELS_DIR

Layers = list[tuple[np.ndarray, np.ndarray]]

# The digits models' tensors (models/digits/config.pbtxt), as a cascade's ``io``.
IO: dict[str, Any] = {
    "maxBatchSize": 64,
    "inputs": [{"name": "INPUT", "dataType": "FP32", "dims": [64]}],
    "outputs": [{"name": "LABEL", "dataType": "INT32", "dims": [1]},
                {"name": "CONFIDENCE", "dataType": "FP32", "dims": [1]}],
}
CPU_PROFILE: dict[str, Any] = {"accelerator": "CPU", "batches": [{"size": 1, "latencyMs": 1}]}


def cascade_spec(escalate_below: list[dict[str, float]], *,
                 accuracies: tuple[float, float] = (0.9, 0.97),
                 profiles: tuple[dict[str, Any], dict[str, Any]] = (CPU_PROFILE, CPU_PROFILE),
                 min_accuracy: float = 0.9) -> dict[str, Any]:
    """The ``spec`` of a two-tier digits cascade (tier 1 ``linear``, tier 2 ``mlp``) on
    one CPU pool, p99 <= 50 ms: callers add or change what their test needs."""
    tiers = (("linear", "fp32", accuracies[0], profiles[0]),
             ("mlp", "fp32", accuracies[1], profiles[1]))
    return {
        "model": {"name": "digits", "repository": "s3://m"},
        "variants": [{"name": n, "precision": p, "accuracy": a, "profiles": [prof]}
                     for n, p, a, prof in tiers],
        "nodePools": [{"name": "cpu", "accelerator": "CPU", "pricePerHour": 0.1}],
        "slo": {"latency": {"targetMs": 50}, "minAccuracy": min_accuracy},
        "cascade": {"tiers": [{"variant": "linear", "escalateBelow": escalate_below},
                              {"variant": "mlp"}],
                    "confidence": {"output": "CONFIDENCE"}, "io": IO},
    }


@dataclass(frozen=True)
class Digits:
    """The held-out half (``x``, ``y``) and both tiers' layers and accuracies on it."""

    x: np.ndarray
    y: np.ndarray
    tier1: Layers
    tier2: Layers
    tier1_accuracy: float
    tier2_accuracy: float


def train() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    small = LogisticRegression(C=0.02, max_iter=500).fit(xtr, ytr)
    big = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=0).fit(xtr, ytr)
    return Digits(xte, yte, [(small.coef_.T, small.intercept_)],
                  list(zip(big.coefs_, big.intercepts_, strict=True)),
                  float(small.score(xte, yte)), float(big.score(xte, yte)))


def write_model(repo: Path, name: str, layers: Layers,
                sleep_ms: tuple[float, float] | None = None) -> None:
    """A ``digits`` model named ``name`` in ``repo`` running ``layers``; with
    ``sleep_ms`` = (base, per item), a batch of b also sleeps base + per_item * b ms."""
    dst = repo / name
    shutil.copytree(MODELS_DIR / "digits", dst, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = (dst / "config.pbtxt").read_text().replace('name: "digits"', f'name: "{name}"')
    if sleep_ms is not None:
        base, per_item = sleep_ms
        cfg += (f'parameters: {{ key: "base_ms" value: {{ string_value: "{base}" }} }}\n'
                f'parameters: {{ key: "per_item_ms" value: {{ string_value: "{per_item}" }} }}\n')
    (dst / "config.pbtxt").write_text(cfg)
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    np.savez(dst / "1" / "weights.npz", **arrays)


def ask(url: str, model: str, x: np.ndarray) -> np.ndarray:
    """``model``'s LABEL for every row of ``x`` (32 rows per request)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
    try:
        labels = []
        for i in range(0, len(x), 32):
            part = np.ascontiguousarray(x[i:i + 32])
            t = httpclient.InferInput("INPUT", list(part.shape), "FP32")
            t.set_data_from_numpy(part)
            labels.append(client.infer(model, [t]).as_numpy("LABEL").reshape(-1))
        return np.concatenate(labels)
    finally:
        client.close()


def counter(metrics_url: str, name: str) -> float:
    """The sum of metric ``name`` over its label sets on a metrics endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))

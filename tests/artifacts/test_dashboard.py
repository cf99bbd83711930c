"""The Grafana dashboard: valid JSON, its queries use only metrics that exist.

Every metric name in every PromQL expression must be either exported by the
operator (checked against the live registry of ``adapters/metrics.py``, suffixes
such as ``_total``/``_bucket`` included) or one of Triton's documented metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonscale.adapters.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[2]
CHART_DASHBOARD = REPO / "helm" / "tritonscale" / "dashboards" / "tritonscale.json"
TOP_DASHBOARD = REPO / "dashboards" / "tritonscale.json"

# Triton Inference Server's documented Prometheus metrics (docs/user_guide/metrics.md).
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_first_response_histogram_ms",
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (a small, sufficient tokenizer)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_tokenizer() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{namespace=~"$ns"}[5m]))) '
        '/ on (a) group_left b_total or vector(0) + count(c{d="e f"} > 0) / 1e6'
    )
    assert metric_names(expr) == {"x_bucket", "b_total", "c"}


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def expressions(d: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in panels(d) for t in p.get("targets", []) if t.get("expr")]
    for var in d["templating"]["list"]:
        q = var.get("query")
        if var.get("type") == "query":
            text = q["query"] if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            assert m, text
            out.append(m.group(1))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load(CHART_DASHBOARD)


def test_one_source_of_truth() -> None:
    assert TOP_DASHBOARD.read_bytes() == CHART_DASHBOARD.read_bytes()


def test_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "tritonscale"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "scaledmodel"} <= set(variables)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("targets"), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24


def test_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(expressions(dashboard))
    titles = " ".join(p["title"].lower() for p in panels(dashboard))
    for needle in ("load", "latency vs target", "replicas by variant and pool", "cost", "decisions",
                   "signal"):  # fmt: skip
        assert needle in titles, needle
    for metric in (
        "nv_inference_request_success",
        "tritonscale_observed_requests_per_second",
        "tritonscale_observed_latency_seconds",
        "tritonscale_latency_target_seconds",
        "tritonscale_predicted_latency_seconds",
        "tritonscale_desired_replicas",
        "tritonscale_ready_replicas",
        "tritonscale_cost_per_hour_dollars",
        "tritonscale_decisions_total",
        "tritonscale_signal_failures_total",
    ):
        assert metric in exprs, metric


def test_every_query_uses_exported_or_triton_metrics(dashboard: dict[str, Any]) -> None:
    exported = OperatorMetrics().metric_names()
    used: set[str] = set()
    for expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        used |= names
        unknown = {n for n in names if n not in exported and n not in TRITON_METRICS}
        assert not unknown, f"{expr!r} uses unknown metrics {unknown}"
    # Queries use the operator's label names, not made-up ones.
    assert any(n.startswith("tritonscale_") for n in used)
    assert any(n.startswith("nv_inference_") for n in used)


def test_triton_queries_use_the_podmonitor_labels(dashboard: dict[str, Any]) -> None:
    """Triton series carry the relabelled pod labels (see the chart's PodMonitor)."""
    for expr in expressions(dashboard):
        if "nv_inference_" in expr:
            assert "tritonscale_io_scaledmodel" in expr, expr
            assert re.search(r"\bscaledmodel=~", expr) is None, expr

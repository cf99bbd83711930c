"""core/spec.py: parsing, defaulting, and a table of invalid specs naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from tests.harness.fakes import load_example

from tritonscale.core.spec import (
    DEFAULT_TRITON_IMAGE,
    SpecError,
    parse_manifest,
    parse_spec,
)


def minimal() -> dict[str, Any]:
    return {
        "model": {"name": "m", "repository": "s3://r"},
        "variants": [{
            "name": "fp16", "precision": "fp16", "accuracy": 0.8,
            "profiles": [{"accelerator": "T4", "batches": [{"size": 1, "latencyMs": 3}]}],
        }],
        "nodePools": [{"name": "t4", "accelerator": "T4", "pricePerHour": 0.5}],
        "slo": {"latency": {"targetMs": 50}},
    }


def test_minimal_spec_gets_defaults() -> None:
    s = parse_spec(minimal())
    assert s.model.triton_image == DEFAULT_TRITON_IMAGE
    assert s.model.args == () and s.model.env == ()
    prof = s.variants[0].profiles[0]
    assert prof.max_batch_size == 1 and prof.max_queue_delay_ms == 0.0
    pool = s.node_pools[0]
    assert (pool.gpus_per_replica, pool.capacity_type, pool.max_replicas, pool.startup_seconds) == (
        1, "onDemand", 10, 120.0
    )
    assert s.slo.latency.percentile == 99.0
    assert s.slo.min_accuracy == 0.0 and s.slo.max_cost_per_hour is None
    assert s.slo.priority == "latency"
    sc = s.scaling
    assert (sc.min_replicas, sc.max_replicas, sc.interval_seconds) == (1, 20, 15.0)
    assert sc.scale_down_stabilization_seconds == 300.0 and sc.headroom == 0.1
    assert sc.idle_seconds == 0.0 and sc.safe_plan == ()
    assert sc.client_timeout_seconds is None  # patient clients
    assert s.metrics.source == "triton" and s.metrics.prometheus is None
    assert s.metrics.triton_metrics_port == 8002


def test_resnet50_parses() -> None:
    ns, name, s = parse_manifest(load_example("resnet50.yaml"))
    assert (ns, name) == ("default", "resnet50")
    assert [v.name for v in s.variants] == ["fp16", "int8"]
    assert s.variant("int8").config_name == "int8"
    assert s.pool("t4-spot").is_spot and not s.pool("a100-ondemand").is_spot
    assert dict(s.pool("t4-spot").node_selector)["karpenter.sh/capacity-type"] == "spot"
    assert s.pool("t4-spot").tolerations[1].to_k8s() == {
        "key": "tritonscale.io/spot", "operator": "Exists", "effect": "NoSchedule",
    }
    assert s.metrics.source == "prometheus"
    assert s.metrics.prometheus is not None
    assert s.metrics.prometheus.variant_label == "tritonscale_io_variant"
    # Batches are sorted by size; combos honour the accuracy floor.
    sizes = [b.size for b in s.variant("fp16").profile_for("T4").batches]  # type: ignore[union-attr]
    assert sizes == sorted(sizes)
    pairs = {(v.name, p.name) for v, p, _ in s.combos()}
    assert pairs >= {("int8", "l4-spot"), ("fp16", "t4-spot")}


def test_bert_parses_with_safe_plan() -> None:
    _, _, s = parse_manifest(load_example("bert.yaml"))
    assert s.scaling.safe_plan[0].variant == "distil-int8"
    assert s.variant("large-int8").repository == "s3://models/bert-large-int8"
    assert s.slo.priority == "cost"


Mutation = Callable[[dict[str, Any]], Any]

INVALID: list[tuple[str, Mutation, str]] = [
    ("missing model", lambda s: s.pop("model"), "spec.model"),
    ("missing model name", lambda s: s["model"].pop("name"), "spec.model.name"),
    ("args not strings", lambda s: s["model"].update(args=[1]), "spec.model.args[0]"),
    ("env without name", lambda s: s["model"].update(env=[{"value": "x"}]),
     "spec.model.env[0].name"),
    ("no variants", lambda s: s.update(variants=[]), "spec.variants"),
    ("bad variant name", lambda s: s["variants"][0].update(name="FP16"), "spec.variants[0].name"),
    ("long variant name", lambda s: s["variants"][0].update(name="a" * 21),
     "spec.variants[0].name"),
    ("bad precision", lambda s: s["variants"][0].update(precision="int4"),
     "spec.variants[0].precision"),
    ("accuracy > 1", lambda s: s["variants"][0].update(accuracy=1.5),
     "spec.variants[0].accuracy"),
    ("repository and configName", lambda s: s["variants"][0].update(repository="a",
                                                                    configName="b"),
     "spec.variants[0].configName"),
    ("no profiles", lambda s: s["variants"][0].update(profiles=[]),
     "spec.variants[0].profiles"),
    ("duplicate profile", lambda s: s["variants"][0]["profiles"].append(
        copy.deepcopy(s["variants"][0]["profiles"][0])), "spec.variants[0].profiles[1]"),
    ("batch over max", lambda s: s["variants"][0]["profiles"][0]["batches"].append(
        {"size": 8, "latencyMs": 9}), "spec.variants[0].profiles[0].batches[1].size"),
    ("latency falls", lambda s: s["variants"][0]["profiles"][0].update(
        maxBatchSize=8, batches=[{"size": 1, "latencyMs": 5}, {"size": 8, "latencyMs": 2}]),
     "spec.variants[0].profiles[0].batches"),
    ("zero latency", lambda s: s["variants"][0]["profiles"][0]["batches"][0].update(latencyMs=0),
     "spec.variants[0].profiles[0].batches[0].latencyMs"),
    ("no profile for any pool", lambda s: s["nodePools"][0].update(accelerator="L4"),
     "spec.variants[0].profiles"),
    ("duplicate variant", lambda s: s["variants"].append(copy.deepcopy(s["variants"][0])),
     "spec.variants[1].name"),
    ("duplicate pool", lambda s: s["nodePools"].append(copy.deepcopy(s["nodePools"][0])),
     "spec.nodePools[1].name"),
    ("negative price", lambda s: s["nodePools"][0].update(pricePerHour=-1),
     "spec.nodePools[0].pricePerHour"),
    ("bad capacity type", lambda s: s["nodePools"][0].update(capacityType="reserved"),
     "spec.nodePools[0].capacityType"),
    ("gpus > 16", lambda s: s["nodePools"][0].update(gpusPerReplica=17),
     "spec.nodePools[0].gpusPerReplica"),
    ("selector not strings", lambda s: s["nodePools"][0].update(nodeSelector={"a": 1}),
     "spec.nodePools[0].nodeSelector"),
    ("bad toleration op", lambda s: s["nodePools"][0].update(tolerations=[{"operator": "In"}]),
     "spec.nodePools[0].tolerations[0].operator"),
    ("percentile 100", lambda s: s["slo"]["latency"].update(percentile=100),
     "spec.slo.latency.percentile"),
    ("no target", lambda s: s["slo"]["latency"].pop("targetMs"), "spec.slo.latency.targetMs"),
    ("floor too high", lambda s: s["slo"].update(minAccuracy=0.9), "spec.slo.minAccuracy"),
    ("zero budget", lambda s: s["slo"].update(maxCostPerHour=0), "spec.slo.maxCostPerHour"),
    ("bad priority", lambda s: s["slo"].update(priority="speed"), "spec.slo.priority"),
    ("min > max", lambda s: s.update(scaling={"minReplicas": 5, "maxReplicas": 2}),
     "spec.scaling.minReplicas"),
    ("min > pool capacity", lambda s: s.update(scaling={"minReplicas": 11}),
     "spec.scaling.minReplicas"),
    ("interval 0", lambda s: s.update(scaling={"intervalSeconds": 0}),
     "spec.scaling.intervalSeconds"),
    ("float replicas", lambda s: s.update(scaling={"maxReplicas": 2.5}),
     "spec.scaling.maxReplicas"),
    ("spot protection not bool", lambda s: s.update(scaling={"spotProtection": "yes"}),
     "spec.scaling.spotProtection"),
    *[(f"client timeout {v!r}", lambda s, t=v: s.update(scaling={"clientTimeoutSeconds": t}),
       "spec.scaling.clientTimeoutSeconds") for v in (0, -1, 86_401, "30", True)],
    ("safe plan unknown pool", lambda s: s.update(scaling={"safePlan": [
        {"variant": "fp16", "pool": "a100", "replicas": 1}]}), "spec.scaling.safePlan[0].pool"),
    ("prometheus without url", lambda s: s.update(metrics={"prometheus": {}}),
     "spec.metrics.prometheus.url"),
    ("prometheus url scheme", lambda s: s.update(metrics={"prometheus": {"url": "prom:9090"}}),
     "spec.metrics.prometheus.url"),
    *[(f"prometheus url {why}", lambda s, u=url: s.update(metrics={"prometheus": {"url": u}}),
       "spec.metrics.prometheus.url")
      for why, url in [
          ("fragment", "http://prom:9090/#"), ("query", "http://prom:9090/?x=1"),
          ("userinfo", "http://user:pw@prom:9090"), ("no host", "http://"),
          ("port then @", "http://prom:80@evil.example/"), ("newline", "http://prom/\n"),
          ("backslash", "http://prom\\@evil/"), ("space", "http://prom /"),
      ]],
    ("prometheus source without block", lambda s: s.update(metrics={"source": "prometheus"}),
     "spec.metrics.prometheus"),
    ("bad label name", lambda s: s.update(metrics={"prometheus": {
        "url": "http://p", "labels": {"pool": "my-pool"}}}), "spec.metrics.prometheus.labels.pool"),
    ("bad source", lambda s: s.update(metrics={"source": "statsd"}), "spec.metrics.source"),
    ("env from a Secret", lambda s: s["model"].update(env=[
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     "spec.model.env[0].valueFrom.secretKeyRef"),
    # A trailing newline: Python's "$" also matches before it; the CRD's RE2 does not.
    *[(f"parentRef {key} with a trailing newline",
       lambda s, k=key: s.update(routing={"parentRefs": [{"name": "gw", k: "gw\n"}]}),
       f"spec.routing.parentRefs[0].{key}") for key in ("name", "namespace", "sectionName")],
    ("port 0", lambda s: s.update(metrics={"tritonMetricsPort": 0}),
     "spec.metrics.tritonMetricsPort"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_names_field(case: str, mutate: Mutation, field: str) -> None:
    s = minimal()
    mutate(s)
    with pytest.raises(SpecError) as ei:
        parse_spec(s)
    paths = [e.path for e in ei.value.errors]
    # Exact path, or (duplicate keys) the offending list entry.
    assert field in paths or (
        field.endswith("]") and any(p.startswith(field + ".") for p in paths)
    ), f"{case}: expected {field} in {paths}"
    assert field in str(ei.value)


def test_all_errors_collected() -> None:
    s = minimal()
    s["variants"][0]["precision"] = "int4"
    s["nodePools"][0]["pricePerHour"] = -1
    s["slo"]["priority"] = "speed"
    with pytest.raises(SpecError) as ei:
        parse_spec(s)
    assert len(ei.value.errors) == 3


@pytest.mark.parametrize(
    ("meta", "field"),
    [({"name": "Bad_Name"}, "metadata.name"), ({}, "metadata.name")],
)
def test_manifest_metadata(meta: dict[str, Any], field: str) -> None:
    doc = {"apiVersion": "tritonscale.io/v1alpha1", "kind": "ScaledModel", "metadata": meta,
           "spec": minimal()}
    with pytest.raises(SpecError) as ei:
        parse_manifest(doc)
    assert field in [e.path for e in ei.value.errors]


def test_manifest_kind_and_version() -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": minimal()}
    with pytest.raises(SpecError) as ei:
        parse_manifest(doc)
    assert {"apiVersion", "kind"} <= {e.path for e in ei.value.errors}

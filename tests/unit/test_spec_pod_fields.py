"""What a ScaledModel puts into a pod is checked the way the API server checks it.

Each case is refused by core/spec.py naming the field; the same document also
fails the CRD (schema pattern or a CEL rule), see test_cel.py and
test_crd_agreement.py. Valid neighbours of each case pass, so the rules are not
simply stricter than Kubernetes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from tests.harness.celk8s import failing_rules
from tests.harness.fakes import load_example

from tritonscale import crd
from tritonscale.core import k8sformat
from tritonscale.core.spec import SpecError, parse_manifest

Mutation = Callable[[dict[str, Any]], Any]


def _pool(d: dict[str, Any]) -> dict[str, Any]:
    pool: dict[str, Any] = d["spec"]["nodePools"][0]
    return pool


def _model(d: dict[str, Any]) -> dict[str, Any]:
    model: dict[str, Any] = d["spec"]["model"]
    return model


BAD: list[tuple[str, Mutation, str]] = [
    ("toleration key with space", lambda d: _pool(d)["tolerations"].append(
        {"key": "a b", "operator": "Exists"}), "spec.nodePools[0].tolerations[2].key"),
    ("toleration value not a label value", lambda d: _pool(d)["tolerations"].append(
        {"key": "a", "value": "-x-"}), "spec.nodePools[0].tolerations[2].value"),
    ("empty key needs Exists", lambda d: _pool(d)["tolerations"].append({"value": "x"}),
     "spec.nodePools[0].tolerations[2].operator"),
    ("node selector value too long", lambda d: _pool(d)["nodeSelector"].update(a="x" * 64),
     "spec.nodePools[0].nodeSelector['a']"),
    ("node selector key prefix", lambda d: _pool(d)["nodeSelector"].update(
        {"Example.com/a": "x"}), "spec.nodePools[0].nodeSelector"),
    ("env name with =", lambda d: _model(d).update(env=[{"name": "A=B", "value": "1"}]),
     "spec.model.env[0].name"),
    ("env name ..x", lambda d: _model(d).update(env=[{"name": "..x"}]),
     "spec.model.env[0].name"),
    ("env unknown field", lambda d: _model(d).update(env=[{"name": "A", "valu": "1"}]),
     "spec.model.env[0].valu"),
    ("quantity with garbage", lambda d: _model(d)["resources"]["requests"].update(cpu="2 cores"),
     "spec.model.resources.requests.cpu"),
    ("quantity decimal exponent", lambda d: _model(d)["resources"]["limits"].update(
        memory="1e1.5"), "spec.model.resources.limits.memory"),
    ("negative quantity", lambda d: _model(d)["resources"]["limits"].update(memory=-1),
     "spec.model.resources.limits.memory"),
    ("unknown resource", lambda d: _model(d)["resources"]["requests"].update(disk="1"),
     "spec.model.resources.requests.disk"),
    ("gpu resource", lambda d: _model(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
     "spec.model.resources.limits.nvidia.com/gpu"),
    ("request over limit", lambda d: _model(d)["resources"]["requests"].update(memory="9Gi"),
     "spec.model.resources.requests.memory"),
    ("args override port", lambda d: _model(d).update(args=["--metrics-port=1"]),
     "spec.model.args[0]"),
    ("args abbreviation", lambda d: _model(d).update(args=["--model-repo", "/x"]),
     "spec.model.args[0]"),
    ("pool name with --", lambda d: _pool(d).update(name="t4--spot"), "spec.nodePools[0].name"),
    ("name starting with a digit", lambda d: d["metadata"].update(name="1m"), "metadata.name"),
    ("label mapping __", lambda d: d["spec"]["metrics"]["prometheus"].update(
        labels={"model": "__name__"}), "spec.metrics.prometheus.labels.model"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD, ids=[c[0] for c in BAD])
def test_refused_by_spec_and_crd(case: str, mutate: Mutation, field: str) -> None:
    doc = copy.deepcopy(load_example("resnet50.yaml"))
    mutate(doc)
    with pytest.raises(SpecError) as ei:
        parse_manifest(doc)
    assert field in {e.path for e in ei.value.errors}, f"{case}: {ei.value}"
    assert crd.schema_errors(doc) or failing_rules(doc), f"{case}: the CRD accepts it"


GOOD: list[tuple[str, Mutation]] = [
    ("toleration Equal with value", lambda d: _pool(d)["tolerations"].append(
        {"key": "example.com/gpu-type", "operator": "Equal", "value": "a100_80g",
         "effect": "NoExecute", "tolerationSeconds": 30})),
    ("match-all toleration", lambda d: _pool(d)["tolerations"].append({"operator": "Exists"})),
    ("selector with prefix", lambda d: _pool(d)["nodeSelector"].update(
        {"topology.kubernetes.io/zone": "us-east-1a", "k": ""})),
    ("env with valueFrom", lambda d: _model(d).update(env=[
        {"name": "my.env-name", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ".dot", "value": ""}])),
    ("quantities", lambda d: _model(d)["resources"].update(
        requests={"cpu": "500m", "memory": 1073741824, "ephemeral-storage": "+.5Gi"},
        limits={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1e9"})),
    ("other tritonserver args", lambda d: _model(d).update(
        args=["--log-verbose", "1", "--metrics-config=summary_quantiles=0.5", "--model-load-"
              "thread-count=2", "--exit-on-error=true"])),
    ("hyphenated variant", lambda d: d["spec"]["variants"][0].update(name="fp16-trt")),
]


@pytest.mark.parametrize(("case", "mutate"), GOOD, ids=[c[0] for c in GOOD])
def test_valid_neighbours_pass_both(case: str, mutate: Mutation) -> None:
    doc = copy.deepcopy(load_example("resnet50.yaml"))
    mutate(doc)
    parse_manifest(doc)
    assert crd.schema_errors(doc) == []
    assert failing_rules(doc) == []


def test_quantity_values_match_kubernetes() -> None:
    q = k8sformat.parse_quantity
    assert q("500m") * 2 == 1 and q("1Ki") == 1024 and q("1e3") == 1000 and q(2) == 2
    assert q("1.5Gi") == 1.5 * 2**30 and q("100u") * 10**4 == 1
    for bad in ("-1", "1.2.3", "Gi", "1 Gi", "1e1.5", "0x10", "1ki", "", "1" * 65):
        with pytest.raises(ValueError):
            q(bad)
    with pytest.raises(ValueError):
        q(-1)

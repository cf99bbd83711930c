"""Invalid ScaledModels are rejected by the real API server, naming the field.

What a user sees: ``kubectl apply -f bad.yaml`` fails and says which field is
wrong and why. Schema violations (enum, range, pattern, type, required) and every
CEL rule (``x-kubernetes-validations``) of the installed CRD are covered; the CEL
cases are generated from the CRD itself, so a new rule without a broken manifest
here fails the suite.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from tests.harness.e2e import CRD_FILE, deep, load_example, to_yaml
from tests.harness.k8s import Cluster

pytestmark = pytest.mark.e2e

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def bad_ns(cluster: Cluster, chart_release: Any) -> Iterator[str]:
    """A namespace for the module (nothing is ever created in it); CRD installed."""
    name = f"invalid-{secrets.token_hex(3)}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name)


def _valid(ns: str) -> Manifest:
    return load_example(namespace=ns, name="bad")


def _apply(cluster: Cluster, manifest: Manifest) -> tuple[int, str]:
    res = cluster.kubectl("apply", "-f", "-", input=to_yaml(manifest), check=False)
    return res.returncode, res.stdout + res.stderr


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_the_unbroken_example_is_accepted(cluster: Cluster, bad_ns: str) -> None:
    """Control: the base manifest every case breaks is valid (server-side dry run)."""
    res = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=to_yaml(_valid(bad_ns)), check=False
    )
    assert res.returncode == 0, res.stderr


# -- schema: enum, range, pattern, type, required ---------------------------------------


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """A mutation setting ``spec.a.b[0].c`` (dots and [i]) to ``value``; ``...`` deletes."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def mutate(m: Manifest) -> None:
        obj: Any = m
        for p in parts[:-1]:
            if isinstance(p, str) and p not in obj:
                obj[p] = {}
            obj = obj[p]
        if value is ...:
            del obj[parts[-1]]
        else:
            obj[parts[-1]] = value

    return mutate


SCHEMA_CASES: list[tuple[str, Callable[[Manifest], None], str, str]] = [
    # (id, mutation, field named in the error, what the server says about it)
    ("enum-precision", _set("spec.variants[0].precision", "fp4"),
     "spec.variants[0].precision", 'Unsupported value: "fp4"'),
    ("enum-capacity-type", _set("spec.nodePools[0].capacityType", "preemptible"),
     "spec.nodePools[0].capacityType", 'Unsupported value: "preemptible"'),
    ("enum-metrics-source", _set("spec.metrics.source", "statsd"),
     "spec.metrics.source", 'Unsupported value: "statsd"'),
    ("range-accuracy", _set("spec.variants[1].accuracy", 1.5),
     "spec.variants[1].accuracy", "should be less than or equal to 1"),
    ("range-percentile-exclusive", _set("spec.slo.latency.percentile", 100),
     "spec.slo.latency.percentile", "should be less than 100"),
    ("range-target-positive", _set("spec.slo.latency.targetMs", 0),
     "spec.slo.latency.targetMs", "should be greater than 0"),
    ("range-gpus-per-replica", _set("spec.nodePools[2].gpusPerReplica", 17),
     "spec.nodePools[2].gpusPerReplica", "should be less than or equal to 16"),
    ("range-negative-price", _set("spec.nodePools[0].pricePerHour", -1),
     "spec.nodePools[0].pricePerHour", "should be greater than or equal to 0"),
    ("required-target", _set("spec.slo.latency.targetMs", ...),
     "spec.slo.latency.targetMs", "Required value"),
    ("required-node-pools", _set("spec.nodePools", ...), "spec.nodePools", "Required value"),
    ("required-model-repository", _set("spec.model.repository", ...),
     "spec.model.repository", "Required value"),
    ("pattern-variant-name", _set("spec.variants[0].name", "FP16"),
     "spec.variants[0].name", "should match"),
    ("pattern-prometheus-url", _set("spec.metrics.prometheus.url", "prometheus:9090"),
     "spec.metrics.prometheus.url", "should match '^https?://'"),
    ("type-max-replicas", _set("spec.scaling.maxReplicas", "many"),
     "spec.scaling.maxReplicas", "must be of type integer"),
    ("quantity-garbage", _set("spec.model.resources.limits.memory", "lots"),
     "spec.model.resources.limits.memory", "should match"),
    ("quantity-negative", _set("spec.model.resources.requests.cpu", -1),
     "spec.model.resources.requests.cpu", "should be greater than or equal to 0"),
    ("env-name", _set("spec.model.env", [{"name": "A=B"}]), "spec.model.env[0].name",
     "should match"),
    ("node-selector-value", lambda m: m["spec"]["nodePools"][0]["nodeSelector"].update(
        zone="-x-"), "spec.nodePools[0].nodeSelector.zone", "should match"),
    ("pool-name-double-dash", _set("spec.nodePools[0].name", "t4--spot"),
     "spec.nodePools[0].name", "should match"),
    ("too-many-variants", lambda m: m["spec"]["variants"].extend(
        dict(deep(m["spec"]["variants"][0]), name=f"v{i}") for i in range(15)),
     "spec.variants", "must have at most 16 items"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [pytest.param(m, f, s, id=i) for i, m, f, s in SCHEMA_CASES],
)
def test_schema_violation_is_rejected_naming_the_field(
    cluster: Cluster, bad_ns: str, mutate: Callable[[Manifest], None], field: str, says: str
) -> None:
    manifest = _valid(bad_ns)
    mutate(manifest)
    rc, out = _apply(cluster, manifest)
    assert rc != 0, f"accepted:\n{to_yaml(manifest)}"
    assert 'The ScaledModel "bad" is invalid' in out, out
    assert field in out and says in out, out


def test_gpu_in_model_resources_is_an_unknown_field(cluster: Cluster, bad_ns: str) -> None:
    """GPUs come from the pool's gpusPerReplica; model.resources has cpu, memory and
    ephemeral-storage only, so kubectl's strict decoding names the field."""
    manifest = _valid(bad_ns)
    manifest["spec"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    rc, out = _apply(cluster, manifest)
    assert rc != 0, f"accepted:\n{to_yaml(manifest)}"
    assert 'unknown field "spec.model.resources.limits.nvidia.com/gpu"' in out, out


# -- every CEL rule of the CRD ----------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    schema_path: str  # where the rule sits, e.g. "spec.variants[]"
    rule: str
    message: str
    field_path: str
    reason: str

    @property
    def id(self) -> str:
        head = self.message.split(":", 1)[0]
        return f"{head}:{self.rule[:40]}"


def crd_rules() -> list[Rule]:
    """Every ``x-kubernetes-validations`` entry of the CRD, with where it sits."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    out: list[Rule] = []

    def walk(schema: dict[str, Any], path: str) -> None:
        for v in schema.get("x-kubernetes-validations") or ():
            out.append(Rule(path, _norm(v["rule"]), _norm(v["message"]),
                            v.get("fieldPath", ""), v.get("reason", "FieldValueInvalid")))
        for name, sub in (schema.get("properties") or {}).items():
            walk(sub, f"{path}.{name}" if path else name)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"], f"{path}[]")

    walk(version["schema"]["openAPIV3Schema"], "")
    return out


def _dup_variant(m: Manifest) -> None:
    m["spec"]["variants"].append(dict(deep(m["spec"]["variants"][0])))


def _dup_pool(m: Manifest) -> None:
    m["spec"]["nodePools"].append(dict(deep(m["spec"]["nodePools"][0])))


def _only_l4(m: Manifest) -> None:
    # fp16 has profiles for T4 and A100 only: with just the L4 pool it cannot run.
    m["spec"]["nodePools"] = [p for p in m["spec"]["nodePools"] if p["name"] == "l4-spot"]
    m["spec"]["scaling"]["minReplicas"] = 1


def _safe_plan(variant: str, pool: str) -> Callable[[Manifest], None]:
    return _set("spec.scaling.safePlan", [{"variant": variant, "pool": pool, "replicas": 1}])


def _many(m: Manifest) -> None:
    m["spec"]["scaling"].update(minReplicas=100, maxReplicas=200)  # pools allow 8+8+6+4


def _min_over_max(m: Manifest) -> None:
    m["spec"]["scaling"].update(minReplicas=5, maxReplicas=3)


def _prometheus_without_config(m: Manifest) -> None:
    m["spec"]["metrics"] = {"source": "prometheus"}


def _cascade(tier1: str = "int8", tier2: str = "fp16",
             curve: list[tuple[float, float, float]] | None = None,
             last_curve: bool = False) -> Callable[[Manifest], None]:
    """A two-tier cascade over the example's variants (int8 first, then fp16)."""
    points = curve if curve is not None else [(0.5, 0.1, 0.76), (0.8, 0.3, 0.762)]
    below = [{"threshold": t, "escalated": e, "accuracy": a} for t, e, a in points]

    def mutate(m: Manifest) -> None:
        last: dict[str, Any] = {"variant": tier2}
        if last_curve:
            last["escalateBelow"] = below
        m["spec"]["cascade"] = {
            "tiers": [{"variant": tier1, "escalateBelow": below}, last],
            "confidence": {"output": "CONFIDENCE"},
            "io": {"maxBatchSize": 8,
                   "inputs": [{"name": "INPUT", "dataType": "FP32", "dims": [64]}],
                   "outputs": [{"name": "LABEL", "dataType": "INT32", "dims": [1]},
                               {"name": "CONFIDENCE", "dataType": "FP32", "dims": [1]}]},
        }

    return mutate


def _cascade_and(path: str, value: Any) -> Callable[[Manifest], None]:
    """A valid cascade, then ``path`` set to ``value``."""
    def mutate(m: Manifest) -> None:
        _cascade()(m)
        _set(path, value)(m)
    return mutate


def _cascade_io(path: str, value: Any) -> Callable[[Manifest], None]:
    return _cascade_and(f"spec.cascade.{path}", value)


# A broken manifest per CEL rule, keyed by the start of the rule's message, with the
# field path the error must name.
CEL_BREAKERS: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "metadata.name: must be at most 20": (
        _set("metadata.name", "a-name-of-twenty-five-ch"), "metadata.name"),
    "spec.variants[].profiles: every variant needs a profile": (_only_l4, "spec.variants"),
    "spec.slo.minAccuracy: no variant meets": (
        _set("spec.slo.minAccuracy", 0.99), "spec.slo.minAccuracy"),
    "spec.variants[].name: variant names must be unique": (_dup_variant, "spec.variants"),
    "spec.nodePools[].name: node pool names must be unique": (_dup_pool, "spec.nodePools"),
    "spec.scaling.safePlan[].variant: must name one of": (
        _safe_plan("nope", "t4-spot"), "spec.scaling.safePlan"),
    "spec.scaling.safePlan[].pool: must name one of": (
        _safe_plan("int8", "nope"), "spec.scaling.safePlan"),
    "spec.scaling.minReplicas: exceeds the sum": (_many, "spec.scaling.minReplicas"),
    "spec.variants[].configName: set either repository or configName": (
        _set("spec.variants[0].repository", "s3://models/other"),
        "spec.variants[0].configName"),
    "spec.variants[].profiles[].batches[].size: must be <= maxBatchSize": (
        _set("spec.variants[0].profiles[0].maxBatchSize", 16),
        "spec.variants[0].profiles[0].batches"),
    "spec.variants[].profiles[].batches: latencyMs must not decrease": (
        _set("spec.variants[0].profiles[0].batches[1].latencyMs", 1.0),
        "spec.variants[0].profiles[0].batches"),
    "spec.scaling.minReplicas: must be <= spec.scaling.maxReplicas": (
        _min_over_max, "spec.scaling.minReplicas"),
    "spec.metrics.prometheus: is required when source is prometheus": (
        _prometheus_without_config, "spec.metrics.prometheus"),
    "spec.routing.parentRefs: is required when mode is gateway": (
        _set("spec.routing", {"mode": "gateway"}), "spec.routing.parentRefs"),
    "spec.routing.parentRefs: is only used when mode is gateway": (
        _set("spec.routing", {"mode": "service", "parentRefs": [{"name": "gw"}]}),
        "spec.routing.parentRefs"),
    "spec.cascade.confidence.output: must name one of spec.cascade.io.outputs": (
        _cascade_io("confidence.output", "SCORE"), "spec.cascade.confidence.output"),
    "spec.cascade.io: tensor names must be unique": (
        _cascade_io("io.inputs[0].name", "LABEL"), "spec.cascade.io"),
    "spec.cascade.io.inputs[].dims: each must be": (
        _cascade_io("io.inputs[0].dims", [64, 0]), "spec.cascade.io.inputs[0].dims"),
    "spec.cascade.io.outputs[].dims: each must be": (
        _cascade_io("io.outputs[1].dims", [0]), "spec.cascade.io.outputs[1].dims"),
    "spec.model.name: a cascade's model name": (
        _cascade_and("spec.model.name", "bert.v2"), "spec.model.name"),
    "spec.routing.mode: gateway routing is not supported with spec.cascade": (
        _cascade_and("spec.routing", {"mode": "gateway", "parentRefs": [{"name": "gw"}]}),
        "spec.routing.mode"),
    "spec.cascade.tiers[].variant: must name one of spec.variants": (
        _cascade(tier2="nope"), "spec.cascade.tiers"),
    "spec.cascade.tiers[].escalateBelow: the best accuracy of the curve": (
        _cascade(curve=[(0.5, 0.1, 0.70), (0.8, 0.3, 0.74)]), "spec.cascade.tiers"),
    "spec.cascade.tiers[].variant: a variant may serve only one tier": (
        _cascade(tier2="int8"), "spec.cascade.tiers"),
    "spec.cascade.tiers[].escalateBelow: required on the first tier": (
        _cascade(last_curve=True), "spec.cascade.tiers"),
    "spec.cascade.tiers[].escalateBelow: thresholds must be strictly ascending": (
        _cascade(curve=[(0.8, 0.1, 0.76), (0.5, 0.3, 0.762)]),
        "spec.cascade.tiers[0].escalateBelow"),
    "spec.cascade.tiers[].escalateBelow: escalated must not decrease": (
        _cascade(curve=[(0.5, 0.3, 0.76), (0.8, 0.1, 0.762)]),
        "spec.cascade.tiers[0].escalateBelow"),
    "spec.metrics.prometheus.url: must be a base URL": (
        _set("spec.metrics.prometheus.url", "http://169.254.169.254/latest/meta-data#"),
        "spec.metrics.prometheus.url"),
}

def _tolerate(t: dict[str, Any]) -> Callable[[Manifest], None]:
    return lambda m: m["spec"]["nodePools"][0].setdefault("tolerations", []).append(t)


def _resource(part: str, name: str, value: Any) -> Callable[[Manifest], None]:
    return lambda m: m["spec"]["model"]["resources"].setdefault(part, {}).update({name: value})


def _safe(*entries: tuple[str, str, int], floor: float | None = None,
          gpus: tuple[str, int] | None = None) -> Callable[[Manifest], None]:
    def mutate(m: Manifest) -> None:
        m["spec"]["scaling"]["safePlan"] = [
            {"variant": v, "pool": p, "replicas": n} for v, p, n in entries]
        if floor is not None:
            m["spec"]["slo"]["minAccuracy"] = floor
        if gpus is not None:
            for pool in m["spec"]["nodePools"]:
                if pool["name"] == gpus[0]:
                    pool["gpusPerReplica"] = gpus[1]
    return mutate


CEL_BREAKERS.update({
    "spec.routing.parentRefs: is required when mode is gateway": (
        _set("spec.routing", {"mode": "gateway"}), "spec.routing.parentRefs"),
    "spec.routing.parentRefs: is only used when mode is gateway": (
        _set("spec.routing", {"mode": "service", "parentRefs": [{"name": "gw"}]}),
        "spec.routing.parentRefs"),
    "metadata.name: must be an RFC 1035 label": (_set("metadata.name", "1bad"), "metadata.name"),
    "spec.model.args: a flag at the end": (_set("spec.model.args", ["--log-file"]),
                                           "spec.model.args"),
    "spec.model.args[]: must not set the operator's own": (
        _set("spec.model.args", ["--http-p=9000"]), "spec.model.args[0]"),
    "spec.model.env[].valueFrom: must not be set": (
        _set("spec.model.env", [{"name": "A", "value": "x",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        "spec.model.env[0].valueFrom"),
    # The author might lack RBAC to read that Secret; the operator's pods would not.
    "spec.model.env[].valueFrom.secretKeyRef: is not allowed": (
        _set("spec.model.env", [{"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
            "secretKeyRef": {"name": "s3-credentials", "key": "secret"}}}]),
        "spec.model.env[0].valueFrom"),
    "spec.model.resources.requests.cpu: must be <=": (
        lambda m: m["spec"]["model"]["resources"].update(requests={"cpu": "2"},
                                                         limits={"cpu": "1500m"}),
        "spec.model.resources.requests.cpu"),
    "spec.model.resources.requests.memory: must be <=": (
        _resource("requests", "memory", "9Gi"), "spec.model.resources.requests.memory"),
    "spec.model.resources.requests.ephemeral-storage: must be <=": (
        lambda m: m["spec"]["model"]["resources"].update(
            requests={"ephemeral-storage": 2000}, limits={"ephemeral-storage": "1k"}),
        "spec.model.resources"),
    "spec.nodePools[].nodeSelector: keys must be": (
        lambda m: m["spec"]["nodePools"][0]["nodeSelector"].update({"bad key": "x"}),
        "spec.nodePools[0].nodeSelector"),
    "spec.nodePools[].tolerations[].operator: must be Exists": (
        _tolerate({"operator": "Equal", "value": "x"}),
        "spec.nodePools[0].tolerations[2].operator"),
    "spec.nodePools[].tolerations[].key: must be a qualified name": (
        _tolerate({"key": "a b", "operator": "Exists"}), "spec.nodePools[0].tolerations[2].key"),
    "spec.nodePools[].tolerations[].value: must be empty": (
        _tolerate({"key": "a", "operator": "Exists", "value": "x"}),
        "spec.nodePools[0].tolerations[2].value"),
    "spec.nodePools[].tolerations[].effect: must be NoExecute": (
        _tolerate({"key": "a", "operator": "Exists", "effect": "NoSchedule",
                   "tolerationSeconds": 5}), "spec.nodePools[0].tolerations[2].effect"),
    "spec.metrics.prometheus.labels.pool: must differ": (
        _set("spec.metrics.prometheus.labels", {"variant": "x", "pool": "x"}),
        "spec.metrics.prometheus.labels.pool"),
    "spec.metrics.prometheus.selector: keys must be": (
        _set("spec.metrics.prometheus.selector", {"__name__": "x"}),
        "spec.metrics.prometheus.selector"),
    "spec.scaling.safePlan[].variant: must meet the accuracy floor": (
        _safe(("int8", "t4-spot", 1), floor=0.76), "spec.scaling.safePlan"),
    "spec.scaling.safePlan[].pool: the variant needs a profile": (
        _safe(("fp16", "l4-spot", 1)), "spec.scaling.safePlan"),
    "spec.scaling.safePlan[]: one entry per": (
        _safe(("int8", "t4-spot", 1), ("int8", "t4-spot", 1)), "spec.scaling.safePlan"),
    "spec.scaling.safePlan: puts more replicas on a pool": (
        _safe(("int8", "t4-spot", 9)), "spec.scaling.safePlan"),
    "spec.scaling.safePlan: totals more than": (
        _safe(("int8", "t4-spot", 8), ("int8", "t4-ondemand", 8), ("int8", "l4-spot", 1)),
        "spec.scaling.safePlan"),
    # 2 x $4.0966/GPU is $8.19/h, within the example's $12; with 2 GPUs a replica
    # (a replica costs pricePerHour x gpusPerReplica) it is $16.39/h.
    "spec.scaling.safePlan: costs more than": (
        _safe(("int8", "a100-ondemand", 2), gpus=("a100-ondemand", 2)),
        "spec.scaling.safePlan"),
})


# Every way the base-URL rule is meant to close (SSRF through a ScaledModel: a cut-off
# query path, credentials, another host behind "@"): each must be refused by the real
# API server with the rule's message.
URL_BREAKERS: list[tuple[str, str]] = [
    ("fragment", "http://169.254.169.254/latest/meta-data#"),
    ("query", "http://prometheus:9090/?x="),
    ("userinfo", "http://admin:secret@prometheus:9090"),
    ("host-after-port", "http://prometheus:80@evil.example/"),
    ("backslash", "http://prometheus\\@evil.example/"),
    ("no-host", "http://"),
]


@pytest.mark.parametrize("url", [u for _, u in URL_BREAKERS], ids=[i for i, _ in URL_BREAKERS])
def test_prometheus_url_must_be_a_base_url(cluster: Cluster, bad_ns: str, url: str) -> None:
    manifest = _valid(bad_ns)
    manifest["spec"]["metrics"]["prometheus"]["url"] = url
    rc, out = _apply(cluster, manifest)
    assert rc != 0, f"accepted:\n{to_yaml(manifest)}"
    text = _norm(out)
    assert "spec.metrics.prometheus.url" in text and "must be a base URL" in text, out

RULES = crd_rules()


def test_the_crd_has_the_rules_this_module_knows() -> None:
    assert len(RULES) >= 13
    unknown = [r.message for r in RULES
               if not any(r.message.startswith(k) for k in CEL_BREAKERS)]
    stale = [k for k in CEL_BREAKERS if not any(r.message.startswith(k) for r in RULES)]
    assert not unknown, f"CEL rules without a broken manifest here: {unknown}"
    assert not stale, f"broken manifests for rules the CRD no longer has: {stale}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_cel_rule_rejects_with_its_message(cluster: Cluster, bad_ns: str, rule: Rule) -> None:
    (mutate, field), = [v for k, v in CEL_BREAKERS.items() if rule.message.startswith(k)]
    manifest = _valid(bad_ns)
    mutate(manifest)
    rc, out = _apply(cluster, manifest)
    assert rc != 0, f"accepted despite rule {rule.rule!r}:\n{to_yaml(manifest)}"
    text = _norm(out)
    assert f'The ScaledModel "{manifest["metadata"]["name"]}" is invalid' in text, out
    assert field in text, out
    # Every rule's own message reaches the user. (A rule with reason
    # FieldValueDuplicate would be rendered as a bare "Duplicate value" without
    # it, so the CRD does not use that reason.)
    assert rule.message in text, f"rule message {rule.message!r} not in:\n{out}"

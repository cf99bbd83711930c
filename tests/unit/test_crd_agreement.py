"""The CRD and core/spec.py give the same verdict, both ways (property-based).

Hypothesis generates ScaledModels from a small valid one by one to three mutations of
the fields a ScaledModel author fills for the pods and the safety limits (names,
tolerations, node selectors, env vars, resources, tritonserver args, the safe plan
and the limits it must obey, Prometheus label mappings), with values valid, near
valid and hostile. For every document the API server's verdict (the CRD's OpenAPI
schema, its list-map keys and its CEL rules, evaluated offline as in test_cel.py) and
``parse_manifest``'s verdict must agree: nothing the operator would refuse gets past
admission, and nothing admission accepts is refused later.

Deterministic: derandomized, no example database; max_examples keeps it to seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.harness.celk8s import failing_rules

from tritonscale import crd
from tritonscale.core.spec import SpecError, parse_manifest

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]

BASE: Doc = {
    "apiVersion": "tritonscale.io/v1alpha1",
    "kind": "ScaledModel",
    "metadata": {"name": "m", "namespace": "ns"},
    "spec": {
        "model": {"name": "m", "repository": "s3://m", "args": ["--log-verbose=1"],
                  "env": [{"name": "A", "value": "1"}],
                  "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}},
        "variants": [
            {"name": "a", "precision": "fp16", "accuracy": 0.8, "profiles": [
                {"accelerator": "T4", "maxBatchSize": 4,
                 "batches": [{"size": 1, "latencyMs": 2.0}, {"size": 4, "latencyMs": 5.0}]}]},
            {"name": "b-c", "precision": "int8", "accuracy": 0.7, "profiles": [
                {"accelerator": "T4", "batches": [{"size": 1, "latencyMs": 1.0}]},
                {"accelerator": "L4", "batches": [{"size": 1, "latencyMs": 1.0}]}]},
        ],
        "nodePools": [
            {"name": "p", "accelerator": "T4", "pricePerHour": 0.5, "maxReplicas": 4,
             "nodeSelector": {"k": "v"}, "tolerations": [{"key": "k", "operator": "Exists"}]},
            {"name": "q-r", "accelerator": "L4", "pricePerHour": 1.0, "capacityType": "spot"},
        ],
        "slo": {"latency": {"targetMs": 50}, "minAccuracy": 0.5, "maxCostPerHour": 10},
        "scaling": {"maxReplicas": 12, "safePlan": [{"variant": "a", "pool": "p", "replicas": 1}]},
        "metrics": {"source": "prometheus", "prometheus": {"url": "http://prometheus:9090"}},
    },
}


def _s(d: Doc) -> Doc:
    spec: Doc = d["spec"]
    return spec


# -- values: valid, near valid, hostile -------------------------------------------------

names = st.one_of(
    st.sampled_from(["a", "b-c", "p", "q-r", "a-b", "a--b", "-a", "a-", "1a", "A", "", "a" * 20,
                     "a" * 21, "x.y", "ab1"]),
    st.text(alphabet="ab0-._A /", max_size=22),
)
qualified = st.one_of(
    st.sampled_from(["k", "example.com/a", "a/b/c", "/a", "a/", "a" * 63, "a" * 64,
                     "a" * 253 + "/b", "a" * 254 + "/b", "kubernetes.io/hostname", "A.b/c",
                     "a..b/c", "-a", "a_b", "", "a.b-c_d", "ex.com/" + "n" * 63,
                     "ex.com/" + "n" * 64, "a\n"]),
    st.text(alphabet="aZ0-._/ ", max_size=12),
)
label_values = st.one_of(
    st.sampled_from(["", "v", "a" * 63, "a" * 64, "-a", "a-", "a.b", "a b", "A_1", "a\n"]),
    st.text(alphabet="aZ0-._ ", max_size=8),
)
env_names = st.one_of(
    st.sampled_from([".", "..", "..a", ".a", ".5", "1a", "a=b", "A_B", "-x", "a" * 253,
                     "a" * 254, "my.env-name", "", "A\n"]),
    st.text(alphabet="aZ0-._= ", max_size=6),
)
quantities = st.one_of(
    st.sampled_from(["1", "500m", "1Gi", "-1", "1e3", "1e1.5", ".5", "5.", "+1", "lots", "1Ki",
                     "0.1m", "1E", "", "1e999", "1e1000", "0x10", "1.5Gi", "+.5Gi", "1ki", "3",
                     "2000m", "1\n", "9" * 64, "9" * 65]),
    st.integers(-5, 2**40),
    st.just(1.5),
)
args = st.sampled_from(["--http-port=1", "--http-p=9", "--h", "--log-verbose=1",
                        "--log-verbose", "1", "--model", "--model-load-thread-count=2",
                        "--metrics-config", "--metrics-config=summary_quantiles=0.5",
                        "--load-model=x", "-x", "--", "--=x", "--grpc-port",
                        "--exit-on-error=true", "--allow-gpu-metrics=false",
                        "--http-port\n", "--model-repository-x=1"])
prom_labels = st.one_of(
    st.sampled_from(["__name__", "_a", "a", "tritonscale_io_variant", "tritonscale_io_pool",
                     "0a", "", "a" * 128, "a" * 129, "job", "_", "__"]),
    st.text(alphabet="a_Z0:", max_size=6),
)


# spec.scaling.clientTimeoutSeconds: (0, 86400] seconds, a number.
CLIENT_TIMEOUTS: list[Any] = [0, 0.0, 1e-3, 0.5, 30, 86_400, 86_400.5, -1, "30", True, [30]]


@st.composite
def tolerations(draw: st.DrawFn) -> Doc:
    t: Doc = {}
    if draw(st.booleans()):
        t["key"] = draw(qualified)
    if draw(st.booleans()):
        t["operator"] = draw(st.sampled_from(["Equal", "Exists", "In"]))
    if draw(st.booleans()):
        t["value"] = draw(label_values)
    if draw(st.booleans()):
        t["effect"] = draw(st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute", ""]))
    if draw(st.booleans()):
        t["tolerationSeconds"] = draw(st.integers(-10, 10**6))
    return t


@st.composite
def env_vars(draw: st.DrawFn) -> Doc:
    e: Doc = {"name": draw(env_names)}
    if draw(st.booleans()):
        e["value"] = draw(st.sampled_from(["", "x", 1]))
    if draw(st.booleans()):
        e["valueFrom"] = draw(st.sampled_from([
            {"fieldRef": {"fieldPath": "metadata.name"}},
            {"configMapKeyRef": {"name": "c", "key": "k"}},
            {"secretKeyRef": {"name": "s", "key": "k"}}, "x"]))
    if draw(st.integers(0, 9)) == 0:
        e["valu"] = "typo"
    return e


resource_names = st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu",
                                  "example.com/x", "disk"])
resource_maps = st.dictionaries(resource_names, quantities, max_size=3)


@st.composite
def safe_plans(draw: st.DrawFn) -> list[Doc]:
    return draw(st.lists(st.fixed_dictionaries({
        "variant": st.sampled_from(["a", "b-c", "zz"]),
        "pool": st.sampled_from(["p", "q-r", "zz"]),
        "replicas": st.integers(0, 14),
    }), max_size=3))


def _set_at(*path: str | int) -> Callable[[Any], Mutation]:
    def make(value: Any) -> Mutation:
        def mutate(d: Doc) -> None:
            cur: Any = d
            for p in path[:-1]:
                cur = cur[p]
            cur[path[-1]] = value
        return mutate
    return make


def _labels(value: Doc) -> Mutation:
    return lambda d: _s(d)["metrics"]["prometheus"].update(labels=value)


def _selector(value: Doc) -> Mutation:
    return lambda d: _s(d)["metrics"]["prometheus"].update(selector=value)


MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    names.map(_set_at("metadata", "name")),
    names.map(_set_at("spec", "variants", 0, "name")),
    names.map(_set_at("spec", "variants", 1, "name")),
    names.map(_set_at("spec", "nodePools", 0, "name")),
    names.map(_set_at("spec", "nodePools", 1, "name")),
    st.lists(tolerations(), max_size=2).map(_set_at("spec", "nodePools", 0, "tolerations")),
    st.dictionaries(qualified, label_values, max_size=3).map(
        _set_at("spec", "nodePools", 1, "nodeSelector")),
    st.lists(env_vars(), max_size=2).map(_set_at("spec", "model", "env")),
    resource_maps.map(_set_at("spec", "model", "resources", "requests")),
    resource_maps.map(_set_at("spec", "model", "resources", "limits")),
    st.lists(args, max_size=3).map(_set_at("spec", "model", "args")),
    safe_plans().map(_set_at("spec", "scaling", "safePlan")),
    st.sampled_from([0.0, 0.5, 0.75, 0.8, 0.85]).map(_set_at("spec", "slo", "minAccuracy")),
    st.sampled_from([0.4, 1.0, 2.0, 3.5, 100.0]).map(_set_at("spec", "slo", "maxCostPerHour")),
    st.integers(0, 12).map(_set_at("spec", "nodePools", 0, "maxReplicas")),
    st.integers(0, 12).map(_set_at("spec", "nodePools", 1, "maxReplicas")),
    # A replica costs pricePerHour x gpusPerReplica: the safePlan budget rule must agree.
    st.integers(0, 4).map(_set_at("spec", "nodePools", 0, "gpusPerReplica")),
    st.integers(0, 4).map(_set_at("spec", "nodePools", 1, "gpusPerReplica")),
    st.integers(1, 16).map(_set_at("spec", "scaling", "maxReplicas")),
    st.integers(0, 4).map(_set_at("spec", "scaling", "minReplicas")),
    st.sampled_from(CLIENT_TIMEOUTS).map(_set_at("spec", "scaling", "clientTimeoutSeconds")),
    st.fixed_dictionaries({}, optional={
        k: prom_labels for k in ("namespace", "model", "variant", "pool")}).map(_labels),
    st.dictionaries(prom_labels, st.sampled_from(["triton", ""]), max_size=2).map(_selector),
)


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    doc = copy.deepcopy(BASE)
    for mutate in draw(st.lists(MUTATIONS, min_size=1, max_size=3)):
        mutate(doc)
    return doc


# -- the two verdicts --------------------------------------------------------------------


def _list_map_duplicates(value: Any, node: Doc) -> bool:
    """Duplicate keys in an ``x-kubernetes-list-type: map`` list (the API server refuses)."""
    if isinstance(value, list):
        items = node.get("items") or {}
        keys = node.get("x-kubernetes-list-map-keys")
        if node.get("x-kubernetes-list-type") == "map" and keys:
            seen = [tuple(repr(v.get(k)) for k in keys) for v in value if isinstance(v, dict)]
            if len(seen) != len(set(seen)):
                return True
        return any(_list_map_duplicates(v, items) for v in value)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        return any(_list_map_duplicates(v, props[k]) for k, v in value.items() if k in props)
    return False


def api_server_accepts(doc: Doc) -> bool:
    if crd.schema_errors(doc):
        return False
    if _list_map_duplicates(doc, crd.openapi_schema()):
        return False
    return not failing_rules(doc)


def spec_py_accepts(doc: Doc) -> bool:
    try:
        parse_manifest(doc)
    except SpecError:
        return False
    return True


def test_the_base_is_valid_both_ways() -> None:
    assert api_server_accepts(BASE) and spec_py_accepts(BASE)


def test_client_timeout_bounds_agree() -> None:
    verdicts = {}
    for v in CLIENT_TIMEOUTS:
        doc = copy.deepcopy(BASE)
        _s(doc)["scaling"]["clientTimeoutSeconds"] = v
        verdicts[repr(v)] = (api_server_accepts(doc), spec_py_accepts(doc))
    assert all(a == b for a, b in verdicts.values()), verdicts
    assert [k for k, (a, _) in verdicts.items() if a] == ["0.001", "0.5", "30", "86400"]


@settings(max_examples=100, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_crd_and_spec_py_agree(doc: Doc) -> None:
    server = api_server_accepts(doc)
    core = spec_py_accepts(doc)
    if server != core:
        why = ""
        try:
            parse_manifest(doc)
        except SpecError as e:
            why = str(e)[:600]
        schema = [str(e)[:200] for e in crd.schema_errors(doc)]
        rules = [] if schema else failing_rules(doc)
        raise AssertionError(
            f"API server {'accepts' if server else 'refuses'}, spec.py "
            f"{'accepts' if core else 'refuses'}: spec.py says {why!r}; schema says "
            f"{schema}; CEL says {rules}"
        )

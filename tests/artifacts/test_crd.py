"""The CRD file: structural, documented, CEL rules with messages, and in agreement
with core/spec.py on defaults, enums, bounds and required fields."""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.harness.cascade_cases import with_cascade

from tritonscale import crd
from tritonscale.core import spec as specmod
from tritonscale.core.spec import SpecError, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "scaledmodel.yaml"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCALAR_TYPES = {"string", "integer", "number", "boolean"}


@functools.cache
def _crd_cached() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load(CRD_FILE.read_text(), Loader=_LOADER)
    return doc


def _crd() -> dict[str, Any]:
    return copy.deepcopy(_crd_cached())


def _nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for k, v in node.get("properties", {}).items():
        yield from _nodes(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def _schema() -> dict[str, Any]:
    return crd.openapi_schema(_crd())


def test_package_copy_is_identical() -> None:
    packaged = ROOT / "operator" / "tritonscale" / "data" / "scaledmodel.yaml"
    assert packaged.read_bytes() == CRD_FILE.read_bytes(), (
        "cp crds/scaledmodel.yaml operator/tritonscale/data/scaledmodel.yaml"
    )
    assert crd.crd_text() == CRD_FILE.read_text()


def test_identity() -> None:
    doc = _crd()
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["kind"] == "CustomResourceDefinition"
    assert doc["metadata"]["name"] == "scaledmodels.tritonscale.io"
    spec = doc["spec"]
    assert spec["group"] == "tritonscale.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ScaledModel"
    assert spec["names"]["plural"] == "scaledmodels"
    assert "sm" in spec["names"]["shortNames"]
    v = crd.version_entry(doc)
    assert v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}


def test_structural_every_node_typed() -> None:
    for path, node in _nodes(_schema(), "$"):
        if path == "$.metadata":
            assert node == {"type": "object"}, "root metadata may only be typed"
            continue
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert node.get("type") in SCALAR_TYPES | {"object", "array"}, f"{path}: no type"
        for forbidden in ("$ref", "definitions", "dependencies", "additionalItems",
                          "patternProperties"):
            assert forbidden not in node, f"{path}: {forbidden} is not allowed"
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array needs items"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: both properties kinds"
        for k in ("allOf", "anyOf", "oneOf", "not"):
            assert k not in node, f"{path}: keep value validations out of the structure ({k})"


def test_every_property_described() -> None:
    missing = [
        path
        for path, node in _nodes(_schema(), "$")
        if path not in ("$", "$.metadata")
        and not path.endswith(("[]", "{}"))
        and not str(node.get("description", "")).strip()
    ]
    assert not missing, f"properties without description: {missing}"


def test_spec_lists_and_strings_bounded_for_cel_cost() -> None:
    for path, node in _nodes(_schema()["properties"]["spec"], "$.spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: maxItems bounds CEL cost"
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path}: maxLength bounds CEL cost"
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node or path.endswith(("requests", "limits")), path


def _rules() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, rule)
        for path, node in _nodes(_schema(), "$")
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_have_messages_naming_fields() -> None:
    rules = _rules()
    assert len(rules) >= 10
    for path, rule in rules:
        assert rule.get("rule"), path
        msg = rule.get("message") or rule.get("messageExpression")
        assert msg, f"{path}: rule {rule['rule']!r} has no message"
        if "message" in rule:
            assert re.search(r"(spec|metadata)\.[a-zA-Z]", rule["message"]), (
                f"{path}: message should name the field: {rule['message']!r}"
            )
        if "fieldPath" in rule:
            assert rule["fieldPath"].startswith("."), path


def test_list_map_keys_are_required() -> None:
    for path, node in _nodes(_schema(), "$"):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            item = node["items"]
            for k in keys:
                assert k in item.get("required", []) or "default" in item["properties"][k], (
                    f"{path}: list map key {k} must be required or defaulted"
                )


def test_printer_columns() -> None:
    cols = {c["name"]: c for c in crd.version_entry(_crd())["additionalPrinterColumns"]}
    for name in ("Placement", "Ready", "Latency", "Target", "Cost/h", "SLO", "Age"):
        assert name in cols
    status = _schema()["properties"]["status"]["properties"]
    for c in cols.values():
        parts = c["jsonPath"].split(".")
        if parts[1] == "status":
            assert parts[2].split("[")[0] in status, c["jsonPath"]


def test_status_conditions_follow_conventions() -> None:
    cond = _schema()["properties"]["status"]["properties"]["conditions"]["items"]
    assert set(cond["properties"]) >= {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"
    }
    assert cond["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    auto = _schema()["properties"]["status"]["properties"]["autoscaler"]
    assert auto["x-kubernetes-preserve-unknown-fields"] is True


# ------------------------------------------------------------ agreement with spec.py

@functools.cache
def _example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "resnet50.yaml").read_text())
    return doc


def _base(path: Sequence[str | int] = ()) -> dict[str, Any]:
    """A valid spec with every field set. spec.cascade and gateway routing exclude each
    other (the router must see every request): fields under spec.routing get a base
    with gateway routing and no cascade, every other field one with the cascade."""
    routing = len(path) > 1 and path[1] == "routing"
    doc = copy.deepcopy(_example())
    s = doc["spec"]
    s["model"]["args"] = ["--log-verbose=0"]
    s["model"]["env"] = [{"name": "A", "value": "b"}]
    s["scaling"]["safePlan"] = [{"variant": "int8", "pool": "t4-ondemand", "replicas": 2}]
    s["nodePools"][0]["tolerations"][0] = {
        "key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule",
    }
    s["metrics"]["prometheus"]["labels"] = {"namespace": "namespace"}
    s["metrics"]["prometheus"]["timeoutSeconds"] = 5
    s["variants"][0]["profiles"][0]["maxBatchSize"] = 4096
    if routing:
        s["routing"] = {
            "mode": "gateway", "protocols": ["http", "grpc"],
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "http",
                            "port": 80}],
        }
    else:
        with_cascade(doc)
    parse_manifest(doc)  # the base is valid
    return doc


def _leaf_paths() -> Iterator[tuple[list[str | int], dict[str, Any]]]:
    def walk(node: dict[str, Any], path: list[str | int]) -> Iterator[
        tuple[list[str | int], dict[str, Any]]
    ]:
        if node.get("type") in SCALAR_TYPES:
            yield path, node
        for k, v in node.get("properties", {}).items():
            yield from walk(v, [*path, k])
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], [*path, 0])

    yield from walk(_schema()["properties"]["spec"], ["spec"])


def _set(doc: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    cur: Any = doc
    for p in path[:-1]:
        cur = cur[p] if isinstance(p, int) else cur.setdefault(p, {})
    cur[path[-1]] = value
    return doc


def _delete(doc: dict[str, Any], path: list[str | int]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    cur: Any = doc
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return doc


def _errors(doc: dict[str, Any]) -> list[specmod.FieldError]:
    try:
        parse_manifest(doc)
    except SpecError as e:
        return list(e.errors)
    return []


_BOUND_MSG = re.compile(r"^must be [<>]=? -?[0-9.e+]+; got")


def _bound_errors(doc: dict[str, Any], path: str) -> list[str]:
    return [e.message for e in _errors(doc) if e.path == path and _BOUND_MSG.match(e.message)]


def _in_spec(doc_path: list[str | int]) -> bool:
    """Skip leaves spec.py does not read field by field (passed through verbatim)."""
    s = crd.format_path(doc_path)
    return not s.startswith(("spec.model.env", "spec.model.resources"))


def _ids(x: Any) -> str:
    return crd.format_path(x) if isinstance(x, list) else ""


def _bounded_leaves() -> list[tuple[list[str | int], dict[str, Any]]]:
    return [(p, n) for p, n in _leaf_paths() if _in_spec(p) and ("minimum" in n or "maximum" in n)]


@pytest.mark.parametrize(
    ("path", "node"), _bounded_leaves(), ids=_ids
)
def test_bounds_agree_with_spec_py(path: list[str | int], node: dict[str, Any]) -> None:
    base = _base(path)
    where = crd.format_path(path)
    step = 1 if node["type"] == "integer" else 1e-6
    for key, sign, excl in (
        ("minimum", -1, "exclusiveMinimum"),
        ("maximum", 1, "exclusiveMaximum"),
    ):
        if key not in node:
            continue
        bound = node[key]
        if node.get(excl):
            assert _bound_errors(_set(base, path, bound), where), f"{where}={bound} accepted"
            inside = bound - sign * step
            assert not _bound_errors(_set(base, path, inside), where), f"{where}={inside}"
        else:
            assert not _bound_errors(_set(base, path, bound), where), f"{where}={bound} rejected"
            outside = bound + sign * step
            assert _bound_errors(_set(base, path, outside), where), f"{where}={outside} accepted"


def _enum_leaves() -> list[tuple[list[str | int], dict[str, Any]]]:
    return [(p, n) for p, n in _leaf_paths() if "enum" in n]


@pytest.mark.parametrize(
    ("path", "node"), _enum_leaves(), ids=_ids
)
def test_enums_agree_with_spec_py(path: list[str | int], node: dict[str, Any]) -> None:
    base = _base(path)
    where = crd.format_path(path)
    for value in node["enum"]:
        doc = _set(base, path, value)
        if where == "spec.metrics.source" and value == "prometheus":
            pass  # base has spec.metrics.prometheus
        assert not [e for e in _errors(doc) if e.path == where], f"{where}={value}"
    assert [e for e in _errors(_set(base, path, "zzz")) if e.path == where]


def test_enum_constants_match() -> None:
    props = _schema()["properties"]["spec"]["properties"]
    variant = props["variants"]["items"]["properties"]
    assert tuple(variant["precision"]["enum"]) == specmod.PRECISIONS
    pool = props["nodePools"]["items"]["properties"]
    assert tuple(pool["capacityType"]["enum"]) == specmod.CAPACITY_TYPES
    assert tuple(props["slo"]["properties"]["priority"]["enum"]) == specmod.PRIORITIES
    assert tuple(props["metrics"]["properties"]["source"]["enum"]) == specmod.METRIC_SOURCES
    routing = props["routing"]["properties"]
    assert tuple(routing["mode"]["enum"]) == specmod.ROUTING_MODES
    assert tuple(routing["protocols"]["items"]["enum"]) == specmod.ROUTE_PROTOCOLS
    assert routing["parentRefs"]["maxItems"] == specmod.MAX_PARENT_REFS


def _camel_to_snake(s: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", s).lower()


def _dataclass_value(parsed: specmod.ScaledModelSpec, path: list[str | int]) -> Any:
    cur: Any = parsed
    parts = path[1:]  # drop "spec"
    i = 0
    while i < len(parts):
        p = parts[i]
        if p == "labels":  # metrics.prometheus.labels.<x> -> <x>_label
            return getattr(cur, f"{parts[i + 1]}_label")
        if p == "latency" and isinstance(cur, specmod.SLO):
            cur = cur.latency
        elif isinstance(p, int):
            cur = cur[p]
        else:
            cur = getattr(cur, _camel_to_snake(p))
        i += 1
    return cur


def _defaulted_leaves() -> list[tuple[list[str | int], dict[str, Any]]]:
    return [(p, n) for p, n in _leaf_paths() if "default" in n]


@pytest.mark.parametrize(
    ("path", "node"), _defaulted_leaves(),
    ids=_ids,
)
def test_defaults_agree_with_spec_py(path: list[str | int], node: dict[str, Any]) -> None:
    doc = _base(path)
    if path[-1] == "maxBatchSize":  # the default (1) must still hold every batch size
        doc = _set(doc, [*path[:-1], "batches"], [{"size": 1, "latencyMs": 1.0}])
    with contextlib.suppress(KeyError):
        doc = _delete(doc, path)
    _, _, parsed = parse_manifest(doc)
    assert _dataclass_value(parsed, path) == node["default"], crd.format_path(path)


def _required_paths() -> Iterator[list[str | int]]:
    def walk(node: dict[str, Any], path: list[str | int]) -> Iterator[list[str | int]]:
        for k in node.get("required", []):
            yield [*path, k]
        for k, v in node.get("properties", {}).items():
            yield from walk(v, [*path, k])
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], [*path, 0])

    yield from walk(_schema()["properties"]["spec"], ["spec"])


@pytest.mark.parametrize(
    "path", [p for p in _required_paths() if _in_spec(p)], ids=crd.format_path
)
def test_required_agree_with_spec_py(path: list[str | int]) -> None:
    doc = _delete(_base(path), path)
    where = crd.format_path(path)
    errs = _errors(doc)
    assert errs, f"spec.py accepts a spec without {where}"
    assert any(e.path.startswith(where) or where.startswith(e.path) for e in errs), errs

"""The ScaledModel CRD as data: load it, translate its schema, validate objects offline.

The CRD lives in ``crds/scaledmodel.yaml`` (what users and the Helm chart install).
An installed wheel has no ``crds/`` directory, so a byte-identical copy ships as
package data in ``tritonscale/data/scaledmodel.yaml`` (a test keeps them equal).

:func:`schema_errors` checks an object against the CRD's ``openAPIV3Schema`` with
the ``jsonschema`` library after translating the Kubernetes OpenAPI subset:
``x-kubernetes-*`` extensions are dropped (``int-or-string`` becomes a union,
``preserve-unknown-fields`` keeps extra keys), ``nullable`` adds ``null``, the
OpenAPI 3.0 boolean ``exclusiveMinimum``/``exclusiveMaximum`` become numbers, and
objects with ``properties`` reject unknown fields, as ``kubectl apply`` does with
strict field validation. CEL rules are not evaluated here: ``core/spec.py`` holds
the same cross-field rules and is the offline source of truth.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml

from tritonscale.core.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from tritonscale.core.spec import FieldError

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION"]

_DROP = {"description", "default", "format", "example", "externalDocs", "nullable"}


@functools.cache
def crd_text() -> str:
    """The CRD manifest as shipped in the package."""
    return resources.files("tritonscale").joinpath("data/scaledmodel.yaml").read_text("utf-8")


@functools.cache
def load_crd() -> dict[str, Any]:
    """The parsed CustomResourceDefinition."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd: dict[str, Any] = yaml.load(crd_text(), Loader=loader)
    return crd


def version_entry(crd: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``spec.versions[]`` entry of :data:`VERSION`."""
    crd = load_crd() if crd is None else crd
    for v in crd["spec"]["versions"]:
        if v["name"] == VERSION:
            entry: dict[str, Any] = v
            return entry
    raise KeyError(VERSION)  # pragma: no cover - the shipped CRD has it


def openapi_schema(crd: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of :data:`VERSION`."""
    schema: dict[str, Any] = version_entry(crd)["schema"]["openAPIV3Schema"]
    return schema


def to_jsonschema(node: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
    """Translate a Kubernetes structural schema node into plain JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: to_jsonschema(v, root=False) for k, v in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, Mapping)):
            out[key] = to_jsonschema(value, root=False)
        elif key == "pattern":
            # Go's RE2 (the API server) anchors $ at the end of the text; Python's re,
            # which jsonschema uses, also before a final newline.
            out[key] = str(value).replace("$", r"\Z")
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            continue  # handled with minimum/maximum below
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_jsonschema(v, root=False) for v in value]
        elif key == "not":
            out[key] = to_jsonschema(value, root=False)
        else:
            out[key] = value
    if node.get("exclusiveMinimum") is True and "minimum" in out:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("exclusiveMaximum") is True and "maximum" in out:
        out["exclusiveMaximum"] = out.pop("maximum")
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if root:
        out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return out


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = to_jsonschema(openapi_schema())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def format_path(parts: Iterable[str | int]) -> str:
    """``["spec", "variants", 0, "name"]`` -> ``spec.variants[0].name``."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "<document>"


def _field_error(err: jsonschema.ValidationError) -> FieldError:
    path = list(err.absolute_path)
    wanted: Any = err.validator_value
    schema: Any = err.schema
    if err.validator == "required" and isinstance(err.instance, Mapping):
        missing = [k for k in wanted if k not in err.instance]
        if missing:
            return FieldError(format_path([*path, missing[0]]), "is required")
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        if extra:
            return FieldError(
                format_path([*path, extra[0]]),
                "unknown field" + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""),
            )
    if err.validator == "enum":
        options = ", ".join(str(v) for v in wanted)
        return FieldError(format_path(path), f"must be one of {options}; got {err.instance!r}")
    return FieldError(format_path(path), err.message)


def schema_errors(obj: Any) -> list[FieldError]:
    """Every violation of the CRD's OpenAPI schema in ``obj``, ordered by path."""
    errors = [_field_error(e) for e in _validator().iter_errors(obj)]
    return sorted(set(errors), key=lambda e: (e.path, e.message))


def apply_defaults(obj: Any, schema: Mapping[str, Any] | None = None) -> Any:
    """A copy of ``obj`` with the schema's defaults filled in, as the API server does.

    Structural defaulting: a missing property with a ``default`` gets a copy of it
    (then its own nested defaults), recursively through objects, list items and
    ``additionalProperties``; present values are never changed.
    """
    schema = openapi_schema() if schema is None else schema
    return _default(copy.deepcopy(obj), schema)


def _default(value: Any, node: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        props: Mapping[str, Any] = node.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(value[key], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in list(value):
                if key not in props:
                    value[key] = _default(value[key], extra)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [_default(v, node["items"]) for v in value]
    return value

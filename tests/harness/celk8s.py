"""The CRD's CEL rules evaluated offline with cel-python, as the API server would.

Shared by tests/unit/test_cel.py and test_crd_agreement.py. Objects are typed the
way the API server types them (``number`` is always double) and defaulted first;
the Kubernetes CEL libraries the CRD uses (list ``sum()``, the quantity library's
``isQuantity``/``quantity``/``compareTo``) are provided here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import celpy

from tritonscale import crd

celtypes = celpy.celtypes


def _sum(values: Any) -> Any:
    items = list(values)
    if all(isinstance(v, celtypes.IntType) for v in items):
        return celtypes.IntType(sum(int(v) for v in items))
    return celtypes.DoubleType(sum(float(v) for v in items))


# k8s.io/apimachinery resource.ParseQuantity's grammar (signed; integer exponent).
_K8S_QUANTITY = re.compile(
    r"([+-]?)(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?"
)
_BIN = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DEC = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class Quantity(Decimal):
    """What the Kubernetes CEL quantity library's ``quantity()`` returns."""


def _is_quantity(s: Any) -> Any:
    return celtypes.BoolType(_K8S_QUANTITY.fullmatch(str(s)) is not None)


def _quantity(s: Any) -> Quantity:
    m = _K8S_QUANTITY.fullmatch(str(s))
    if m is None:
        raise ValueError(f"invalid quantity {s!r}")
    number = Decimal(m.group(2)) * (-1 if m.group(1) == "-" else 1)
    suffix = m.group(6) or ""
    if suffix in _BIN:
        return Quantity(number * (2 ** _BIN[suffix]))
    if suffix in _DEC:
        return Quantity(number.scaleb(_DEC[suffix]))
    return Quantity(number.scaleb(int(suffix[1:])))


def _compare_to(a: Quantity, b: Quantity) -> Any:
    return celtypes.IntType((a > b) - (a < b))


FUNCTIONS = {"sum": _sum, "isQuantity": _is_quantity, "quantity": _quantity,
             "compareTo": _compare_to}


def escape(name: str) -> str:
    """A property name as CEL sees it (the API server's escaping: ``a-b`` is ``a__dash__b``)."""
    out = name.replace("__", "__underscores__")
    for ch, word in ((".", "dot"), ("-", "dash"), ("/", "slash")):
        out = out.replace(ch, f"__{word}__")
    return out


def to_cel(value: Any, node: dict[str, Any]) -> Any:
    """JSON -> CEL the way the API server types it (``number`` is always double)."""
    t = node.get("type")
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties") if isinstance(
            node.get("additionalProperties"), dict) else {}
        return celtypes.MapType({
            celtypes.StringType(escape(k) if k in props else k):
                to_cel(v, props.get(k, extra or {})) for k, v in value.items()
        })
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, node.get("items") or {}) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if t == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    return celpy.json_to_cel(value)


def sites(value: Any, node: dict[str, Any], path: str) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    if node.get("x-kubernetes-validations"):
        yield path, value, node
    if isinstance(value, dict):
        for k, sub in (node.get("properties") or {}).items():
            if k in value:
                yield from sites(value[k], sub, f"{path}.{k}" if path else k)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, v in enumerate(value):
            yield from sites(v, node["items"], f"{path}[{i}]")


ENV = celpy.Environment()


@functools.cache
def program(rule: str) -> Any:
    return ENV.program(ENV.compile(rule), functions=FUNCTIONS)


def failing_rules(doc: dict[str, Any], defaults: bool = True) -> list[str]:
    """Messages of every CEL rule that evaluates to false on the (defaulted) ``doc``."""
    schema = crd.openapi_schema()
    obj = crd.apply_defaults(doc, schema) if defaults else doc
    out: list[str] = []
    for _path, value, node in sites(obj, schema, ""):
        for rule in node["x-kubernetes-validations"]:
            result = program(rule["rule"]).evaluate({"self": to_cel(value, node)})
            if isinstance(result, Exception):
                raise AssertionError(f"{rule['rule']}: {result}")
            if not bool(result):
                out.append(str(rule["message"]))
    return out

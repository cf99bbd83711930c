"""The test API server's status merge follows JSON merge patch (RFC 7386) as the
real API server does: the RFC's own examples (Appendix A) are the independent
reference."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.harness.fakes import _merge

# (target, patch, result) from RFC 7386 Appendix A whose target and patch are objects.
RFC_7386_EXAMPLES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ({"a": [{"b": None}]}, {"a": [{"b": None}]}, {"a": [{"b": None}]}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386_EXAMPLES)
def test_status_merge_is_json_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    dst = copy.deepcopy(target)
    _merge(dst, patch)
    assert dst == result

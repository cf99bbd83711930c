"""Every example validates (schema and core rules) and is documented in the README."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from tritonscale.commands.validate import validate_stream
from tritonscale.core.spec import parse_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_there_are_examples() -> None:
    names = {f.name for f in FILES}
    assert {"resnet50.yaml", "bert.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    out = io.StringIO()
    assert validate_stream(str(path), path.read_text(), out) == 0, out.getvalue()
    assert "OK ScaledModel" in out.getvalue()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_documented(path: Path) -> None:
    assert f"`{path.name}`" in (EXAMPLES / "README.md").read_text()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_is_satisfiable_by_interim_rule(path: Path) -> None:
    from tritonscale.core.placement import initial_placement

    _, _, spec = parse_manifest(yaml.safe_load(path.read_text()))
    d = initial_placement(spec)
    assert d.total_replicas == spec.scaling.min_replicas

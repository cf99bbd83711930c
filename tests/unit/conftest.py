from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str = "resnet50.yaml") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return doc


@pytest.fixture
def resnet50() -> dict[str, Any]:
    return load_example("resnet50.yaml")

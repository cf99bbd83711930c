from __future__ import annotations

from typing import Any

import pytest
from fakes import load_example


@pytest.fixture
def resnet50() -> dict[str, Any]:
    return load_example("resnet50.yaml")

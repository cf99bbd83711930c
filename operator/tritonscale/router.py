"""The cascade router's source, as shipped in the package.

``tritonscale/data/router/model.py`` is a Triton Python-backend model; the operator
puts it into a ConfigMap that the tier-1 pods mount as a model repository
(core/cascade_render.py). Read here, not in core/, which stays free of I/O.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def router_source() -> str:
    """The router's ``model.py``."""
    return resources.files("tritonscale").joinpath("data/router/model.py").read_text("utf-8")

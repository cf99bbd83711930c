"""Operator-wide admission rules a valid ScaledModel must also pass (pure).

The CRD and ``core/spec.py`` judge one ScaledModel on its own. Two rules need the
operator's context, and are checked by the reconciler before anything is applied
(a failing rule sets ``SpecValid=False`` with the reason below, and one event):

* **ImageNotAllowed**: cluster admins may restrict ``spec.model.tritonImage`` to
  glob patterns (``tritonscale run --allow-image``, chart value
  ``images.allowed``); the image a ScaledModel would run must match one.
* **ModelNameConflict**: two ScaledModels serving the same Triton model name in one
  namespace would count each other's traffic (Prometheus series are selected by
  namespace and model name). The oldest keeps it (creation time, then name); the
  others are refused until renamed or the older one is deleted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from tritonscale.core.spec import FieldError, ScaledModelSpec

IMAGE_NOT_ALLOWED = "ImageNotAllowed"
MODEL_NAME_CONFLICT = "ModelNameConflict"


@dataclass(frozen=True)
class ImagePolicy:
    """Glob patterns (``fnmatch``, ``*`` also matches ``/``) an image must match;
    empty allows every image. End a registry host with ``/`` in a pattern
    (``registry.example.com/*``) so ``registry.example.com.evil.io/x`` does not match."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> ImagePolicy:
        patterns = tuple(p.strip() for p in entries if p.strip())
        for p in patterns:
            if any(c.isspace() for c in p) or len(p) > 512:
                raise ValueError(f"not an image pattern: {p[:80]!r}")
        return cls(patterns)

    def allows(self, image: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(image, p) for p in self.patterns)


def image_errors(spec: ScaledModelSpec, policy: ImagePolicy) -> list[FieldError]:
    image = spec.model.triton_image
    if policy.allows(image):
        return []
    return [FieldError(
        "spec.model.tritonImage",
        f"image {image[:120]!r} is not allowed by the operator (allowed: "
        f"{', '.join(policy.patterns)[:300]})",
    )]


@dataclass(frozen=True)
class Claim:
    """One ScaledModel serving a Triton model name in a namespace."""

    namespace: str
    name: str
    model: str
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text)


def model_name_errors(me: Claim, others: Iterable[Claim]) -> list[FieldError]:
    """A conflict if an older ScaledModel in the namespace serves the same model name."""
    key = (me.created or "~", me.name)
    older = sorted(
        o.name for o in others
        if o.namespace == me.namespace and o.model == me.model and o.name != me.name
        and (o.created or "~", o.name) < key
    )
    if not older:
        return []
    return [FieldError(
        "spec.model.name",
        f"ScaledModel {older[0]!r} in this namespace already serves model "
        f"{me.model[:120]!r}; the two would count each other's traffic (rename the model "
        f"or delete one)",
    )]

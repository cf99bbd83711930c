"""``spec.cascade``: the contract of a two-tier cascade, parsed and validated.

Pure code. A cascade serves every request with the first tier's variant; a request
whose confidence (the tier's ``confidence.output`` tensor, in [0, 1]) is below the
threshold escalates to the last tier, which answers everything it receives::

    cascade:
      tiers:
        - variant: distil-int8
          escalateBelow:                     # measured on a labelled sample
            - {threshold: 0.5, escalated: 0.12, accuracy: 0.8925}
            - {threshold: 0.7, escalated: 0.20, accuracy: 0.8975}
        - variant: large-int8
      confidence: {output: CONFIDENCE}
      hopMs: 1                               # optional: tier 1 -> tier 2 network hop

``escalated`` is the fraction of *all* requests passed on at that threshold and
``accuracy`` the whole cascade's accuracy there (``tritonscale profile --cascade``
measures both). Exactly two tiers: a point's accuracy is the whole cascade's, which
for three tiers would depend on both thresholds jointly, so a per-tier curve could
not express it.

The same verdicts are CEL rules in crds/scaledmodel.yaml (tests/unit/test_cel.py
checks they agree): unknown or repeated variants, a first tier without points or a
last tier with them, thresholds not strictly ascending, ``escalated`` falling as the
threshold rises (it cannot: a higher threshold escalates a superset), fractions
outside [0, 1], and a curve whose best point is below ``slo.minAccuracy``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the reader lives in core.spec, which imports this module
    from tritonscale.core.spec import _Reader as Reader

MAX_POINTS = 8
DEFAULT_HOP_MS = 1.0


@dataclass(frozen=True)
class EscalationPoint:
    """At ``threshold``: the fraction of all requests escalated and the cascade's accuracy."""

    threshold: float
    escalated: float
    accuracy: float


@dataclass(frozen=True)
class CascadeTier:
    variant: str
    escalate_below: tuple[EscalationPoint, ...] = ()


@dataclass(frozen=True)
class Cascade:
    tiers: tuple[CascadeTier, ...]
    confidence_output: str
    hop_ms: float = DEFAULT_HOP_MS

    @property
    def first(self) -> CascadeTier:
        return self.tiers[0]

    @property
    def last(self) -> CascadeTier:
        return self.tiers[-1]

    @property
    def points(self) -> tuple[EscalationPoint, ...]:
        return self.tiers[0].escalate_below

    def variants(self) -> tuple[str, ...]:
        return tuple(t.variant for t in self.tiers)

    def point(self, threshold: float) -> EscalationPoint | None:
        for p in self.points:
            if abs(p.threshold - threshold) < 1e-9:
                return p
        return None


def parse_cascade(
    r: Reader, data: Any, variant_names: set[str], min_accuracy: float | None
) -> Cascade | None:
    """Read ``spec.cascade`` (None when absent); problems go to ``r``."""
    if data is None:
        return None
    path = "spec.cascade"
    d = r.obj(data, path)
    tiers: list[CascadeTier] = []
    items = r.lst(d.get("tiers"), f"{path}.tiers")
    if d.get("tiers") is not None and len(items) != 2:
        r.err(f"{path}.tiers", f"must have exactly 2 tiers; got {len(items)}")
    seen: set[str] = set()
    for i, td in enumerate(items):
        tp = f"{path}.tiers[{i}]"
        t = r.obj(td, tp)
        name = r.string(t, "variant", tp, required=True)
        if name is not None and variant_names and name not in variant_names:
            r.err(f"{tp}.variant", f"must name one of spec.variants; got {name!r}")
        if name is not None and name in seen:
            r.err(f"{tp}.variant", f"variant {name!r} already serves another tier")
        if name is not None:
            seen.add(name)
        last = i == len(items) - 1
        raw = t.get("escalateBelow")
        if last and raw is not None:
            r.err(f"{tp}.escalateBelow", "the last tier answers everything it receives; "
                  "remove escalateBelow")
        if not last and not raw:
            r.err(f"{tp}.escalateBelow", "is required (at least one point) on every tier "
                  "but the last")
        pts = _parse_points(r, raw, f"{tp}.escalateBelow") if not last else ()
        if name is not None:
            tiers.append(CascadeTier(name, pts))
    conf = r.obj(d.get("confidence"), f"{path}.confidence")
    output = r.string(conf, "output", f"{path}.confidence", required=True)
    if output is not None and len(output) > 128:
        r.err(f"{path}.confidence.output", "must be at most 128 characters")
    hop = r.number(d, "hopMs", path, default=DEFAULT_HOP_MS, minimum=0.0, maximum=10_000.0)
    if tiers and tiers[0].escalate_below and min_accuracy is not None:
        best = max(p.accuracy for p in tiers[0].escalate_below)
        if best < min_accuracy:
            r.err(f"{path}.tiers[0].escalateBelow",
                  f"best accuracy {best:g} is below spec.slo.minAccuracy {min_accuracy:g}")
    if output is None or len(tiers) != 2 or len(items) != 2:
        return None
    return Cascade(tuple(tiers), output, DEFAULT_HOP_MS if hop is None else hop)


def _parse_points(r: Reader, data: Any, path: str) -> tuple[EscalationPoint, ...]:
    out: list[EscalationPoint] = []
    items = r.lst(data, path, required=False)
    if len(items) > MAX_POINTS:
        r.err(path, f"must have at most {MAX_POINTS} points; got {len(items)}")
    for j, pd in enumerate(items):
        pp = f"{path}[{j}]"
        p = r.obj(pd, pp)
        vals = [r.number(p, k, pp, required=True, minimum=0.0, maximum=1.0)
                for k in ("threshold", "escalated", "accuracy")]
        t, e, a = vals
        if t is not None and e is not None and a is not None:
            out.append(EscalationPoint(t, e, a))
    for a_pt, b_pt in itertools.pairwise(out):
        if b_pt.threshold <= a_pt.threshold:
            r.err(path, "thresholds must be strictly ascending")
            break
    for a_pt, b_pt in itertools.pairwise(out):
        if b_pt.escalated < a_pt.escalated:
            r.err(path, "escalated must not decrease as the threshold rises")
            break
    return tuple(out)

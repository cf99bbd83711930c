"""The ``escalateBelow`` curve from a labelled sample (pure; ``profile --cascade`` feeds it).

For every sample the live tier models answered: tier 1's confidence, and whether
tier 1 and tier 2 were right. At threshold t a sample escalates iff its confidence is
below t, so

    escalated(t) = mean(conf < t)
    accuracy(t)  = mean(tier2_right if conf < t else tier1_right)

which is exactly what the router does (a higher threshold escalates a superset, so
``escalated`` never falls). The printed block pastes into ``spec.cascade.tiers[0]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tritonscale.core.cascade_spec import MAX_POINTS, EscalationPoint

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def curve(confidence: npt.ArrayLike, tier1_right: npt.ArrayLike, tier2_right: npt.ArrayLike,
          thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> tuple[EscalationPoint, ...]:
    """One point per threshold (ascending, deduplicated, at most ``MAX_POINTS``)."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    r1 = np.asarray(tier1_right, dtype=bool).ravel()
    r2 = np.asarray(tier2_right, dtype=bool).ravel()
    if not len(conf) == len(r1) == len(r2) or len(conf) == 0:
        raise ValueError("confidence, tier1_right and tier2_right need the same, non-zero length")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must be finite and in [0, 1]")
    ts = sorted({float(t) for t in thresholds})
    if not ts or ts[0] < 0 or ts[-1] > 1 or len(ts) > MAX_POINTS:
        raise ValueError(f"thresholds: 1 to {MAX_POINTS} values in [0, 1]")
    out = []
    for t in ts:
        esc = conf < t
        acc = float(np.mean(np.where(esc, r2, r1)))
        out.append(EscalationPoint(t, round(float(np.mean(esc)), 4), round(acc, 4)))
    return tuple(out)


def to_yaml(points: Sequence[EscalationPoint]) -> str:
    """The ``escalateBelow`` block, indented to paste under a tier."""
    lines = ["escalateBelow:"]
    for p in points:
        lines.append(f"  - {{threshold: {p.threshold:g}, escalated: {p.escalated:g}, "
                     f"accuracy: {p.accuracy:g}}}")
    return "\n".join(lines) + "\n"

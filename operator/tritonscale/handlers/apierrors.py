"""How the reconciler reacts to a failed Kubernetes API call.

Three kinds (:func:`classify`):

- ``CONFLICT`` (409): someone else changed the object; re-read and retry soon (a
  short, jittered delay that grows if conflicts keep coming);
- ``TRANSIENT`` (no response -- timeouts, connection errors --, 429, 5xx, and 401,
  which a refreshed token cures): retry with exponential backoff and full jitter,
  so many models failing together do not retry in lockstep;
- ``PERMANENT`` (400, 403, 404, 405, 422, ...): retrying the same request cannot
  succeed. The reconciler sets a condition and posts ONE event, then waits for a
  spec change (a new ``metadata.generation``), re-checking quietly only every
  ``recheck_seconds`` in case an admin fixed RBAC or a quota.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from tritonscale.adapters.kube import KubeAPIError


class Kind(enum.Enum):
    CONFLICT = "conflict"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(err: KubeAPIError | None) -> Kind:
    """``None`` (a failure that was not an API error) counts as transient."""
    if err is None or err.status is None:
        return Kind.TRANSIENT
    if err.status == 409:
        return Kind.CONFLICT
    if err.status in (401, 408, 429) or err.status >= 500:
        return Kind.TRANSIENT
    return Kind.PERMANENT


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``attempt`` (1, 2, ...): full jitter over an exponential
    ceiling, ``uniform(floor, min(cap, base * 2**(attempt-1)))``."""

    base: float = 1.0
    cap: float = 60.0
    floor: float = 0.1
    conflict_base: float = 0.2
    conflict_cap: float = 2.0

    def delay(self, kind: Kind, attempt: int,
              rand: Callable[[float, float], float] = random.uniform) -> float:
        base, cap = ((self.conflict_base, self.conflict_cap) if kind is Kind.CONFLICT
                     else (self.base, self.cap))
        ceiling = min(cap, base * 2 ** max(0, min(attempt, 64) - 1))
        return rand(min(self.floor, ceiling), ceiling)


@dataclass(frozen=True)
class Blocked:
    """A model whose last pass failed permanently: skipped until its spec changes
    (``generation``) or ``until`` passes."""

    generation: object
    until: float
    message: str

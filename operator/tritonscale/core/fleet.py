"""Which ScaledModels one operator process owns, and when each one ticks (pure).

- **Shards**: ``Shard(index, count)`` owns the ScaledModels whose uid hashes to
  ``index`` modulo ``count`` (BLAKE2b of the uid, so every process agrees, on every
  platform and Python version; the uid never changes, so the share is stable).
  Deployments follow their owner's uid, so a shard sees only its own.
- **Tick slots**: a ScaledModel with ``intervalSeconds: I`` decides at the instants
  ``k * I + phase(uid)``; the phase spreads 2,000 models evenly over the interval
  instead of waking them together. After a decision made at ``t`` (create, spec
  change, resume) the next tick is the first slot at or after ``t + I``, so the
  interval between two decisions is never shorter than ``I``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_SPAN = float(2**64)


def uid_hash(uid: str) -> int:
    """A stable 64-bit hash of a uid (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")


def shard_of(uid: str, count: int) -> int:
    if count < 1:
        raise ValueError(f"shards must be >= 1, got {count}")
    return uid_hash(uid) % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``Shard()`` owns everything)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shards must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard must be in [0, {self.count - 1}], got {self.index}")

    def owns(self, uid: str | None) -> bool:
        """Does this shard own the object with this uid? (no uid: only a single shard)"""
        if self.count == 1:
            return True
        return bool(uid) and shard_of(str(uid), self.count) == self.index

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def phase(uid: str, interval: float) -> float:
    """The offset of a ScaledModel's tick slots inside its interval, in [0, interval)."""
    return uid_hash(uid) / _SPAN * interval


def slot(now: float, uid: str, interval: float) -> int:
    """The index of the tick slot ``now`` falls in (slots start at ``k*I + phase``)."""
    return math.floor((now - phase(uid, interval)) / interval)


def crossed_slot(before: float, now: float, uid: str, interval: float) -> bool:
    """Did a slot boundary of this ScaledModel pass in ``(before, now]``?"""
    return slot(now, uid, interval) > slot(before, uid, interval)


DEFAULT_INTERVAL_SECONDS = 15.0


def interval_of(body: Mapping[str, Any]) -> float:
    """``spec.scaling.intervalSeconds`` of a raw ScaledModel body (>= 1 s; 15 s when
    absent or unreadable: the tick must not fail on a spec the parser rejects)."""
    try:
        v = float(((body.get("spec") or {}).get("scaling") or {}).get("intervalSeconds")
                  or DEFAULT_INTERVAL_SECONDS)
    except (TypeError, ValueError, AttributeError):
        return DEFAULT_INTERVAL_SECONDS
    if not math.isfinite(v):
        return DEFAULT_INTERVAL_SECONDS
    return max(1.0, v)


def peering_active(
    peers: Mapping[str, Any] | None, identity: str, priority: int, now: float
) -> bool:
    """Kopf's peering rule, read from a (Cluster)KopfPeering's ``status``: this
    process acts when no other live peer has a priority >= its own (equal priorities
    pause everyone). ``peers`` None (no peering object) means paused, as Kopf does.

    ``status`` maps identity -> ``{priority, lastseen (ISO 8601 UTC), lifetime (s)}``;
    ``now`` is a Unix time."""
    if peers is None:
        return False
    for ident, info in peers.items():
        if ident == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.fromisoformat(str(info.get("lastseen"))).timestamp()
            alive = seen + float(info.get("lifetime", 60)) > now
            prio = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if alive and prio >= priority:
            return False
    return True

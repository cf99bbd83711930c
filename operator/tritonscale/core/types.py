"""Value types shared by the planner, the simulator and the operator.

Pure: no I/O imports. These are the contract between layers:

* the operator's adapters (and the simulator's scrape model) produce
  :class:`Observation` values;
* :func:`tritonscale.core.autoscale.decide` turns
  (spec, observation, state, now) into a :class:`Decision`;
* the operator renders ``Decision.placements`` into Deployments (and removes
  every Deployment that is not among them), and persists ``Decision.state``
  (a small JSON-able dict, :mod:`tritonscale.core.state`) in the resource's status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def finite_or_none(x: float | None) -> float | None:
    """The one meaning of NaN/Inf/missing in a signal: unknown (``None``)."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True, order=True)
class Placement:
    """``replicas`` Triton replicas of ``variant`` on node pool ``pool``."""

    variant: str
    pool: str
    replicas: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.variant, self.pool)


@dataclass(frozen=True)
class PlacementState:
    """What exists right now for one (variant, pool)."""

    variant: str
    pool: str
    desired: int
    ready: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.variant, self.pool)


@dataclass(frozen=True)
class Observation:
    """Signals observed at one instant. ``None`` means unknown: the plan is held.

    ``rps`` is the arrival rate for the whole ScaledModel (requests/second),
    ``latency_ms`` its observed latency at the SLO percentile; ``current`` is
    what is deployed (desired and ready replicas per (variant, pool)).
    ``per_placement_latency_ms`` lets online correction compare observation and
    prediction per (variant, pool).
    """

    rps: float | None
    latency_ms: float | None = None
    current: tuple[PlacementState, ...] = ()
    queue_ms: float | None = None
    pending: float | None = None
    per_placement_rps: Mapping[tuple[str, str], float] = field(default_factory=dict)
    per_placement_latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Why signals are unknown, if they are (shown in status and events).
    error: str | None = None
    # Pools that currently cannot host replicas (nodes lost, preempted).
    unavailable_pools: frozenset[str] = frozenset()
    # Pools under a spot interruption notice (the cloud reclaims their capacity
    # soon: a node tainted by Karpenter or the AWS Node Termination Handler, or the
    # simulator's announced preemption), each with what announced it. Their replicas
    # serve until then; nothing new goes there (core/autoscale.py, rule 1b).
    noticed_pools: Mapping[str, str] = field(default_factory=dict)
    # Cascades: observed fraction of requests escalated to the last tier (None: unknown).
    escalated: float | None = None

    @property
    def ok(self) -> bool:
        return self.rps is not None and self.error is None


@dataclass(frozen=True)
class Decision:
    """The outcome of one autoscaling step, with its explanation."""

    placements: tuple[Placement, ...]
    # Short machine-readable reason (CamelCase), e.g. "ScaledUp", "HeldUnknownSignals".
    reason: str
    # One human sentence: chosen mix, predicted latency and cost, binding constraint.
    message: str
    predicted_latency_ms: float | None = None
    cost_per_hour: float = 0.0
    slo_feasible: bool = True
    binding_constraint: str = ""
    runner_up: str = ""
    runner_up_cost_per_hour: float | None = None
    # Small JSON-serialisable controller state persisted in status between steps
    # (:func:`tritonscale.core.state.encode`).
    state: Mapping[str, Any] = field(default_factory=dict)
    # Extra details for status.lastDecision (forecast, degradation level, ...).
    details: Mapping[str, Any] = field(default_factory=dict)
    # The mix the policy is heading to; ``placements`` is this step towards it
    # (make-before-break keeps old replicas until the new ones are Ready).
    # ``None``: the placements are the target.
    target: tuple[Placement, ...] | None = None
    # Non-empty when the state read from status was invalid and reset: what was
    # wrong (the operator emits one ``AutoscalerStateReset`` event with it).
    state_reset: str = ""

    def replicas(self) -> dict[tuple[str, str], int]:
        return {p.key: p.replicas for p in self.placements if p.replicas > 0}

    @property
    def total_replicas(self) -> int:
        return sum(p.replicas for p in self.placements)

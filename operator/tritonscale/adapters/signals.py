"""Signal values shared by the Prometheus and direct-scrape sources.

Both sources answer the same questions (request rate, latency at the SLO percentile,
queue time, pending requests; for a whole ScaledModel and per (variant, pool)) and
give the same answer when they cannot: the value is ``None`` ("unknown") and ``error``
says why.  Timeouts, connection errors, garbage answers, empty results, NaN and Inf
all mean unknown; a source never raises to its caller for any of them.

:func:`to_observation` turns :class:`Signals` into the planner's
:class:`tritonscale.core.types.Observation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from tritonscale.core.types import Observation

# A cascade router's counters (data/router/model.py), labelled with the router's model
# name: both signal sources read the escalated fraction from them.
CASCADE_REQUESTS = "tritonscale_cascade_requests_total"
CASCADE_ESCALATED = "tritonscale_cascade_escalated_total"
# The router answers each request after its execute returned (data/router/model.py), so
# Triton's own latency statistics of the router model end at the hand-off: the router
# exports the end-to-end latency itself, as Triton's summary (a gauge per quantile over
# a sliding minute) and duration counter are shaped. Both sources prefer them.
CASCADE_SUMMARY = "tritonscale_cascade_request_summary_us"
CASCADE_DURATION = "tritonscale_cascade_request_duration_us"
# Requests the router holds (a gauge): Triton's pending count of the router is ~0, its
# execute returning at once, so both sources prefer this one (the backlog in the
# router's queues would show nowhere else).
CASCADE_PENDING = "tritonscale_cascade_pending_requests"
ESCALATION_OUT_OF_RANGE = "escalation rate outside [0, 1]"


class GroupKey(NamedTuple):
    """One (variant, pool) group of replicas. Missing labels read as ``""``."""

    variant: str
    pool: str


def finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (unknown) for NaN, Inf and non-numbers."""
    if isinstance(value, bool):
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class Reading:
    """One signal value. ``value is None`` means unknown and ``error`` says why.

    ``is_mean`` is set on latency readings that fell back to the *mean* latency because
    the wanted percentile is not exported: a mean is not a percentile and is usually
    well below it, so callers should treat it as a weaker signal.
    """

    value: float | None
    error: str = ""
    is_mean: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class Breakdown:
    """A signal per (variant, pool). ``error`` is set when the query itself failed,
    in which case ``values`` is empty; a group whose value is NaN/Inf is present with
    an unknown :class:`Reading`."""

    values: Mapping[GroupKey, Reading] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Signals:
    """Everything one poll observed for a ScaledModel (or one of its groups).

    All values are ``None`` when unknown.  ``request_rate`` is arrivals per second
    (successful plus failed requests); ``latency_ms`` is the end-to-end server-side
    latency at ``percentile`` (or the mean, see ``latency_is_mean``); ``queue_ms`` is
    the mean time a request waited in Triton's scheduler queue; ``pending_requests``
    is the number of requests queued or executing right now; ``escalated`` is a
    cascade's escalated fraction (its router's counters; ``escalation_error`` says why
    it is unknown -- it does not make the other signals unknown).

    ``ok`` is true when the source answered and the signals the planner needs are
    known: the request rate, pending requests and -- unless nothing was served in the
    window (rate 0) -- the latency.  ``error`` then is ``""``.
    """

    percentile: float
    request_rate: float | None = None
    latency_ms: float | None = None
    latency_is_mean: bool = False
    queue_ms: float | None = None
    pending_requests: float | None = None
    error: str = ""
    groups: Mapping[GroupKey, Signals] = field(default_factory=dict)
    escalated: float | None = None
    escalation_error: str = ""
    # Requests per second behind ``escalated`` (combining pods weighs each by it).
    escalation_weight: float = 0.0

    @property
    def ok(self) -> bool:
        if self.error or self.request_rate is None or self.pending_requests is None:
            return False
        return self.latency_ms is not None or self.request_rate == 0.0

    @classmethod
    def unknown(cls, percentile: float, error: str) -> Signals:
        return cls(percentile=percentile, error=error or "unknown")


def to_observation(signals: Signals) -> Observation:
    """The planner's view of ``signals`` (``current`` and pool state are the caller's)."""
    per_rps = {
        (k.variant, k.pool): g.request_rate
        for k, g in signals.groups.items()
        if g.request_rate is not None
    }
    per_lat = {
        (k.variant, k.pool): g.latency_ms
        for k, g in signals.groups.items()
        if g.latency_ms is not None
    }
    return Observation(
        rps=signals.request_rate,
        latency_ms=signals.latency_ms,
        queue_ms=signals.queue_ms,
        pending=signals.pending_requests,
        per_placement_rps=per_rps,
        per_placement_latency_ms=per_lat,
        error=(signals.error or "signals unknown") if not signals.ok else None,
        escalated=signals.escalated,
    )

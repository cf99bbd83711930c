"""Weighted routing (``spec.routing.mode: gateway``): per-placement Services and
Gateway API routes whose backendRef weights follow each placement's capacity (pure).

Why: one Service splits requests evenly over Ready pods, so a mix of unequal
replicas holds only N x the slowest replica's capacity. In gateway mode every
(variant, pool) placement gets its own Service (selecting only that Deployment's
pods) and the operator renders one ``gateway.networking.k8s.io/v1`` HTTPRoute
and/or GRPCRoute named after the ScaledModel with one backendRef per placement
Service. A gateway that honours ``weight`` sends each placement
``weight / sum(weights)`` of the requests; inside a placement the replicas are
equal, so the gateway's even split over that Service's endpoints is right.

Weights (:func:`route_weights`): a placement's Ready replicas (at most what the
plan or the transition keeps there) x its per-replica capacity at the SLO
(:func:`tritonscale.core.perf.capacity`), scaled to integers summing to
:data:`WEIGHT_TOTAL`. Replicas that are not Ready get no weight, so a new
placement starts receiving traffic only once it is Ready. With nothing Ready at
all, the planned capacity is used (weights never sum to 0 while a placement exists).

Make-before-break on weights (:func:`gate_deletions`): a Deployment that left the
plan gets weight 0 first; it is deleted only in a later pass, once a route
carrying weight 0 for it has been applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tritonscale.core.perf import capacity
from tritonscale.core.render import (
    ANNOTATION_MODEL,
    GRPC_PORT,
    HTTP_PORT,
    Owner,
    deployment_name,
    labels,
    selector_labels,
    service,
)
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import PlacementState

Key = tuple[str, str]

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/{GATEWAY_VERSION}"
ROUTE_KINDS = {"http": "HTTPRoute", "grpc": "GRPCRoute"}
ROUTE_PLURALS = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}
ROUTE_PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT}
# Weights are integers summing to this (Gateway API allows 0..1,000,000 each).
WEIGHT_TOTAL = 1000
LABEL_BACKEND = "tritonscale.io/route-backend"
# Status condition written in gateway mode.
ROUTED = "Routed"


def placement_service_name(sm: str, variant: str, pool: str) -> str:
    """The per-placement Service shares its Deployment's name (another kind)."""
    return deployment_name(sm, variant, pool)


def replica_capacity(spec: ScaledModelSpec, key: Key) -> float | None:
    """Per-replica capacity (rps) at the SLO of a (variant, pool); None if unknown."""
    try:
        variant = spec.variant(key[0])
        pool = spec.pool(key[1])
    except KeyError:
        return None
    prof = variant.profile_for(pool.accelerator)
    if prof is None:
        return None
    cap = capacity(prof, spec.slo.latency)
    return cap if cap > 0 else None


def _integer_shares(raw: Mapping[Key, float], total: int) -> dict[Key, int]:
    """Largest-remainder rounding of ``raw`` to integers summing to ``total``;
    every positive share gets at least 1."""
    s = sum(raw.values())
    out = {k: 0 for k in raw}
    positive = sorted(k for k, v in raw.items() if v > 0)
    if s <= 0 or not positive:
        return out
    exact = {k: raw[k] * total / s for k in positive}
    for k in positive:
        out[k] = max(1, int(exact[k]))
    left = total - sum(out.values())
    by_rem = sorted(positive, key=lambda k: (-(exact[k] - int(exact[k])), k))
    i = 0
    while left > 0:
        out[by_rem[i % len(by_rem)]] += 1
        left -= 1
        i += 1
    while left < 0:  # the minimum of 1 overshot: take from the largest
        k = max(positive, key=lambda x: (out[x], x))
        out[k] -= 1
        left += 1
    return out


def route_weights(
    spec: ScaledModelSpec,
    states: Sequence[PlacementState],
    leaving: Iterable[Key] = (),
) -> dict[Key, int]:
    """Integer weight per existing placement; ``leaving`` placements get 0.

    ``states`` are the placements as they will exist after this pass (desired =
    what the transition applies or keeps, ready = Ready replicas).
    """
    gone = set(leaving)
    caps = {s.key: replica_capacity(spec, s.key) for s in states}
    known = [c for c in caps.values() if c is not None]
    fallback = min(known) if known else 1.0
    raw: dict[Key, float] = {}
    planned: dict[Key, float] = {}
    for s in states:
        cap = caps[s.key] if caps[s.key] is not None else fallback
        assert cap is not None
        if s.key in gone:
            raw[s.key] = planned[s.key] = 0.0
            continue
        raw[s.key] = min(s.ready, s.desired) * cap
        planned[s.key] = s.desired * cap
    if sum(raw.values()) <= 0:
        raw = planned
    return _integer_shares(raw, WEIGHT_TOTAL)


def gate_deletions(
    delete: Iterable[Key], applied: Mapping[Key, int] | None
) -> tuple[tuple[Key, ...], tuple[Key, ...]]:
    """Split the transition's deletions into (delete now, postpone).

    ``applied``: the weights of the route applied in an earlier pass (None: not
    known, e.g. after a restart). A Deployment may go only once that route
    already gave it weight 0; the others get 0 in this pass and go later.
    """
    now: list[Key] = []
    later: list[Key] = []
    for key in delete:
        if applied is not None and applied.get(key, 0) == 0:
            now.append(key)
        else:
            later.append(key)
    return tuple(now), tuple(later)


def get_placement_service(owner: Owner, spec: ScaledModelSpec, key: Key) -> dict[str, Any]:
    """A Service selecting only the pods of one (variant, pool) Deployment."""
    variant, pool = key
    lab = labels(owner.name, variant, pool)
    lab[LABEL_BACKEND] = "true"
    return service(owner, placement_service_name(owner.name, variant, pool),
                   selector_labels(owner.name, variant, pool),
                   {ANNOTATION_MODEL: spec.model.name}, object_labels=lab,
                   grpc_app_protocol="kubernetes.io/h2c", metrics=False)


def get_routes(
    owner: Owner, spec: ScaledModelSpec, weights: Mapping[Key, int]
) -> list[dict[str, Any]]:
    """One route per protocol in ``spec.routing.protocols``, one backendRef per placement."""
    out: list[dict[str, Any]] = []
    for proto in spec.routing.protocols:
        kind = ROUTE_KINDS[proto]
        backends = [
            {
                "group": "",
                "kind": "Service",
                "name": placement_service_name(owner.name, v, p),
                "port": ROUTE_PORTS[proto],
                "weight": int(w),
            }
            for (v, p), w in sorted(weights.items())
        ]
        out.append({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": kind,
            "metadata": {
                "name": owner.name,
                "namespace": owner.namespace,
                "labels": labels(owner.name),
                "annotations": {"tritonscale.io/model": spec.model.name},
                "ownerReferences": [owner.reference()],
            },
            "spec": {
                "parentRefs": [r.to_k8s() for r in spec.routing.parent_refs],
                "rules": [{"backendRefs": backends}],
            },
        })
    return out


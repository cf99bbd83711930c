"""The ScaledModel ``status`` as pure functions of what was decided and observed.

Conditions follow the Kubernetes API conventions: one entry per ``type`` with
``status`` True/False/Unknown, a CamelCase ``reason``, a human ``message``,
``observedGeneration``, and a ``lastTransitionTime`` that only moves when
``status`` flips.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonscale.core.api import LABEL_POOL, LABEL_VARIANT
from tritonscale.core.pricing import cost_per_hour
from tritonscale.core.render import deployment_name
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Decision, Observation, Placement, PlacementState

SPEC_VALID = "SpecValid"
SATISFIABLE = "Satisfiable"
READY = "Ready"
SLO_MET = "SLOMet"
SIGNALS = "SignalsAvailable"
CONDITION_TYPES = (SPEC_VALID, SATISFIABLE, READY, SLO_MET, SIGNALS)

# Status keys whose change alone is not worth a write.
_VOLATILE = ("time",)


def iso(now: float) -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    t = dt.datetime.fromtimestamp(now, tz=dt.UTC).replace(microsecond=0)
    return t.isoformat().replace("+00:00", "Z")


MAX_MESSAGE = 1024


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """Keep status messages readable (a signal error can carry a whole URL)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    generation: int | None,
    now: float,
) -> list[dict[str, Any]]:
    """Existing conditions with ``updates`` applied, in a stable order."""
    by_type: dict[str, dict[str, Any]] = {
        str(c["type"]): dict(c) for c in existing or () if isinstance(c, Mapping) and "type" in c
    }
    for u in updates:
        old = by_type.get(u.type)
        changed = old is None or old.get("status") != u.status
        new: dict[str, Any] = {
            "type": u.type,
            "status": u.status,
            "reason": u.reason,
            "message": clip(u.message),
            "lastTransitionTime": iso(now)
            if changed or not old or not old.get("lastTransitionTime")
            else old["lastTransitionTime"],
        }
        if generation is not None:
            new["observedGeneration"] = generation
        by_type[u.type] = new
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], 99), c["type"]))


def condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any]:
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return {}


def states_from_deployments(deployments: Iterable[Mapping[str, Any]]) -> list[PlacementState]:
    """(variant, pool, desired, ready) of each Deployment labelled by the operator."""
    out: list[PlacementState] = []
    for d in deployments:
        labels = (d.get("metadata") or {}).get("labels") or {}
        variant, pool = labels.get(LABEL_VARIANT), labels.get(LABEL_POOL)
        if not variant or not pool:
            continue
        desired = int((d.get("spec") or {}).get("replicas") or 0)
        ready = int((d.get("status") or {}).get("readyReplicas") or 0)
        out.append(PlacementState(variant, pool, desired, ready))
    return sorted(out, key=lambda s: s.key)


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def stalled_pools(
    deployments: Iterable[Mapping[str, Any]],
    startup_seconds: Mapping[str, float],
    now: float,
    factor: float = 2.0,
    floor_seconds: float = 30.0,
) -> set[str]:
    """Pools whose Deployments cannot get their replicas Ready.

    A Deployment counts as stalled when its ``Available`` condition has been False
    for longer than ``factor`` x the pool's ``startupSeconds`` (at least
    ``floor_seconds``) -- nodes lost, spot capacity gone, pods unschedulable -- or
    when Kubernetes reports ``ReplicaFailure`` or ``ProgressDeadlineExceeded``.
    """
    out: set[str] = set()
    for d in deployments:
        labels = (d.get("metadata") or {}).get("labels") or {}
        pool = labels.get(LABEL_POOL)
        desired = int((d.get("spec") or {}).get("replicas") or 0)
        ready = int((d.get("status") or {}).get("readyReplicas") or 0)
        if not pool or desired <= 0 or ready >= desired:
            continue
        budget = max(floor_seconds, factor * startup_seconds.get(pool, 120.0))
        for c in (d.get("status") or {}).get("conditions") or ():
            ctype, cstatus = c.get("type"), c.get("status")
            failed = ctype == "ReplicaFailure" and cstatus == "True"
            deadline = ctype == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            if failed or deadline:
                out.add(pool)
            elif ctype == "Available" and cstatus == "False":
                since = _parse_time(c.get("lastTransitionTime"))
                if since is not None and now - since > budget:
                    out.add(pool)
    return out


def placements_from_status(status: Mapping[str, Any] | None) -> tuple[Placement, ...] | None:
    """The plan recorded in ``status.lastDecision.placements`` (None if never decided)."""
    last = (status or {}).get("lastDecision")
    if not isinstance(last, Mapping) or not isinstance(last.get("placements"), list):
        return None
    out: list[Placement] = []
    for p in last["placements"]:
        try:
            out.append(Placement(str(p["variant"]), str(p["pool"]), int(p["replicas"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(sorted(out))


def target_from_status(status: Mapping[str, Any] | None) -> tuple[Placement, ...] | None:
    """The mix the last decision was heading to (``lastDecision.details.target``)."""
    last = (status or {}).get("lastDecision")
    details = last.get("details") if isinstance(last, Mapping) else None
    raw = details.get("target") if isinstance(details, Mapping) else None
    if not isinstance(raw, list):
        return None
    out: list[Placement] = []
    for item in raw:
        if (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], str) and isinstance(item[2], int)
                and not isinstance(item[2], bool) and item[2] > 0):
            out.append(Placement(item[0], item[1], item[2]))
    return tuple(sorted(out))


def ready_summary(states: Sequence[PlacementState]) -> str:
    return f"{sum(s.ready for s in states)}/{sum(s.desired for s in states)}"


def placement_summary(states: Sequence[PlacementState]) -> str:
    """``int8@t4-spot x3,fp16@a100 x1`` from what is deployed (desired replicas)."""
    items = sorted(
        (s for s in states if s.desired > 0), key=lambda s: (-s.desired, s.variant, s.pool)
    )
    return ",".join(f"{s.variant}@{s.pool} x{s.desired}" for s in items)


def decision_status(decision: Decision, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "reason": decision.reason,
        "message": decision.message,
        "time": iso(now),
        "placements": [
            {"variant": p.variant, "pool": p.pool, "replicas": p.replicas}
            for p in sorted(decision.placements)
        ],
        "costPerHour": round(decision.cost_per_hour, 4),
        "sloFeasible": decision.slo_feasible,
    }
    if decision.predicted_latency_ms is not None:
        out["predictedLatencyMs"] = round(decision.predicted_latency_ms, 3)
    if decision.binding_constraint:
        out["bindingConstraint"] = decision.binding_constraint
    if decision.runner_up:
        out["runnerUp"] = decision.runner_up
    if decision.runner_up_cost_per_hour is not None:
        out["runnerUpCostPerHour"] = round(decision.runner_up_cost_per_hour, 4)
    if decision.details:
        out["details"] = dict(decision.details)
    return out


def observed_status(obs: Observation, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {"time": iso(now)}
    if obs.rps is not None:
        out["rps"] = round(obs.rps, 3)
    if obs.latency_ms is not None:
        out["latencyMs"] = round(obs.latency_ms, 3)
    if obs.error:
        out["error"] = obs.error
    return out


def signals_condition(obs: Observation) -> Condition:
    if obs.ok:
        return Condition(SIGNALS, "True", "SignalsRead", "load and latency signals are available")
    return Condition(SIGNALS, "False", "SignalsUnavailable", obs.error or "load is unknown")


def slo_condition(obs: Observation, target_ms: float, percentile: float) -> Condition:
    if obs.latency_ms is None:
        return Condition(SLO_MET, "Unknown", "LatencyUnknown", "no latency observation yet")
    ok = obs.latency_ms <= target_ms
    return Condition(
        SLO_MET,
        "True" if ok else "False",
        "WithinTarget" if ok else "TargetExceeded",
        f"p{percentile:g} latency {obs.latency_ms:.1f} ms "
        f"{'<=' if ok else '>'} target {target_ms:g} ms",
    )


def satisfiable_condition(decision: Decision) -> Condition:
    if decision.slo_feasible:
        return Condition(
            SATISFIABLE, "True", "Satisfiable",
            "a mix within the node pools, accuracy floor and budget can hold the SLO",
        )
    return Condition(
        SATISFIABLE, "False", decision.reason or "Unsatisfiable", clip(decision.message)
    )


def ready_condition(states: Sequence[PlacementState], draining: bool, target: int) -> Condition:
    ready = sum(s.ready for s in states)
    desired = sum(s.desired for s in states)
    if draining:
        return Condition(
            READY, "False", "Transitioning",
            f"new placements have {ready}/{target} ready replicas; old placements are kept "
            "until they cover the plan",
        )
    if ready < desired:
        return Condition(READY, "False", "ReplicasNotReady", f"{ready}/{desired} replicas ready")
    return Condition(READY, "True", "AllReplicasReady", f"{ready}/{desired} replicas ready")


def replace_patch(old: Any, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning the object ``old`` into ``new`` exactly.

    Merge patches merge nested objects, so keys that ``new`` lacks are set to None
    (deleted) at every level; otherwise a stale value (an old ``rps``) would stay.
    """
    old_map: Mapping[str, Any] = old if isinstance(old, Mapping) else {}
    out: dict[str, Any] = {k: None for k in old_map if k not in new}
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(old_map.get(k), Mapping):
            out[k] = replace_patch(old_map[k], v)
        else:
            out[k] = v
    return out


autoscaler_patch = replace_patch


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: what the API server stores after ``patch``."""
    out: dict[str, Any] = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping):
            base = out.get(k)
            out[k] = merge_patch(base if isinstance(base, Mapping) else {}, v)
        else:
            out[k] = v
    return out


def _strip(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip(v) for k, v in obj.items() if k not in _VOLATILE and v is not None}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same(a: Any, b: Any) -> bool:
    """``_strip(a) == _strip(b)``, without building the stripped copies.

    Equal values strip to equal values, so plain ``==`` (in C) answers most
    comparisons; only values that differ are walked, and only the parts that
    differ are compared stripped. Inside mappings and lists an object is the same
    as itself (as in Python's container comparison: a NaN equals itself there)."""
    if a == b:
        return True
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        ka = {k for k, v in a.items() if k not in _VOLATILE and v is not None}
        kb = {k for k, v in b.items() if k not in _VOLATILE and v is not None}
        return ka == kb and all(a[k] is b[k] or _same(a[k], b[k]) for k in ka)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(
            x is y or _same(x, y) for x, y in zip(a, b, strict=True))
    return bool(_strip(a) == _strip(b))


def status_changed(old: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> bool:
    """Would applying ``patch`` change ``old`` in more than timestamps?"""
    old = old or {}
    return not all(_same(old.get(k), v) for k, v in patch.items())


def same_decision(old: Any, new: Mapping[str, Any]) -> bool:
    """Is ``new`` (a ``lastDecision``) the recorded one, timestamps aside?"""
    return isinstance(old, Mapping) and _same(old, new)


def build_status(
    *,
    old: Mapping[str, Any],
    spec: ScaledModelSpec,
    name: str,
    generation: Any,
    now: float,
    states: Sequence[PlacementState],
    plan: Sequence[Placement],
    draining: bool,
    target: int,
    unavailable_pools: Iterable[str] = (),
    decision: Decision | None = None,
    observation: Observation | None = None,
    extra_conditions: Sequence[Condition] = (),
    drop_conditions: Iterable[str] = (),
    deployment_names: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """The status merge patch after one reconcile, from what was decided (``decision``,
    None when the recorded plan was reused), observed (``observation``) and now exists
    (``states``, per (variant, pool)); ``old`` is the status the object holds;
    ``extra_conditions`` (e.g. ``Routed``) follow the built-in ones; conditions of a
    type in ``drop_conditions`` are removed; ``deployment_names`` are the live
    Deployments' names per (variant, pool) (one named by an older operator keeps its
    name), else today's naming.

    Pure: the reconciler computes, applies, then writes what this returns."""
    conds = [Condition(SPEC_VALID, "True", "Valid", "spec is valid")]
    patch: dict[str, Any] = {}
    if decision is not None:
        conds.append(satisfiable_condition(decision))
        last = decision_status(decision, now)
        if same_decision(old.get("lastDecision"), last):
            last["time"] = old["lastDecision"].get("time", last["time"])
        patch["lastDecision"] = replace_patch(old.get("lastDecision"), last)
        predicted: dict[str, Any] = {"costPerHour": round(decision.cost_per_hour, 4)}
        if decision.predicted_latency_ms is not None:
            predicted["latencyMs"] = round(decision.predicted_latency_ms, 3)
        patch["predicted"] = replace_patch(old.get("predicted"), predicted)
        patch["autoscaler"] = replace_patch(old.get("autoscaler"), decision.state)
    if observation is not None:
        conds.append(signals_condition(observation))
        conds.append(
            slo_condition(observation, spec.slo.latency.target_ms, spec.slo.latency.percentile)
        )
        patch["observed"] = replace_patch(old.get("observed"), observed_status(observation, now))
        patch["interruptionNotices"] = [
            {"pool": pool, "reason": clip(why)}
            for pool, why in sorted(observation.noticed_pools.items())
        ]
    conds.append(ready_condition(states, draining, target))
    conds.extend(extra_conditions)
    dropped = set(drop_conditions)
    plan_keys = {p.key for p in plan}
    known_pools = {p.name for p in spec.node_pools}
    patch.update(
        observedGeneration=generation,
        conditions=merge_conditions(
            [c for c in old.get("conditions") or () if c.get("type") not in dropped],
            conds, generation, now),
        placements=[
            {"variant": s.variant, "pool": s.pool, "desired": s.desired, "ready": s.ready,
             "deployment": (deployment_names or {}).get(
                 s.key, deployment_name(name, s.variant, s.pool)),
             "planned": s.key in plan_keys}
            for s in states
        ],
        placement=placement_summary(states),
        unavailablePools=sorted(unavailable_pools),
        ready=ready_summary(states),
        readyReplicas=sum(s.ready for s in states),
        desiredReplicas=sum(s.desired for s in states),
        costPerHour=round(
            cost_per_hour(spec, [Placement(s.variant, s.pool, s.desired)
                                 for s in states if s.pool in known_pools]), 4),
    )
    return patch

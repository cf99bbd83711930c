"""Stabilisation and transitions: windows, step limits, make-before-break.

Pure code, two parts:

1. :func:`stabilize_load` applies HPA's stabilisation windows to the *demand*
   the planner plans for (rps the fleet must hold), not to replica counts: a mix
   of variants and pools has no single "replica count", while the planner maps
   a load to one mix deterministically. Like HPA's
   ``stabilizeRecommendationWithBehaviors``: ``up`` = min of recommendations
   over the scale-up window, ``down`` = max over the scale-down window; the
   previous value moves up to ``up`` if below it, down to ``down`` if above it,
   else holds. So a rise is followed within one interval (up window 0), a fall
   only once it has lasted the whole down window.

2. :func:`transition` turns the planner's target mix into this step's desired
   replicas: bounded steps (``maxScaleUpStep`` / ``maxScaleDownStep`` on the
   total), not-yet-Ready replicas count as capacity being added (the target is
   in desired replicas, so nothing is added twice), and make-before-break:
   while any target (variant, pool) has fewer Ready replicas than it needs,
   no Ready replica elsewhere is removed (not-Ready ones may go). Given the
   pools' ``maxReplicas`` (and the total limit), the surge stays within them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonscale.core.spec import ScaledModelSpec, Scaling
from tritonscale.core.types import PlacementState

Key = tuple[str, str]


def stabilize_load(
    window: Sequence[Sequence[float]] | None,
    previous: float | None,
    recommendation: float,
    now: float,
    up_seconds: float,
    down_seconds: float,
) -> tuple[float, list[list[float]]]:
    """Return (stabilised load, new window) for this step's ``recommendation``.

    ``window`` is the list of ``[time, load]`` recommendations kept in state.
    """
    keep = max(up_seconds, down_seconds)
    hist: list[list[float]] = [
        [float(t), float(v)]
        for t, v in (window or [])
        if now - float(t) < keep and float(t) <= now
    ]
    hist.append([now, float(recommendation)])
    up = min(v for t, v in hist if now - t <= up_seconds)
    down = max(v for t, v in hist if now - t <= down_seconds)
    prev = recommendation if previous is None else previous
    if prev < up:
        out = up
    elif prev > down:
        out = down
    else:
        out = prev
    # Every window ends now, so an entry followed by a later one at least as
    # high can never again be a window's max (likewise for min): keep only the
    # entries that still can be, which keeps the state a short list.
    pruned: list[list[float]] = []
    later_max = -1.0
    later_min = float("inf")
    for t, v in reversed(hist):
        need_max = v > later_max
        need_min = now - t <= up_seconds and v < later_min
        if need_max or need_min:
            pruned.append([round(t, 3), v])
        later_max = max(later_max, v)
        later_min = min(later_min, v)
    pruned.reverse()
    return out, pruned


@dataclass(frozen=True)
class Transition:
    desired: dict[Key, int]
    held_for_readiness: bool  # make-before-break kept old replicas
    step_limited: bool


def _limit(changes: dict[Key, int], budget: int) -> dict[Key, int]:
    """Grant at most ``budget`` units of change, in key order."""
    out: dict[Key, int] = {}
    left = budget
    for k in sorted(changes):
        take = min(changes[k], left)
        out[k] = take
        left -= take
    return out


def transition(
    target: Mapping[Key, int],
    current: Sequence[PlacementState],
    scaling: Scaling,
    pool_max: Mapping[str, int] | None = None,
    max_total: int | None = None,
) -> Transition:
    """This step's desired replicas on the way to ``target`` (see the module docstring).

    ``pool_max`` (pool -> maxReplicas) and ``max_total`` bound the desired replicas,
    surge included: see :func:`_fit_limits`.
    """
    cur = {p.key: p.desired for p in current if p.desired > 0}
    ready = {p.key: p.ready for p in current}
    keys = set(cur) | {k for k, v in target.items() if v > 0}
    want = {k: max(0, int(target.get(k, 0))) for k in keys}
    adds = {k: want[k] - cur.get(k, 0) for k in keys if want[k] > cur.get(k, 0)}
    rems = {k: cur.get(k, 0) - want[k] for k in keys if want[k] < cur.get(k, 0)}
    limited = False
    if scaling.max_scale_up_step > 0 and sum(adds.values()) > scaling.max_scale_up_step:
        adds = _limit(adds, scaling.max_scale_up_step)
        limited = True
    if scaling.max_scale_down_step > 0 and sum(rems.values()) > scaling.max_scale_down_step:
        rems = _limit(rems, scaling.max_scale_down_step)
        limited = True
    out = {k: cur.get(k, 0) + adds.get(k, 0) - rems.get(k, 0) for k in keys}
    # Make-before-break: new capacity must be Ready before Ready capacity goes. A
    # placement the target shrinks counts too: shrunk to replicas that are not
    # Ready yet, it is still capacity on its way (a tier of a cascade moving to
    # another pool shrinks its booting placement while dropping its Ready one).
    waiting = any(out[k] > ready.get(k, 0) and out[k] > 0 for k in keys)
    held = False
    if waiting:
        for k in rems:
            keep = min(cur.get(k, 0), max(out[k], ready.get(k, 0)))
            if keep > out[k]:
                out[k] = keep
                held = True
    if pool_max is not None or max_total is not None:
        out = _fit_limits(out, cur, ready, want, pool_max, max_total)
    return Transition({k: v for k, v in sorted(out.items()) if v > 0}, held, limited)


def _fit_limits(
    out: dict[Key, int],
    cur: Mapping[Key, int],
    ready: Mapping[Key, int],
    want: Mapping[Key, int],
    pool_max: Mapping[str, int] | None,
    max_total: int | None,
) -> dict[Key, int]:
    """Keep a transition within each pool's ``maxReplicas`` and the total limit.

    Make-before-break surges: old replicas stay while new ones boot. In a pool at
    its limit the new ones cannot be scheduled (and would never become Ready, so
    the old ones would be held for ever), so: replicas being added get the free
    slots only (not-Ready ones first to go); when a limit still binds and nothing
    in it is booting, one held Ready replica is released per step, so a full pool
    rolls over one replica at a time instead of deadlocking.
    """
    out = dict(out)
    groups: list[tuple[list[Key], int]] = []
    if pool_max is not None:
        for pool, limit in sorted(pool_max.items()):
            groups.append(([k for k in sorted(out) if k[1] == pool], max(0, limit)))
    if max_total is not None:
        groups.append((sorted(out), max(0, max_total)))
    for keys, limit in groups:
        excess = sum(out[k] for k in keys) - limit
        if excess <= 0:
            continue
        # 1. Adds beyond the current desired replicas: only what fits is added.
        for k in sorted(keys, key=lambda k: out[k] - cur.get(k, 0), reverse=True):
            cut = min(excess, max(0, out[k] - cur.get(k, 0)))
            out[k] -= cut
            excess -= cut
        # 2. Replicas not Ready beyond what the target keeps (booting, not needed).
        for k in keys:
            cut = min(excess, max(0, out[k] - max(want.get(k, 0), ready.get(k, 0))))
            out[k] -= cut
            excess -= cut
        # 3. Still over (held Ready replicas fill the limit): roll one at a time.
        booting = any(out[k] > ready.get(k, 0) for k in keys)
        gone = next((k for k in keys if out[k] > want.get(k, 0)), None)
        short = next((k for k in keys if out[k] < want.get(k, 0)), None)
        if excess >= 0 and not booting and gone is not None and (excess > 0 or short):
            out[gone] -= 1
            if short is not None and excess == 0:
                out[short] += 1  # the freed slot goes to the new placement
    return out


def pool_limits(spec: ScaledModelSpec) -> dict[str, int]:
    """Each node pool's ``maxReplicas`` (the bound of a transition's surge)."""
    return {p.name: p.max_replicas for p in spec.node_pools}


def movement_reason(held: bool, final: Mapping[Key, int], cur: Mapping[Key, int]) -> str:
    """The reason for a step that met its plan: how ``final`` moves from ``cur``.

    ``held`` means a make-before-break wait (new capacity not Ready yet).
    """
    if held:
        return "Transitioning"
    if sum(final.values()) > sum(cur.values()):
        return "ScaledUp"
    if sum(final.values()) < sum(cur.values()):
        return "ScaledDown"
    if dict(final) != dict(cur):
        return "Transitioning"
    return "Held"


def merge_floor(a: Mapping[Key, int], b: Mapping[Key, int]) -> dict[Key, int]:
    """Per-key maximum of two mixes (used to never go below ``current``)."""
    keys = set(a) | set(b)
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in sorted(keys) if max(a.get(k, 0),
                                                                      b.get(k, 0)) > 0}


def as_state_mix(mix: Mapping[Key, int]) -> list[list[Any]]:
    return [[v, p, n] for (v, p), n in sorted(mix.items()) if n > 0]


def from_state_mix(data: Any) -> dict[Key, int]:
    out: dict[Key, int] = {}
    if isinstance(data, list):
        for item in data:
            if isinstance(item, (list, tuple)) and len(item) == 3:
                v, p, n = item
                if isinstance(v, str) and isinstance(p, str) and isinstance(n, int) and n > 0:
                    out[(v, p)] = n
    return out

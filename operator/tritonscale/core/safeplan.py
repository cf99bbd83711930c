"""The part of ``scaling.safePlan`` that may run, given what already runs (pure).

The safe plan is applied when signals keep failing, on top of what is deployed
(never scaling anything down). ``core/spec.py`` and the CRD already refuse a safe
plan that breaks a limit on its own; this is the run-time guard for what static
checks cannot see (what is already deployed, pools found unavailable, a spec that
reached the operator some other way): every limit the planner obeys holds for the
merged mix, and anything cut is said, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tritonscale.core.pricing import mix_cost_per_hour, replica_price_per_hour
from tritonscale.core.spec import ScaledModelSpec

Key = tuple[str, str]


@dataclass(frozen=True)
class SafePlanResult:
    # The mix to apply: the base mix plus as much of the safe plan as the limits allow.
    mix: dict[Key, int]
    # One sentence per entry dropped or cut, naming the limit.
    notes: tuple[str, ...] = ()


def _cost(spec: ScaledModelSpec, mix: Mapping[Key, int]) -> float:
    return mix_cost_per_hour(spec, mix)


def admissible_safe_plan(
    spec: ScaledModelSpec,
    base: Mapping[Key, int],
    unavailable: Iterable[str] = (),
) -> SafePlanResult:
    """``base`` raised toward the safe plan, entry by entry, within every limit.

    Entries are refused whose variant is unknown or below ``slo.minAccuracy`` (and not
    a tier of ``spec.cascade``), whose
    pool is unknown or unavailable, or whose variant has no profile for the pool's
    accelerator; the others are cut so the merged mix stays within the pool's
    ``maxReplicas``, ``scaling.maxReplicas`` and ``slo.maxCostPerHour``. ``base``
    itself is never reduced (that is the stabiliser's business).
    """
    gone = set(unavailable)
    variants = {v.name: v for v in spec.variants}
    pools = {p.name: p for p in spec.node_pools}
    budget = spec.slo.max_cost_per_hour
    # A cascade's tiers answer together; a tier below the floor may run.
    tiers = set(spec.cascade.variants()) if spec.cascade is not None else set()
    mix = {k: n for k, n in base.items() if n > 0}
    notes: list[str] = []
    for e in spec.scaling.safe_plan:
        if e.replicas <= 0:
            continue
        key = (e.variant, e.pool)
        what = f"{e.variant}@{e.pool}"
        v = variants.get(e.variant)
        p = pools.get(e.pool)
        if v is None or p is None:
            notes.append(f"{what} skipped: not in the spec")
            continue
        if v.accuracy < spec.slo.min_accuracy and e.variant not in tiers:
            notes.append(f"{what} skipped: below minAccuracy {spec.slo.min_accuracy:g}")
            continue
        if v.profile_for(p.accelerator) is None:
            notes.append(f"{what} skipped: no profile for accelerator {p.accelerator}")
            continue
        if e.pool in gone:
            notes.append(f"{what} skipped: pool unavailable")
            continue
        have = mix.get(key, 0)
        want = e.replicas - have
        if want <= 0:
            continue
        rooms = {
            f"pool maxReplicas {p.max_replicas}":
                p.max_replicas - sum(n for (_, q), n in mix.items() if q == e.pool),
            f"maxReplicas {spec.scaling.max_replicas}":
                spec.scaling.max_replicas - sum(mix.values()),
        }
        price = replica_price_per_hour(p)
        if budget is not None and price > 0:
            left = budget - _cost(spec, mix)
            rooms[f"maxCostPerHour {budget:g}"] = (
                math.floor(left / price + 1e-9) if left > 0 else 0
            )
        limit, room = min(rooms.items(), key=lambda kv: kv[1])
        grant = max(0, min(want, room))
        if grant < want:
            notes.append(f"{what} cut to {have + grant} of {e.replicas}: {limit}")
        if grant:
            mix[key] = have + grant
    return SafePlanResult(dict(sorted(mix.items())), tuple(notes))

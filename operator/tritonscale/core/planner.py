"""Choose the (variant x node pool x replicas) mix: minimum cost under the SLO.

Pure code. The routing model the operator deploys decides the maths. In
``spec.routing.mode: service`` (the default) one Kubernetes Service fronts every
Ready replica of a ScaledModel and splits requests evenly (kube-proxy), so with
N replicas each gets L / N whatever its variant or accelerator. A mix therefore
holds the SLO at load L iff

    N * min_{used (variant, pool)} capacity(variant, pool) >= L

In ``mode: gateway`` (``Request.weighted``) Gateway API routes weight each
placement by its capacity, so a mix holds sum_k n_k * capacity_k >= L; that
problem is solved by :mod:`.weighted` (an exact integer program) and everything
below about thresholds applies to the even split only.

where ``capacity`` (:func:`tritonscale.core.perf.capacity`) is the largest
per-replica rate whose predicted latency percentile meets the target.

Problem (one call of :func:`solve`): minimise sum(price * replicas) subject to

* the SLO at the planning load L (forecast x (1 + headroom)),
* spot protection (optional): the on-demand replicas alone hold the SLO at the
  *current* load L_od if every spot replica vanished:
  N_od * min_{used on-demand} capacity >= L_od,
* every variant's accuracy >= ``slo.minAccuracy`` (others are never candidates),
* per-pool ``maxReplicas`` (shared by the variants on that pool), global
  ``minReplicas`` / ``maxReplicas``, ``maxCostPerHour``,
* pools listed as unavailable are excluded.

Exact search (no MILP needed): the optimum's smallest spot capacity and
smallest on-demand capacity are two of the candidates' capacities, so we
enumerate those pairs of thresholds. For a pair, every pool with a variant
above its threshold is usable (all variants on a pool cost the same, so the
pool contributes its most accurate such variant), N and N_od are fixed by the
constraints, and the cheapest way to buy N units of which at least N_od are
on-demand is greedy: the N_od cheapest on-demand units, then the cheapest of
what remains; pools alike in price, capacity and capacity type share their part
evenly (:func:`_fill_even`: the same cost, and a spot pool per zone then loses
only its share to a preemption). ``tests/unit/test_planner.py`` checks optimality
against brute force. With 4 variants x 6 pools that is at most 13 x 13 threshold pairs of a
six-step greedy each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tritonscale.core import weighted
from tritonscale.core.perf import capacity, predict_latency_ms
from tritonscale.core.pricing import replica_price_per_hour
from tritonscale.core.spec import Profile, ScaledModelSpec
from tritonscale.core.types import Placement

Key = tuple[str, str]
_EPS = 1e-9


@dataclass(frozen=True)
class Combo:
    """One candidate (variant, pool) with its per-replica capacity at the SLO."""

    variant: str
    pool: str
    accuracy: float
    capacity_rps: float
    price_per_hour: float  # per replica
    spot: bool
    pool_max: int
    profile: Profile

    @property
    def key(self) -> Key:
        return (self.variant, self.pool)


@dataclass(frozen=True)
class Plan:
    """A mix of replicas with what it costs and what load it holds."""

    counts: tuple[tuple[Key, int], ...]
    cost_per_hour: float
    min_capacity_rps: float  # capacity of the weakest replica used (inf if none)
    od_min_capacity_rps: float
    on_demand: int = 0  # replicas on on-demand pools
    # Weighted routing: the mix holds the sum of its capacities, not N x the weakest.
    weighted: bool = False
    capacity_sum_rps: float = 0.0

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    @property
    def supported_rps(self) -> float:
        if self.weighted:
            return self.capacity_sum_rps
        return 0.0 if self.total == 0 else self.total * self.min_capacity_rps

    def keys(self) -> frozenset[Key]:
        return frozenset(k for k, n in self.counts if n > 0)

    def placements(self) -> tuple[Placement, ...]:
        return tuple(Placement(v, p, n) for (v, p), n in self.counts if n > 0)


@dataclass(frozen=True)
class Request:
    """One planning problem."""

    load_rps: float
    od_load_rps: float = 0.0  # spot protection: on-demand must hold this
    min_replicas: int = 0
    max_replicas: int = 1_000_000
    max_cost_per_hour: float | None = None
    # spec.routing.mode gateway: capacities add up (see .weighted).
    weighted: bool = False


def candidates(
    spec: ScaledModelSpec,
    unavailable: Iterable[str] = (),
    min_accuracy: float | None = None,
) -> tuple[Combo, ...]:
    """Every allowed (variant, pool) with its capacity at the spec's SLO.

    Cached by content (variants, pools, SLO, unavailable pools, floor), so a
    spec parsed anew each reconcile still gets the same tuple back and the
    solver's per-tuple precomputation is reused across steps.
    """
    gone = frozenset(unavailable)
    floor = spec.slo.min_accuracy if min_accuracy is None else min_accuracy
    ck = (spec.variants, spec.node_pools, spec.slo.latency, gone, floor)
    hit = _CANDIDATES.get(ck)
    if hit is not None:
        return hit
    result = _candidates(spec, gone, floor)
    if len(_CANDIDATES) > 256:
        _CANDIDATES.clear()
    _CANDIDATES[ck] = result
    return result


_CANDIDATES: dict[tuple[Any, ...], tuple[Combo, ...]] = {}
_DERIVED: dict[tuple[int, str], tuple[Sequence[Combo], tuple[Combo, ...]]] = {}


def _derived(combos: Sequence[Combo], what: str, make: Callable[[], tuple[Combo, ...]]
             ) -> tuple[Combo, ...]:
    """A relaxed copy of ``combos`` (for binding checks), cached per tuple."""
    hit = _DERIVED.get((id(combos), what))
    if hit is not None and hit[0] is combos:
        return hit[1]
    out = make()
    if len(_DERIVED) > 256:
        _DERIVED.clear()
    _DERIVED[(id(combos), what)] = (combos, out)
    return out


def _candidates(spec: ScaledModelSpec, gone: frozenset[str], floor: float) -> tuple[Combo, ...]:
    out: list[Combo] = []
    for v in spec.variants:
        if v.accuracy < floor:
            continue
        for p in spec.node_pools:
            if p.name in gone or p.max_replicas <= 0:
                continue
            prof = v.profile_for(p.accelerator)
            if prof is None:
                continue
            out.append(
                Combo(
                    variant=v.name,
                    pool=p.name,
                    accuracy=v.accuracy,
                    capacity_rps=capacity(prof, spec.slo.latency),
                    price_per_hour=replica_price_per_hour(p),
                    spot=p.is_spot,
                    pool_max=p.max_replicas,
                    profile=prof,
                )
            )
    return tuple(out)


def _ceil_div(load: float, cap: float) -> int:
    if load <= _EPS:
        return 0
    if cap <= _EPS:
        return 1 << 40
    return math.ceil(load / cap - 1e-9)


def _pool_choice(combos: Sequence[Combo], threshold: float) -> dict[str, Combo]:
    """Per pool, the most accurate variant whose capacity is >= threshold."""
    best: dict[str, Combo] = {}
    for c in combos:
        if c.capacity_rps + _EPS < threshold:
            continue
        cur = best.get(c.pool)
        if cur is None or (c.accuracy, c.capacity_rps) > (cur.accuracy, cur.capacity_rps):
            best[c.pool] = c
    return best


def _make_plan(alloc: dict[Key, int], by_key: dict[Key, Combo], weighted: bool = False) -> Plan:
    counts = tuple(sorted((k, n) for k, n in alloc.items() if n > 0))
    cost = sum(by_key[k].price_per_hour * n for k, n in counts)
    caps = [by_key[k].capacity_rps for k, _ in counts]
    od_caps = [by_key[k].capacity_rps for k, _ in counts if not by_key[k].spot]
    return Plan(
        counts=counts,
        cost_per_hour=cost,
        min_capacity_rps=min(caps) if caps else math.inf,
        od_min_capacity_rps=min(od_caps) if od_caps else math.inf,
        on_demand=sum(n for k, n in counts if not by_key[k].spot),
        weighted=weighted,
        capacity_sum_rps=sum(by_key[k].capacity_rps * n for k, n in counts),
    )


def _greedy(
    od_sorted: Sequence[Combo],
    all_sorted: Sequence[Combo],
    n_total: int,
    n_od: int,
) -> tuple[dict[Key, int], float] | None:
    """Cheapest N units with at least n_od on-demand; None if caps forbid it.

    ``od_sorted`` / ``all_sorted`` are the usable pools' combos sorted by price.
    Pools alike in price, capacity and capacity type share what is taken from them
    evenly (:func:`_alike`), at no cost."""
    alloc: dict[Key, int] = {}
    room: dict[str, int] = {}
    cost = 0.0
    need = n_od
    for group in _alike(od_sorted):
        if need <= 0:
            break
        takes = _fill_even([c.pool_max for c in group], need)
        for c, take in zip(group, takes, strict=True):
            if take > 0:
                alloc[c.key] = take
                cost += take * c.price_per_hour
                need -= take
                room[c.pool] = c.pool_max - take
    if need > 0:
        return None
    rest = n_total - n_od
    for group in _alike(all_sorted):
        if rest <= 0:
            break
        takes = _fill_even([room.get(c.pool, c.pool_max) for c in group], rest)
        for c, take in zip(group, takes, strict=True):
            if take > 0:
                alloc[c.key] = alloc.get(c.key, 0) + take
                cost += take * c.price_per_hour
                room[c.pool] = room.get(c.pool, c.pool_max) - take
                rest -= take
    if rest > 0:
        return None
    return alloc, cost


def _alike(combos: Sequence[Combo]) -> list[list[Combo]]:
    """``combos`` (sorted by :func:`_price_key`) in runs alike in price, capacity and
    capacity type: any split of a run's replicas costs and holds the same, so the
    planner spreads them (two spot pools alike -- say one per zone -- then lose half
    the fleet to a preemption instead of all of it)."""
    out: list[list[Combo]] = []
    for c in combos:
        last = out[-1][-1] if out else None
        if (last is not None and last.spot == c.spot
                and abs(last.price_per_hour - c.price_per_hour) <= 1e-12
                and abs(last.capacity_rps - c.capacity_rps) <= 1e-9):
            out[-1].append(c)
        else:
            out.append([c])
    return out


def _fill_even(rooms: Sequence[int], want: int) -> list[int]:
    """Up to ``want`` units over pools with ``rooms`` free, as evenly as the rooms
    allow; the units left after an even level go to the first pools with room.
    Each pool's share never shrinks as ``want`` grows (a plan grows by adding)."""
    total = sum(max(0, r) for r in rooms)
    if want >= total:
        return [max(0, r) for r in rooms]
    lo, hi = 0, max(rooms, default=0)
    while lo < hi:  # the highest level whose fill fits in want
        mid = (lo + hi + 1) // 2
        if sum(min(max(0, r), mid) for r in rooms) <= want:
            lo = mid
        else:
            hi = mid - 1
    takes = [min(max(0, r), lo) for r in rooms]
    left = want - sum(takes)
    for i, r in enumerate(rooms):
        if left <= 0:
            break
        if r > takes[i]:
            takes[i] += 1
            left -= 1
    return takes


def _price_key(c: Combo) -> tuple[float, float, bool]:
    return (c.price_per_hour, -c.capacity_rps, c.spot)


def _usable(combos: Sequence[Combo], spot: bool) -> list[tuple[float, list[Combo]]]:
    """Per threshold (ascending, then inf): the usable pools' combos sorted by price."""
    own = [c for c in combos if c.spot == spot and c.capacity_rps > 0]
    out: list[tuple[float, list[Combo]]] = []
    for k in sorted({c.capacity_rps for c in own}):
        out.append((k, sorted(_pool_choice(own, k).values(), key=_price_key)))
    out.append((math.inf, []))
    return out


@dataclass(frozen=True)
class _Pair:
    """One (on-demand threshold, spot threshold) pair with its usable pools."""

    ko: float
    kmin: float
    od_sorted: tuple[Combo, ...]
    all_sorted: tuple[Combo, ...]
    od_price: float
    cheapest: float


_PAIRS: dict[int, tuple[Sequence[Combo], tuple[_Pair, ...], dict[Key, Combo]]] = {}


def _pairs(combos: Sequence[Combo]) -> tuple[tuple[_Pair, ...], dict[Key, Combo]]:
    """Threshold pairs worth trying, cached per candidate tuple.

    For an on-demand threshold ko, every spot threshold >= ko gives the same
    replica count (the weakest replica is on-demand), so only the smallest such
    one (the most usable spot pools) can be optimal; spot thresholds below ko
    are all tried.
    """
    hit = _PAIRS.get(id(combos))
    if hit is not None and hit[0] is combos:
        return hit[1], hit[2]
    spot_levels = _usable(combos, True)
    od_levels = _usable(combos, False)
    pairs: list[_Pair] = []
    for ko, od_pools in od_levels:
        chosen = [lv for lv in spot_levels if lv[0] < ko]
        above = [lv for lv in spot_levels if lv[0] >= ko]
        if above:
            chosen.append(above[0])
        for ks, spot_pools in chosen:
            all_sorted = sorted([*spot_pools, *od_pools], key=_price_key)
            pairs.append(
                _Pair(
                    ko=ko,
                    kmin=min(ks, ko),
                    od_sorted=tuple(od_pools),
                    all_sorted=tuple(all_sorted),
                    od_price=od_pools[0].price_per_hour if od_pools else math.inf,
                    cheapest=all_sorted[0].price_per_hour if all_sorted else math.inf,
                )
            )
    by_key = {c.key: c for c in combos}
    if len(_PAIRS) > 256:
        _PAIRS.clear()
    _PAIRS[id(combos)] = (combos, tuple(pairs), by_key)
    return tuple(pairs), by_key


def _search(
    combos: Sequence[Combo], req: Request, respect_budget: bool, want_runner_up: bool
) -> tuple[Plan | None, Plan | None]:
    """Branch and bound over threshold pairs, cheapest lower bound first."""
    if req.weighted:
        return _search_weighted(combos, req, respect_budget, want_runner_up)
    pairs, by_key = _pairs(combos)
    budget = req.max_cost_per_hour if respect_budget else None
    entries: list[tuple[float, int, int, int, _Pair]] = []
    for i, pr in enumerate(pairs):
        if req.od_load_rps > _EPS and not pr.od_sorted:
            continue
        n_od = _ceil_div(req.od_load_rps, pr.ko) if pr.od_sorted else 0
        if pr.kmin == math.inf:
            if req.load_rps > _EPS or req.min_replicas > 0:
                continue
            n = 0
        else:
            n = max(req.min_replicas, _ceil_div(req.load_rps, pr.kmin), n_od)
        if n > req.max_replicas:
            continue
        lb = (n_od * pr.od_price if n_od else 0.0) + (n - n_od) * pr.cheapest if n else 0.0
        if budget is not None and lb > budget + 1e-9:
            continue
        entries.append((lb, i, n, n_od, pr))
    entries.sort(key=lambda e: (e[0], e[1]))
    found: list[tuple[float, dict[Key, int]]] = []
    best: tuple[float, dict[Key, int]] | None = None
    second = math.inf  # cheapest plan with another set of (variant, pool) than best
    for lb, _, n, n_od, pr in entries:
        bound = second if want_runner_up else (best[0] if best else math.inf)
        if lb > bound + 1e-12:
            break
        got = _greedy(pr.od_sorted, pr.all_sorted, n, n_od)
        if got is None:
            continue
        alloc, cost = got
        if budget is not None and cost > budget + 1e-9:
            continue
        found.append((cost, alloc))
        if (
            best is None
            or cost < best[0] - 1e-12
            or (abs(cost - best[0]) <= 1e-12 and _tiebreak(alloc, by_key)
                > _tiebreak(best[1], by_key))
        ):
            best = (cost, alloc)
        if want_runner_up:
            keys = _keyset(best[1])
            second = min((c for c, a in found if _keyset(a) != keys), default=math.inf)
    if best is None:
        return None, None
    plan = _make_plan(best[1], by_key)
    ru: Plan | None = None
    if want_runner_up:
        keys = _keyset(best[1])
        alts = [(c, a) for c, a in found if _keyset(a) != keys]
        if alts:
            _, a = min(alts, key=lambda x: x[0])
            ru = _make_plan(a, by_key)
    return plan, ru


def _search_weighted(
    combos: Sequence[Combo], req: Request, respect_budget: bool, want_runner_up: bool
) -> tuple[Plan | None, Plan | None]:
    by_key = {c.key: c for c in combos}
    alloc = weighted.solve(combos, req, respect_budget)
    if alloc is None:
        return None, None
    ru: Plan | None = None
    if want_runner_up:
        alt = weighted.runner_up(combos, req, alloc, respect_budget)
        ru = _make_plan(_spread(alt, combos), by_key, True) if alt is not None else None
    return _make_plan(_spread(alloc, combos), by_key, True), ru


def alike_key(c: Combo) -> tuple[float, float, bool]:
    """What makes pools alike for sharing replicas: price, capacity and capacity
    type (rounded, so equal prices and capacities parsed alike compare equal)."""
    return round(c.price_per_hour, 9), round(c.capacity_rps, 6), c.spot


def _spread(alloc: Mapping[Key, int], combos: Sequence[Combo]) -> dict[Key, int]:
    """``alloc`` with the replicas of each run of alike combos (same price, capacity,
    capacity type and accuracy, on pools ``alloc`` uses for nothing else) shared as
    :func:`_fill_even` shares them: the same cost and capacity sum (weighted
    routing), and one pool's preemption takes only its share."""
    out = {k: n for k, n in alloc.items() if n > 0}
    used_pools: dict[str, int] = {}
    for _v, p in out:
        used_pools[p] = used_pools.get(p, 0) + 1
    groups: dict[tuple[float, float, bool, float], list[Combo]] = {}
    for c in combos:
        if c.capacity_rps <= 0 or c.pool_max <= 0:
            continue
        mine = used_pools.get(c.pool, 0)
        # A pool the plan uses for another variant is not free to take a share.
        if mine > 1 or (mine == 1 and c.key not in out):
            continue
        sig = (*alike_key(c), round(c.accuracy, 9))
        groups.setdefault(sig, []).append(c)
    for group in groups.values():
        if len(group) < 2 or len({c.pool for c in group}) < len(group):
            continue
        total = sum(out.get(c.key, 0) for c in group)
        if total == 0:
            continue
        group.sort(key=lambda c: (c.pool, c.variant))
        for c, n in zip(group, _fill_even([c.pool_max for c in group], total), strict=True):
            if n > 0:
                out[c.key] = n
            else:
                out.pop(c.key, None)
    return out


def _keyset(alloc: dict[Key, int]) -> frozenset[Key]:
    return frozenset(k for k, n in alloc.items() if n > 0)


def solve(
    combos: Sequence[Combo], req: Request, respect_budget: bool = True
) -> Plan | None:
    """Cheapest plan meeting every constraint of ``req``; None if none exists."""
    return _search(combos, req, respect_budget, False)[0]


def solve_with_runner_up(
    combos: Sequence[Combo], req: Request, respect_budget: bool = True
) -> tuple[Plan | None, Plan | None]:
    """The cheapest plan and the cheapest one using another set of (variant, pool)."""
    return _search(combos, req, respect_budget, True)


def _tiebreak(alloc: dict[Key, int], by_key: dict[Key, Combo]) -> tuple[float, float]:
    """Among equal-cost plans prefer more slack, then more accuracy."""
    used = [by_key[k] for k, n in alloc.items() if n > 0]
    n = sum(alloc.values())
    slack = n * min((c.capacity_rps for c in used), default=0.0)
    acc = min((c.accuracy for c in used), default=0.0)
    return (slack, acc)


def best_effort(
    combos: Sequence[Combo], req: Request, respect_budget: bool
) -> Plan | None:
    """When nothing meets the SLO: the plan that holds the most load (then cheapest)."""
    by_key = {c.key: c for c in combos}
    if req.weighted:
        got = weighted.best_effort(combos, req, respect_budget)
        return _make_plan(got, by_key, True) if got is not None else None
    best_alloc: dict[Key, int] | None = None
    best_score = (-1.0, 0.0)
    for k in sorted({c.capacity_rps for c in combos if c.capacity_rps > 0}):
        pools = sorted(
            _pool_choice(combos, k).values(), key=lambda c: (c.price_per_hour, -c.capacity_rps)
        )
        alloc: dict[Key, int] = {}
        n = 0
        cost = 0.0
        for c in pools:
            for _ in range(c.pool_max):
                if n >= req.max_replicas:
                    break
                if (
                    respect_budget
                    and req.max_cost_per_hour is not None
                    and n >= max(1, req.min_replicas)
                    and cost + c.price_per_hour > req.max_cost_per_hour + 1e-9
                ):
                    break
                alloc[c.key] = alloc.get(c.key, 0) + 1
                n += 1
                cost += c.price_per_hour
        if n == 0:
            continue
        kmin = min(by_key[key].capacity_rps for key in alloc)
        score = (n * kmin, -cost)
        if score > best_score:
            best_score = score
            best_alloc = alloc
    return _make_plan(best_alloc, by_key) if best_alloc is not None else None


def predicted_latency_ms(
    plan: Plan, combos: Sequence[Combo], load_rps: float, percentile: float
) -> float:
    """Worst predicted percentile over the plan's replicas at ``load_rps`` (even split,
    or capacity-weighted for a weighted plan)."""
    if plan.total == 0:
        return math.inf if load_rps > 0 else 0.0
    by_key = {c.key: c for c in combos}
    if plan.weighted:
        shares = weighted.share_load(
            plan.counts, {k: by_key[k].capacity_rps for k, _ in plan.counts}, load_rps
        )
        return max(
            predict_latency_ms(by_key[k].profile, shares[k], 1, percentile)
            for k, _ in plan.counts
        )
    per = load_rps / plan.total
    return max(
        predict_latency_ms(by_key[k].profile, per, 1, percentile) for k, _ in plan.counts
    )


def runner_up(combos: Sequence[Combo], req: Request, chosen: Plan) -> Plan | None:
    """Cheapest plan whose set of (variant, pool) differs from ``chosen``'s."""
    best, ru = solve_with_runner_up(combos, req)
    if best is not None and best.keys() != chosen.keys():
        return best
    return ru


def describe(plan: Plan | None) -> str:
    if plan is None:
        return "none"
    if plan.total == 0:
        return "0 replicas"
    return " + ".join(f"{n}x {v}@{p}" for (v, p), n in plan.counts)


@dataclass(frozen=True)
class Outcome:
    """A planning result with its explanation."""

    plan: Plan
    feasible: bool  # meets the SLO at the planning load
    within_budget: bool
    binding: str
    runner_up: Plan | None
    predicted_latency_ms: float
    load_rps: float


def binding_constraint(
    spec: ScaledModelSpec, combos: Sequence[Combo], req: Request, plan: Plan
) -> str:
    """Name the constraint that shapes the chosen (SLO-feasible) plan.

    Each check relaxes one constraint and re-solves: if that makes the plan
    cheaper, the constraint binds. Checked in order: minReplicas, spot
    protection, a pool's maxReplicas, global maxReplicas, the accuracy floor;
    otherwise the latency SLO itself sets the replica count.
    """
    if plan.total > 0 and plan.total == req.min_replicas and req.weighted:
        fewer = solve(combos, replace(req, min_replicas=0))
        if fewer is not None and fewer.total < req.min_replicas:
            return "minReplicas"
    elif plan.total > 0 and plan.total == req.min_replicas:
        need = max(
            _ceil_div(req.load_rps, plan.min_capacity_rps),
            _ceil_div(req.od_load_rps, plan.od_min_capacity_rps),
        )
        if need < req.min_replicas:
            return "minReplicas"
    if req.od_load_rps > _EPS:
        relaxed = solve(combos, replace(req, od_load_rps=0.0))
        if relaxed is not None and relaxed.cost_per_hour < plan.cost_per_hour - 1e-9:
            return "spotProtection"
    uncapped = _derived(
        combos,
        f"uncapped{req.max_replicas}",
        lambda: tuple(replace(c, pool_max=max(c.pool_max, req.max_replicas)) for c in combos),
    )
    free = solve(uncapped, req)
    if free is not None and free.cost_per_hour < plan.cost_per_hour - 1e-9:
        full = sorted(
            {p for (_, p), n in plan.counts if any(c.pool == p and n >= c.pool_max
                                                  for c in combos)}
        )
        return f"nodePools[{','.join(full) or '*'}].maxReplicas"
    if plan.total >= req.max_replicas:
        return "maxReplicas"
    pools = {c.pool for c in combos}
    every = _derived(
        combos,
        "every",
        lambda: tuple(c for c in candidates(spec, min_accuracy=0.0) if c.pool in pools),
    )
    if len(every) > len(combos):
        alt = solve(every, req)
        if alt is not None and alt.cost_per_hour < plan.cost_per_hour - 1e-9:
            return "minAccuracy"
    return "latency"

"""Planning under weighted routing (``spec.routing.mode: gateway``), pure.

With Gateway API routes whose backendRef weights are proportional to each
placement's capacity, every replica runs at the same fraction of its own
capacity, so a mix holds the SLO at load L iff

    sum_k n_k * capacity_k >= L

(instead of N x the slowest replica's capacity under one evenly splitting
Service, see :mod:`.planner`). The cheapest mix is a small covering integer
program: minimise sum price_p * n_p subject to that sum, spot protection (the
same sum over on-demand pools >= L_od), minReplicas <= sum n_p <= maxReplicas,
0 <= n_p <= the pool's maxReplicas, and optionally the budget.

All variants on one pool cost the same per replica and share its maxReplicas, so
some optimum uses, per pool, only the variant with the most capacity: the search
runs over pools. It is an exact depth-first branch and bound (pools in order of
price per unit of capacity; the bound is the fractional cover of what is still
missing), typically a few hundred nodes; a node limit keeps pathological inputs
bounded (then the best plan found is returned). Among plans of equal cost the
one with more capacity wins; then, per pool, the most accurate variant that
still holds every constraint replaces the fastest one (accuracy when it is free).
``tests/unit/test_routing.py`` checks optimality against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonscale.core.planner import Combo, Request

Key = tuple[str, str]
NODE_LIMIT = 200_000
_EPS = 1e-9


@dataclass(frozen=True)
class _Item:
    pool: str
    combo: Combo  # the pool's fastest variant
    cap: float
    price: float
    od: bool
    m: int


def _items(combos: Sequence[Combo], exclude: Iterable[str] = ()) -> list[_Item]:
    gone = set(exclude)
    best: dict[str, Combo] = {}
    for c in combos:
        if c.pool in gone or c.capacity_rps <= 0 or c.pool_max <= 0:
            continue
        cur = best.get(c.pool)
        if cur is None or (c.capacity_rps, c.accuracy, c.variant) > (
            cur.capacity_rps, cur.accuracy, cur.variant
        ):
            best[c.pool] = c
    items = [
        _Item(p, c, c.capacity_rps, c.price_per_hour, not c.spot, c.pool_max)
        for p, c in best.items()
    ]
    items.sort(key=lambda it: (it.price / it.cap, -it.cap, it.pool))
    return items


def _ceil(x: float) -> int:
    return 0 if x <= _EPS else math.ceil(x - 1e-9)


def _search(items: Sequence[_Item], req: Request, budget: float | None) -> list[int] | None:
    n = len(items)
    big_l, big_od = max(0.0, req.load_rps), max(0.0, req.od_load_rps)
    nmin, nmax = max(0, req.min_replicas), req.max_replicas
    # Suffix minima / sums for bounds.
    eff = [math.inf] * (n + 1)
    eff_od = [math.inf] * (n + 1)
    price_min = [math.inf] * (n + 1)
    cap_sum = [0.0] * (n + 1)
    od_sum = [0.0] * (n + 1)
    m_sum = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        it = items[i]
        eff[i] = min(eff[i + 1], it.price / it.cap)
        eff_od[i] = min(eff_od[i + 1], it.price / it.cap) if it.od else eff_od[i + 1]
        price_min[i] = min(price_min[i + 1], it.price)
        cap_sum[i] = cap_sum[i + 1] + it.cap * it.m
        od_sum[i] = od_sum[i + 1] + (it.cap * it.m if it.od else 0.0)
        m_sum[i] = m_sum[i + 1] + it.m
    best: list[int] | None = None
    best_cost, best_cap = math.inf, -1.0
    x = [0] * n
    nodes = 0

    def bound(i: int, cost: float, cap: float, od: float, cnt: int) -> float:
        need_l = big_l - cap
        need_od = big_od - od
        need_n = nmin - cnt
        lb = cost
        parts = [0.0]
        if need_l > _EPS:
            parts.append(need_l * eff[i])
        if need_od > _EPS:
            parts.append(need_od * eff_od[i])
        if need_n > 0:
            parts.append(need_n * price_min[i])
        return lb + max(parts)

    def dfs(i: int, cost: float, cap: float, od: float, cnt: int) -> None:
        nonlocal best, best_cost, best_cap, nodes
        nodes += 1
        if cap + _EPS >= big_l and od + _EPS >= big_od and cnt >= nmin:
            if cost < best_cost - 1e-12 or (abs(cost - best_cost) <= 1e-12 and cap > best_cap):
                best, best_cost, best_cap = list(x[:i]) + [0] * (n - i), cost, cap
            return
        if i >= n or nodes > NODE_LIMIT:
            return
        if (cap + cap_sum[i] + _EPS < big_l or od + od_sum[i] + _EPS < big_od
                or cnt + m_sum[i] < nmin):
            return
        lb = bound(i, cost, cap, od, cnt)
        if lb > best_cost + 1e-12 or (budget is not None and lb > budget + 1e-9):
            return
        it = items[i]
        room = min(it.m, nmax - cnt)
        hi = max(_ceil((big_l - cap) / it.cap), nmin - cnt,
                 _ceil((big_od - od) / it.cap) if it.od else 0)
        for k in range(min(room, hi), -1, -1):
            c2 = cost + k * it.price
            if budget is not None and c2 > budget + 1e-9:
                continue
            x[i] = k
            dfs(i + 1, c2, cap + k * it.cap, od + (k * it.cap if it.od else 0.0), cnt + k)
        x[i] = 0

    if nmax < nmin:
        return None
    dfs(0, 0.0, 0.0, 0.0, 0)
    return best


def _with_accuracy(
    combos: Sequence[Combo], items: Sequence[_Item], counts: Sequence[int], req: Request
) -> dict[Key, int]:
    """Per used pool, the most accurate variant that keeps every constraint."""
    chosen = {it.pool: it.combo for it, k in zip(items, counts, strict=True) if k > 0}
    amount = {it.pool: k for it, k in zip(items, counts, strict=True) if k > 0}

    def totals() -> tuple[float, float]:
        cap = sum(chosen[p].capacity_rps * amount[p] for p in chosen)
        od = sum(chosen[p].capacity_rps * amount[p] for p in chosen if not chosen[p].spot)
        return cap, od

    for pool in sorted(chosen, key=lambda p: (-amount[p], p)):
        alts = sorted(
            (c for c in combos if c.pool == pool and c.capacity_rps > 0),
            key=lambda c: (-c.accuracy, -c.capacity_rps, c.variant),
        )
        keep = chosen[pool]
        for alt in alts:
            if alt.accuracy <= keep.accuracy:
                break
            chosen[pool] = alt
            cap, od = totals()
            if cap + _EPS >= req.load_rps and od + _EPS >= req.od_load_rps:
                break
            chosen[pool] = keep
    return {chosen[p].key: amount[p] for p in chosen}


def solve(
    combos: Sequence[Combo], req: Request, respect_budget: bool = True,
    exclude_pools: Iterable[str] = (),
) -> dict[Key, int] | None:
    """Cheapest allocation holding ``req`` under weighted routing; None if none."""
    items = _items(combos, exclude_pools)
    budget = req.max_cost_per_hour if respect_budget else None
    counts = _search(items, req, budget)
    if counts is None:
        return None
    return _with_accuracy(combos, items, counts, req)


def runner_up(
    combos: Sequence[Combo], req: Request, best: Mapping[Key, int], respect_budget: bool = True
) -> dict[Key, int] | None:
    """Cheapest allocation without one of ``best``'s pools (so another set of keys)."""
    found: list[tuple[float, list[tuple[Key, int]], dict[Key, int]]] = []
    price = {c.key: c.price_per_hour for c in combos}
    for pool in sorted({p for (_, p), n in best.items() if n > 0}):
        alloc = solve(combos, req, respect_budget, exclude_pools=(pool,))
        if alloc is not None:
            found.append((sum(price[k] * n for k, n in alloc.items()), sorted(alloc.items()),
                          alloc))
    if not found:
        return None
    return min(found, key=lambda f: (f[0], f[1]))[2]


def best_effort(
    combos: Sequence[Combo], req: Request, respect_budget: bool
) -> dict[Key, int] | None:
    """When nothing meets the SLO: as much capacity as the limits (and budget) allow.

    Without a budget this is exact (the highest-capacity replicas first, up to
    maxReplicas); with one, pools are filled in order of capacity per dollar,
    never below max(1, minReplicas) replicas."""
    items = _items(combos)
    if not items:
        return None
    budget = req.max_cost_per_hour if respect_budget else None
    if budget is None:
        order = sorted(items, key=lambda it: (-it.cap, it.price, it.pool))
    else:
        order = sorted(items, key=lambda it: (-(it.cap / max(it.price, 1e-12)), it.pool))
    floor = max(1, req.min_replicas)
    alloc: dict[Key, int] = {}
    n, cost = 0, 0.0
    for it in order:
        for _ in range(it.m):
            if n >= req.max_replicas:
                break
            if budget is not None and n >= floor and cost + it.price > budget + 1e-9:
                break
            alloc[it.combo.key] = alloc.get(it.combo.key, 0) + 1
            n += 1
            cost += it.price
    return alloc or None


def share_load(
    counts: Iterable[tuple[Key, int]], capacity: Mapping[Key, float], load_rps: float
) -> dict[Key, float]:
    """Per-replica rate of each placement when weights follow capacity."""
    items = [(k, n) for k, n in counts if n > 0]
    total = sum(capacity[k] * n for k, n in items)
    if total <= 0:
        n_all = sum(n for _, n in items)
        return {k: load_rps / n_all for k, _ in items} if n_all else {}
    return {k: load_rps * capacity[k] / total for k, _ in items}

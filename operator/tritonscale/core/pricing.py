"""The one price function: what a replica, and a mix of replicas, costs per hour.

``nodePools[].pricePerHour`` is the price of one GPU of the pool per hour (the
instance's price divided by its GPUs, e.g. an 8-GPU p4d.24xlarge at $32.77/h is
$4.10 per GPU). A replica holds ``gpusPerReplica`` GPUs, so it costs
``pricePerHour x gpusPerReplica``; a CPU-only pool (``gpusPerReplica: 0``) prices
one replica at ``pricePerHour``. The planner, ``decide``, the status, the
operator's metrics and the simulator's bill all use these functions.

Pure code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tritonscale.core.spec import NodePool, ScaledModelSpec
from tritonscale.core.types import Placement


def replica_price_per_hour(pool: NodePool) -> float:
    """What one replica on ``pool`` costs per hour."""
    return pool.price_per_hour * max(pool.gpus_per_replica, 1)


def mix_cost_per_hour(spec: ScaledModelSpec, mix: Mapping[tuple[str, str], int]) -> float:
    """Cost per hour of ``{(variant, pool): replicas}``; pools not in the spec cost 0."""
    prices = {p.name: replica_price_per_hour(p) for p in spec.node_pools}
    return sum(prices.get(pool, 0.0) * n for (_, pool), n in mix.items() if n > 0)


def cost_per_hour(spec: ScaledModelSpec, placements: Iterable[Placement]) -> float:
    """Cost per hour of the given placements (see :func:`mix_cost_per_hour`)."""
    mix: dict[tuple[str, str], int] = {}
    for p in placements:
        mix[p.key] = mix.get(p.key, 0) + p.replicas
    return mix_cost_per_hour(spec, mix)

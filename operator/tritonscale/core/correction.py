"""Online profile correction: learn how far reality is from the profile.

Profiles are measured once (or copied from published figures); the cluster they
run on differs (other pods on the node, a different driver, a slower storage
path, a mis-measured profile). Each step, for every (variant, pool) with enough
traffic, the observed latency at the SLO percentile is compared with what the
performance model predicts for the load that placement actually received. The
ratio feeds a bounded, slowly moving correction factor per (variant, pool):

* updated in log space with an EWMA (``alpha``), so a single noisy window
  cannot swing it and over- and under-prediction are treated symmetrically;
* clamped to ``[min_factor, max_factor]`` so a broken signal can neither make
  the planner believe a GPU is free nor that it is useless;
* only updated when the placement is not saturated by our own prediction
  (``max_predicted_util``): near saturation the latency is dominated by queueing
  and the ratio says nothing about service time.

The factor scales compute latency in the profile the planner sees. Profiles are
keyed by accelerator, so two pools with the same accelerator (spot and
on-demand T4, say) share the more pessimistic of their factors.

State is a small JSON-able dict ``{"variant/pool": factor}`` that the operator
persists in status, so a restart keeps what was learnt. Pure code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from tritonscale.core.spec import BatchPoint, Profile, ScaledModelSpec, Variant
from tritonscale.core.types import Observation


@dataclass(frozen=True)
class CorrectionSettings:
    alpha: float = 0.2
    min_factor: float = 0.5
    max_factor: float = 3.0
    # Ignore placements receiving less than this many requests/second in total.
    min_rps: float = 1.0
    # Ignore samples where the uncorrected model predicts utilisation above this.
    max_predicted_util: float = 0.9


def key(variant: str, pool: str) -> str:
    return f"{variant}/{pool}"


def update_factors(
    factors: Mapping[str, float],
    obs: Observation,
    predict: Callable[[str, str, float, int], tuple[float, float] | None],
    settings: CorrectionSettings = CorrectionSettings(),
) -> dict[str, float]:
    """Return updated factors after one observation.

    ``predict(variant, pool, rps, ready_replicas)`` returns the uncorrected
    model's ``(latency_ms_at_slo_percentile, utilisation)`` for that load, or
    ``None`` when the model cannot say (no profile, overload).
    """
    out = {k: float(v) for k, v in factors.items()}
    ready = {p.key: p.ready for p in obs.current}
    for (variant, pool), lat in obs.per_placement_latency_ms.items():
        rps = obs.per_placement_rps.get((variant, pool))
        n = ready.get((variant, pool), 0)
        if rps is None or lat is None or n <= 0 or rps < settings.min_rps:
            continue
        if not (math.isfinite(lat) and math.isfinite(rps)) or lat <= 0:
            continue
        pred = predict(variant, pool, rps, n)
        if pred is None:
            continue
        pred_ms, util = pred
        if not math.isfinite(pred_ms) or pred_ms <= 0 or util > settings.max_predicted_util:
            continue
        k = key(variant, pool)
        old = out.get(k, 1.0)
        ratio = min(max(lat / pred_ms, settings.min_factor), settings.max_factor)
        new = math.exp((1 - settings.alpha) * math.log(old) + settings.alpha * math.log(ratio))
        out[k] = min(max(new, settings.min_factor), settings.max_factor)
    return out


def _scale(profile: Profile, factor: float) -> Profile:
    return replace(
        profile,
        batches=tuple(BatchPoint(b.size, b.latency_ms * factor) for b in profile.batches),
    )


def corrected_spec(spec: ScaledModelSpec, factors: Mapping[str, float]) -> ScaledModelSpec:
    """The spec with each (variant, accelerator) profile scaled by its factor."""
    if not factors:
        return spec
    per_acc: dict[tuple[str, str], float] = {}
    for pool in spec.node_pools:
        for v in spec.variants:
            f = factors.get(key(v.name, pool.name))
            if f is None:
                continue
            k = (v.name, pool.accelerator)
            per_acc[k] = max(per_acc.get(k, 0.0), float(f))
    if not per_acc:
        return spec
    variants: list[Variant] = []
    for v in spec.variants:
        profiles = tuple(
            _scale(p, per_acc[(v.name, p.accelerator)])
            if (v.name, p.accelerator) in per_acc
            else p
            for p in v.profiles
        )
        variants.append(replace(v, profiles=profiles))
    return replace(spec, variants=tuple(variants))

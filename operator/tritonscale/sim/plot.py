"""Draw a replay: load, replicas per (variant, pool), observed percentile, cost.

matplotlib is imported lazily (Agg backend) so the simulator itself never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tritonscale.core.spec import ScaledModelSpec


def _window_percentiles(run: Any, pct: float, window_s: float) -> tuple[Any, Any]:
    lat = (run.done - run.arrivals) * 1000.0
    idx = (run.arrivals // window_s).astype(np.int64)
    if len(idx) == 0:
        return np.array([]), np.array([])
    bounds = np.searchsorted(idx, np.arange(idx[-1] + 2), "left")
    xs, ys = [], []
    for w in range(len(bounds) - 1):
        a, b = bounds[w], bounds[w + 1]
        if b > a:
            seg = lat[a:b]
            k = max(0, int(np.ceil(pct / 100.0 * len(seg))) - 1)
            xs.append((w + 0.5) * window_s / 60.0)
            ys.append(float(np.partition(seg, k)[k]))
    return np.array(xs), np.array(ys)


def plot_runs(spec: ScaledModelSpec, results: Sequence[Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slo = spec.slo.latency
    n = len(results)
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax_load, ax_rep, ax_lat, ax_cost = axes
    first = results[0].run
    ax_load.plot([s.t / 60 for s in first.steps], [s.rps for s in first.steps], lw=0.8)
    ax_load.set_ylabel("load (req/s)")
    ax_load.set_title(f"{spec.model.name}: {n} policies, SLO p{slo.percentile:g} <= "
                      f"{slo.target_ms:g} ms")
    styles = ["-", "--", ":", "-."]
    for i, res in enumerate(results):
        name = res.summary["policy"]
        color = f"C{i}"
        steps = res.run.steps
        t = [s.t / 60 for s in steps]
        keys = sorted({k for s in steps for k in s.desired})
        for j, k in enumerate(keys):
            ax_rep.step(t, [s.desired.get(k, 0) for s in steps], where="post", lw=1.0,
                        color=color, ls=styles[j % len(styles)],
                        label=f"{name}: {k[0]}@{k[1]}")
        xs, ys = _window_percentiles(res.run, slo.percentile, 60.0)
        ax_lat.plot(xs, np.minimum(ys, slo.target_ms * 10), marker=".", lw=0.8, color=color,
                    label=name)
        ax_cost.step(t, [s.cost_per_hour for s in steps], where="post", lw=0.9, color=color,
                     label=f"{name} (${res.summary['mean_cost_per_hour']:.2f}/h mean)")
    for tp, pool in first.preemptions:
        for ax in axes:
            ax.axvline(tp / 60, color="r", lw=0.6, alpha=0.5)
        ax_rep.annotate(f"preempt {pool}", (tp / 60, 0), fontsize=6, color="r", rotation=90)
    ax_rep.set_ylabel("replicas")
    ax_rep.legend(fontsize=6, ncol=3)
    ax_lat.axhline(slo.target_ms, color="k", ls="--", lw=0.8, label="target")
    ax_lat.set_ylabel(f"p{slo.percentile:g} per minute (ms)")
    ax_lat.set_yscale("log")
    ax_lat.legend(fontsize=7, ncol=3)
    ax_cost.set_ylabel("cost ($/h)")
    ax_cost.set_xlabel("time (min)")
    ax_cost.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)

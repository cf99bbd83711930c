"""One price function: pricePerHour is per GPU, a replica costs it x gpusPerReplica.

With ``gpusPerReplica: 2`` the decision, ``status.costPerHour``, the operator's
metric, the planner and the simulator's bill agree (they once showed 0.526 in
status against 1.052 in the decision and the metric).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tests.harness.fakes import FakeKube, load_example

from tritonscale.adapters.metrics import OperatorMetrics
from tritonscale.core import planner as pl
from tritonscale.core.pricing import cost_per_hour, mix_cost_per_hour, replica_price_per_hour
from tritonscale.core.spec import parse_manifest
from tritonscale.handlers.reconcile import Reconciler
from tritonscale.handlers.telemetry import MetricsListener
from tritonscale.sim.engine import SimConfig, Simulator

NS, NAME, UID = "ml", "resnet50", "uid-1"


def _doc(gpus: int) -> dict[str, Any]:
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace=NS, uid=UID, generation=1)
    for pool in doc["spec"]["nodePools"]:
        pool["gpusPerReplica"] = gpus
    doc["spec"]["slo"].pop("maxCostPerHour", None)
    return doc


def test_replica_price_is_gpu_price_times_gpus() -> None:
    spec = parse_manifest(_doc(2))[2]
    for pool in spec.node_pools:
        assert replica_price_per_hour(pool) == pytest.approx(2 * pool.price_per_hour)
    cpu = parse_manifest(_doc(0))[2]
    for pool in cpu.node_pools:  # CPU-only pools: pricePerHour per replica
        assert replica_price_per_hour(pool) == pytest.approx(pool.price_per_hour)
    for c in pl.candidates(spec):
        assert c.price_per_hour == pytest.approx(replica_price_per_hour(spec.pool(c.pool)))


def test_two_gpus_per_replica_agree_across_decision_status_metric_and_simulator() -> None:
    kube = FakeKube()
    kube.add_scaledmodel(_doc(2))
    metrics = OperatorMetrics(CollectorRegistry())
    r = Reconciler(kube=kube, clock=lambda: 1_700_000_000.0, listeners=[MetricsListener(metrics)])
    out = r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, NAME)]))
    d = out.decision
    assert d is not None and d.placements
    spec = parse_manifest(_doc(2))[2]
    gpu_prices = {p.name: p.price_per_hour for p in spec.node_pools}
    expected = sum(2 * gpu_prices[p.pool] * p.replicas for p in d.placements)
    assert d.cost_per_hour == pytest.approx(expected)
    assert cost_per_hour(spec, d.placements) == pytest.approx(expected)
    status = kube.scaledmodels[(NS, NAME)]["status"]
    assert status["costPerHour"] == pytest.approx(expected, abs=1e-4)
    assert status["lastDecision"]["costPerHour"] == pytest.approx(expected, abs=1e-4)
    assert status["predicted"]["costPerHour"] == pytest.approx(expected, abs=1e-4)
    metric = metrics.registry.get_sample_value(
        "tritonscale_cost_per_hour_dollars", {"namespace": NS, "scaledmodel": NAME})
    assert metric == pytest.approx(expected)
    # The simulator bills the same replicas at the same rate.
    arrivals = np.linspace(0.0, 600.0, 6001)
    sim = Simulator(spec, arrivals, SimConfig(warm_start=True))

    class Fixed:
        name = "fixed"
        interval_s = 60.0

        def initial(self, view: Any) -> dict[tuple[str, str], int]:
            return dict(d.replicas())

        def step(self, view: Any) -> dict[tuple[str, str], int]:
            return dict(d.replicas())

    run = sim.run(Fixed())
    assert run.steps[0].cost_per_hour == pytest.approx(expected)
    assert run.cost_usd == pytest.approx(expected * run.duration_s / 3600.0, rel=1e-3)
    assert mix_cost_per_hour(spec, d.replicas()) == pytest.approx(expected)

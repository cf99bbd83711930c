"""Weighted routing: spec.routing, per-placement Services and Gateway API routes,
weights, make-before-break on weights, and the weighted planner (against brute force)."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from tests.harness.fakes import load_example

from tritonscale.commands.validate import validate_document
from tritonscale.core import planner as pl
from tritonscale.core import routing as rt
from tritonscale.core.autoscale import plan_once
from tritonscale.core.render import Owner, get_deployment
from tritonscale.core.spec import ScaledModelSpec, SpecError, parse_manifest
from tritonscale.core.types import Placement, PlacementState

SpecFactory = Callable[..., ScaledModelSpec]
OWNER = Owner("bert", "ml", "uid-1")


def _doc(routing: Any) -> dict[str, Any]:
    doc = copy.deepcopy(load_example("bert.yaml"))
    doc["spec"]["routing"] = routing
    return doc


def _spec(routing: Any) -> ScaledModelSpec:
    return parse_manifest(_doc(routing))[2]


def _paths(routing: Any) -> set[str]:
    with pytest.raises(SpecError) as ei:
        parse_manifest(_doc(routing))
    return {e.path for e in ei.value.errors}


# ----------------------------------------------------------------------- spec


def test_default_is_service_mode() -> None:
    spec = parse_manifest(load_example("bert.yaml"))[2]
    assert spec.routing.mode == "service" and not spec.routing.weighted
    assert spec.routing.parent_refs == ()


def test_gateway_mode_parses_parent_refs() -> None:
    spec = _spec({"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "http",
                                  "port": 80}], "protocols": ["grpc", "http"]})
    assert spec.routing.mode == "gateway"  # implied by parentRefs
    assert spec.routing.protocols == ("grpc", "http")
    ref = spec.routing.parent_refs[0]
    assert ref.to_k8s() == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "name": "gw", "namespace": "infra", "sectionName": "http",
                            "port": 80}


@pytest.mark.parametrize(("routing", "path"), [
    ({"mode": "gateway"}, "spec.routing.parentRefs"),
    ({"mode": "service", "parentRefs": [{"name": "gw"}]}, "spec.routing.parentRefs"),
    ({"mode": "weighted"}, "spec.routing.mode"),
    ({"parentRefs": []}, "spec.routing.parentRefs"),
    ({"parentRefs": [{"name": "GW"}]}, "spec.routing.parentRefs[0].name"),
    ({"parentRefs": [{"name": "gw;rm -rf"}]}, "spec.routing.parentRefs[0].name"),
    ({"parentRefs": [{"name": "a" * 254}]}, "spec.routing.parentRefs[0].name"),
    ({"parentRefs": [{"name": ""}]}, "spec.routing.parentRefs[0].name"),
    ({"parentRefs": [{"namespace": "x"}]}, "spec.routing.parentRefs[0].name"),
    ({"parentRefs": [{"name": "gw", "namespace": "Infra"}]},
     "spec.routing.parentRefs[0].namespace"),
    ({"parentRefs": [{"name": "gw", "namespace": "a" * 64}]},
     "spec.routing.parentRefs[0].namespace"),
    ({"parentRefs": [{"name": "gw", "sectionName": "_http"}]},
     "spec.routing.parentRefs[0].sectionName"),
    ({"parentRefs": [{"name": "gw", "port": 0}]}, "spec.routing.parentRefs[0].port"),
    ({"parentRefs": [{"name": "gw", "port": 70000}]}, "spec.routing.parentRefs[0].port"),
    ({"parentRefs": [{"name": "gw", "port": "80"}]}, "spec.routing.parentRefs[0].port"),
    ({"parentRefs": [{"name": "gw", "kind": "Service"}]}, "spec.routing.parentRefs[0].kind"),
    ({"parentRefs": [{"name": "gw"}, {"name": "gw"}]}, "spec.routing.parentRefs[1]"),
    ({"parentRefs": [{"name": f"g{i}"} for i in range(9)]}, "spec.routing.parentRefs"),
    ({"parentRefs": [{"name": "gw"}], "protocols": ["tcp"]}, "spec.routing.protocols[0]"),
    ({"parentRefs": [{"name": "gw"}], "protocols": ["http", "http"]},
     "spec.routing.protocols[1]"),
    ({"parentRefs": [{"name": "gw"}], "protocols": []}, "spec.routing.protocols"),
    ("gateway", "spec.routing"),
])
def test_bad_routing_names_the_field(routing: Any, path: str) -> None:
    assert path in _paths(routing)


@pytest.mark.parametrize("routing", [
    {"parentRefs": [{"name": "GW"}]},
    {"parentRefs": [{"name": "gw", "port": 0}]},
    {"parentRefs": [{"name": "gw", "namespace": "a" * 64}]},
    {"mode": "gateway"},
    {"parentRefs": [{"name": "gw"}], "protocols": ["tcp"]},
])
def test_offline_validate_rejects_bad_routing(routing: Any) -> None:
    errs = validate_document(_doc(routing))
    assert any(e.path.startswith("spec.routing") for e in errs), errs


def test_offline_validate_accepts_gateway_mode() -> None:
    assert validate_document(_doc({"mode": "gateway", "protocols": ["http", "grpc"],
                                   "parentRefs": [{"name": "gw", "port": 80}]})) == []


# ----------------------------------------------------------------------- weights


def _gw_spec() -> ScaledModelSpec:
    return _spec({"parentRefs": [{"name": "gw"}], "protocols": ["http", "grpc"]})


def test_weights_follow_ready_capacity() -> None:
    spec = _gw_spec()
    cap_t4 = rt.replica_capacity(spec, ("distil-int8", "t4-spot"))
    cap_l4 = rt.replica_capacity(spec, ("distil-int8", "l4-ondemand"))
    assert cap_t4 and cap_l4 and cap_l4 > cap_t4
    states = [PlacementState("distil-int8", "t4-spot", 3, 3),
              PlacementState("distil-int8", "l4-ondemand", 2, 2)]
    w = rt.route_weights(spec, states)
    assert sum(w.values()) == rt.WEIGHT_TOTAL
    share = w[("distil-int8", "l4-ondemand")] / rt.WEIGHT_TOTAL
    assert share == pytest.approx(2 * cap_l4 / (2 * cap_l4 + 3 * cap_t4), abs=1e-3)


def test_new_placement_gets_weight_only_once_ready() -> None:
    spec = _gw_spec()
    states = [PlacementState("distil-int8", "t4-spot", 2, 2),
              PlacementState("distil-int8", "l4-ondemand", 2, 0)]
    w = rt.route_weights(spec, states)
    assert w == {("distil-int8", "t4-spot"): rt.WEIGHT_TOTAL, ("distil-int8", "l4-ondemand"): 0}
    states[1] = PlacementState("distil-int8", "l4-ondemand", 2, 1)
    w = rt.route_weights(spec, states)
    assert 0 < w[("distil-int8", "l4-ondemand")] < rt.WEIGHT_TOTAL


def test_leaving_placements_get_zero_and_nothing_ready_falls_back_to_plan() -> None:
    spec = _gw_spec()
    states = [PlacementState("distil-int8", "t4-spot", 2, 2),
              PlacementState("large-int8", "t4-spot", 1, 1)]
    w = rt.route_weights(spec, states, leaving=[("large-int8", "t4-spot")])
    assert w[("large-int8", "t4-spot")] == 0 and sum(w.values()) == rt.WEIGHT_TOTAL
    cold = [PlacementState("distil-int8", "t4-spot", 2, 0)]
    assert rt.route_weights(spec, cold) == {("distil-int8", "t4-spot"): rt.WEIGHT_TOTAL}


def test_integer_shares_sum_and_minimum() -> None:
    raw = {("a", "x"): 1e-6, ("b", "x"): 1.0, ("c", "x"): 0.0}
    got = rt._integer_shares(raw, 1000)
    assert got[("a", "x")] >= 1 and got[("c", "x")] == 0 and sum(got.values()) == 1000
    rng = random.Random(3)
    for _ in range(200):
        r = {(str(i), "p"): rng.choice([0.0, rng.random(), rng.random() * 1e4])
             for i in range(rng.randint(1, 8))}
        got = rt._integer_shares(r, 1000)
        assert sum(got.values()) == (1000 if any(v > 0 for v in r.values()) else 0)
        assert all((got[k] > 0) == (v > 0) for k, v in r.items())


def test_gate_deletions_needs_a_zero_weight_applied_first() -> None:
    k = ("large-int8", "t4-spot")
    assert rt.gate_deletions([k], None) == ((), (k,))  # unknown route: zero it first
    assert rt.gate_deletions([k], {k: 250}) == ((), (k,))
    assert rt.gate_deletions([k], {k: 0}) == ((k,), ())


# ----------------------------------------------------------------------- render


def test_placement_service_selects_only_its_deployment() -> None:
    spec = _gw_spec()
    key = ("distil-int8", "t4-spot")
    svc = rt.get_placement_service(OWNER, spec, key)
    dep = get_deployment(OWNER, spec, Placement(*key, 2))
    assert svc["metadata"]["name"] == dep["metadata"]["name"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert set(svc["spec"]["selector"].items()) <= set(
        dep["spec"]["template"]["metadata"]["labels"].items())
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "grpc": 8001}


def test_routes_carry_weights_and_parent_refs() -> None:
    spec = _spec({"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
                  "protocols": ["http", "grpc"]})
    w = {("distil-int8", "t4-spot"): 300, ("distil-int8", "l4-ondemand"): 700}
    routes = rt.get_routes(OWNER, spec, w)
    assert [r["kind"] for r in routes] == ["HTTPRoute", "GRPCRoute"]
    for r, port in zip(routes, (8000, 8001), strict=True):
        assert r["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert r["metadata"]["name"] == "bert" and r["metadata"]["namespace"] == "ml"
        assert r["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io",
                                            "kind": "Gateway", "name": "gw",
                                            "namespace": "infra", "sectionName": "web"}]
        refs = r["spec"]["rules"][0]["backendRefs"]
        assert {(b["name"], b["weight"], b["port"]) for b in refs} == {
            ("bert-distil-int8--t4-spot", 300, port), ("bert-distil-int8--l4-ondemand", 700, port)}
    only_http = rt.get_routes(OWNER, _spec({"parentRefs": [{"name": "gw"}]}), w)
    assert [r["kind"] for r in only_http] == ["HTTPRoute"]


# ----------------------------------------------------------------------- planner


def brute_force_weighted(combos: Sequence[pl.Combo], req: pl.Request) -> float:
    """Cheapest cost over every replica vector with capacities adding up."""
    best = math.inf
    for counts in itertools.product(*[range(c.pool_max + 1) for c in combos]):
        per_pool: dict[str, int] = {}
        for c, n in zip(combos, counts, strict=True):
            per_pool[c.pool] = per_pool.get(c.pool, 0) + n
        if any(per_pool[c.pool] > c.pool_max for c in combos):
            continue
        total = sum(counts)
        if total < req.min_replicas or total > req.max_replicas:
            continue
        cap = sum(c.capacity_rps * n for c, n in zip(combos, counts, strict=True))
        od = sum(c.capacity_rps * n for c, n in zip(combos, counts, strict=True) if not c.spot)
        if cap < req.load_rps - 1e-9 or od < req.od_load_rps - 1e-9:
            continue
        cost = sum(c.price_per_hour * n for c, n in zip(combos, counts, strict=True))
        if req.max_cost_per_hour is not None and cost > req.max_cost_per_hour + 1e-9:
            continue
        best = min(best, cost)
    return best


def test_weighted_solver_is_optimal_against_brute_force(make_spec: SpecFactory) -> None:
    profile = pl.candidates(make_spec())[0].profile
    rng = random.Random(7)
    checked = infeasible = 0
    for _ in range(250):
        pools = [(f"p{i}", rng.random() < 0.5, rng.choice([0.2, 0.5, 0.9, 1.3, 3.0]),
                  rng.randint(1, 3)) for i in range(3)]
        combos = [
            pl.Combo(f"v{vi}", name, 0.9 - vi * 0.1, float(rng.choice([100, 250, 400, 700])),
                     price, spot, cap, profile)
            for vi in range(2) for name, spot, price, cap in pools if rng.random() < 0.8
        ]
        if not combos:
            continue
        req = pl.Request(
            load_rps=rng.choice([0.0, 150.0, 500.0, 900.0, 1600.0, 2500.0]),
            od_load_rps=rng.choice([0.0, 0.0, 200.0, 600.0]),
            min_replicas=rng.choice([0, 1, 2]),
            max_replicas=rng.choice([3, 5, 8]),
            max_cost_per_hour=rng.choice([None, None, 2.0, 4.0]),
            weighted=True,
        )
        plan = pl.solve(combos, req)
        expect = brute_force_weighted(combos, req)
        if math.isinf(expect):
            assert plan is None, (combos, req, plan)
            infeasible += 1
            continue
        assert plan is not None, (combos, req)
        assert plan.cost_per_hour == pytest.approx(expect), (combos, req, plan)
        assert plan.weighted and plan.supported_rps >= req.load_rps - 1e-6
        assert req.min_replicas <= plan.total <= req.max_replicas
        by = {c.key: c for c in combos}
        od = sum(by[k].capacity_rps * n for k, n in plan.counts if not by[k].spot)
        assert od >= req.od_load_rps - 1e-6
        checked += 1
    assert checked > 100 and infeasible > 10


def test_weighted_mix_sums_capacity_where_even_split_cannot(make_spec: SpecFactory) -> None:
    """A fast cheap pool capped at 1 replica plus a slow pool: the even split is
    limited by the slow replica, the weighted split adds them up."""
    profile = pl.candidates(make_spec())[0].profile
    combos = (pl.Combo("v", "fast", 0.9, 1000.0, 1.0, False, 1, profile),
              pl.Combo("v", "slow", 0.9, 300.0, 0.5, False, 10, profile))
    even = pl.solve(combos, pl.Request(1200.0, max_replicas=20))
    weighted = pl.solve(combos, pl.Request(1200.0, max_replicas=20, weighted=True))
    assert even is not None and weighted is not None
    assert dict(even.counts) == {("v", "slow"): 4}  # 4 x 300; mixing would hold 300 x N
    assert dict(weighted.counts) == {("v", "fast"): 1, ("v", "slow"): 1}  # 1000 + 300
    assert weighted.cost_per_hour < even.cost_per_hour
    assert weighted.supported_rps == pytest.approx(1300.0)
    shares = weighted_share(weighted, combos, 1200.0)
    assert shares == pytest.approx({("v", "fast"): 1200 * 1000 / 1300,
                                    ("v", "slow"): 1200 * 300 / 1300})


def weighted_share(plan: pl.Plan, combos: Sequence[pl.Combo], load: float) -> dict[Any, float]:
    from tritonscale.core.weighted import share_load

    return share_load(plan.counts, {c.key: c.capacity_rps for c in combos}, load)


def test_plan_once_in_gateway_mode_is_weighted() -> None:
    svc = parse_manifest(load_example("bert.yaml"))[2]
    gw = _gw_spec()
    d_svc = plan_once(svc, 40_000.0)
    d_gw = plan_once(gw, 40_000.0)
    assert d_gw.slo_feasible
    assert d_gw.cost_per_hour <= d_svc.cost_per_hour + 1e-9
    assert d_gw.predicted_latency_ms is not None
    assert d_gw.predicted_latency_ms <= gw.slo.latency.target_ms + 1e-6


# ----------------------------------------------------------------------- simulator


def test_simulator_splits_by_the_operators_weights_in_gateway_mode() -> None:
    """A fixed two-placement fleet in gateway mode: the engine's weighted split sends
    each placement its capacity share (counted per request), the random split does not."""
    import numpy as np

    from tritonscale.sim.engine import SimConfig, Simulator
    from tritonscale.sim.policies import OraclePolicy

    spec = _gw_spec()
    mix = {("distil-int8", "t4-spot"): 3, ("distil-int8", "l4-ondemand"): 1}

    class Fixed(OraclePolicy):
        def _plan(self, now: float, unavailable: frozenset[str]) -> dict[Any, int]:
            return dict(mix)

    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(1 / 2000.0, 60_000))
    cap = {k: rt.replica_capacity(spec, k) or 0.0 for k in mix}
    total = sum(cap[k] * n for k, n in mix.items())
    for lb in ("weighted", "random"):
        sim = Simulator(spec, arrivals, SimConfig(seed=3, load_balancing=lb,
                                                   startup_override_s=0.0))
        policy = Fixed(spec, arrivals)
        sim.run(policy)
        assert policy.route_weights is not None
        got = np.bincount(sim.where[sim.where >= 0], minlength=len(sim.keys))
        share = {k: got[sim._ix(k)] / got.sum() for k in mix}
        want = {k: cap[k] * n / total for k, n in mix.items()}
        even = {k: n / sum(mix.values()) for k, n in mix.items()}
        for k in mix:
            if lb == "weighted":
                assert share[k] == pytest.approx(want[k], abs=0.01), (share, want)
            else:
                assert share[k] == pytest.approx(even[k], abs=0.01), (share, even)


def test_simulate_defaults_to_weighted_split_in_gateway_mode(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    import yaml

    from tritonscale.commands import simulate

    seen: list[str] = []

    class Stop(Exception):
        pass

    def capture(spec: Any, arrivals: Any, name: str, cfg: Any, *a: Any, **k: Any) -> Any:
        seen.append(cfg.load_balancing)
        raise Stop

    monkeypatch.setattr(simulate, "run_policy", capture)
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp_s\n" + "".join(f"{i / 10}\n" for i in range(100)))
    for routing, want in (({"parentRefs": [{"name": "gw"}]}, "weighted"), (None, "random")):
        p = tmp_path / "sm.yaml"
        doc = _doc(routing)
        if routing is None:
            del doc["spec"]["routing"]
        p.write_text(yaml.safe_dump(doc))
        parser = argparse.ArgumentParser()
        simulate.add_arguments(parser)
        args = parser.parse_args(["--spec", str(p), "--trace", str(trace),
                                  "--policy", "oracle"])
        with pytest.raises(Stop):
            simulate.run(args)
        assert seen[-1] == want


def test_fleet_example_is_cheaper_with_weighted_routing_when_pools_bind() -> None:
    """The docs/tuning.md table: at 20,000 rps on examples/bert-fleet.yaml the pools'
    maxReplicas bind and the weighted plan costs well under the even-split plan."""
    doc = load_example("bert-fleet.yaml")
    svc = parse_manifest(doc)[2]
    doc["spec"]["routing"] = {"parentRefs": [{"name": "gw"}]}
    gw = parse_manifest(doc)[2]
    for rps in (2000.0,):
        assert plan_once(gw, rps).cost_per_hour == pytest.approx(plan_once(svc, rps)
                                                                 .cost_per_hour)
    d_svc, d_gw = plan_once(svc, 20_000.0), plan_once(gw, 20_000.0)
    assert d_svc.slo_feasible and d_gw.slo_feasible
    assert d_gw.cost_per_hour < 0.5 * d_svc.cost_per_hour
    assert d_gw.cost_per_hour == pytest.approx(13.63, abs=0.01)
    assert d_svc.cost_per_hour == pytest.approx(38.63, abs=0.01)

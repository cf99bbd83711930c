"""The reconciler in gateway mode against the recording fake: per-placement Services,
weighted routes, make-before-break on weights, missing Gateway API CRDs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from tests.harness.fakes import Clock, FakeKube, load_example

from tritonscale.core.types import Decision, Placement
from tritonscale.handlers.reconcile import Reconciler

NS, NAME, UID = "ml", "resnet50", "uid-1"
ROUTING = {"mode": "gateway", "protocols": ["http", "grpc"],
           "parentRefs": [{"name": "gw", "namespace": "infra"}]}


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace=NS, uid=UID, generation=1)
    doc["spec"]["routing"] = copy.deepcopy(ROUTING)
    k.add_scaledmodel(doc)
    return k


@pytest.fixture
def r(kube: FakeKube) -> Reconciler:
    return Reconciler(kube=kube, clock=Clock())


def body(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.scaledmodels[(NS, NAME)])


def cond(kube: FakeKube, type_: str) -> Mapping[str, Any]:
    for c in kube.scaledmodels[(NS, NAME)].get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def use_plan(r: Reconciler, *placements: Placement,
             target: tuple[Placement, ...] | None = None) -> None:
    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        return Decision(placements=tuple(placements), reason="TestPlan", message="plan",
                        target=target)

    r.policy = fake


def moving(r: Reconciler, old: Placement, new: Placement) -> None:
    """What decide returns while ``new`` is not Ready: ``old`` held (make-before-break)."""
    use_plan(r, old, new, target=(new,))


def weights(kube: FakeKube, kind: str = "HTTPRoute") -> dict[str, int]:
    route = kube.routes[(kind, NS, NAME)]
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def test_gateway_mode_renders_services_and_weighted_routes(
    kube: FakeKube, r: Reconciler
) -> None:
    use_plan(r, Placement("int8", "t4-spot", 2), Placement("fp16", "l4-spot", 1))
    r.reconcile(body(kube))
    assert {n for _, n in kube.services} == {
        "resnet50", "resnet50-int8-t4-spot", "resnet50-fp16-l4-spot"}
    assert set(kube.routes) == {("HTTPRoute", NS, NAME), ("GRPCRoute", NS, NAME)}
    # Nothing Ready yet: weights follow the planned capacity (never all zero).
    w0 = weights(kube)
    assert sum(w0.values()) == 1000 and all(v > 0 for v in w0.values())
    kube.set_ready("resnet50-int8-t4-spot")
    r.reconcile(body(kube), decide=False)
    # Only int8@t4 is Ready: it takes every request until fp16@l4 is Ready.
    assert weights(kube) == {"resnet50-int8-t4-spot": 1000, "resnet50-fp16-l4-spot": 0}
    assert weights(kube, "GRPCRoute") == weights(kube)
    assert kube.routes[("GRPCRoute", NS, NAME)]["spec"]["rules"][0]["backendRefs"][0][
        "port"] == 8001
    kube.set_ready("resnet50-fp16-l4-spot")
    r.reconcile(body(kube), decide=False)
    w = weights(kube)
    assert 0 < w["resnet50-fp16-l4-spot"] < 1000 and sum(w.values()) == 1000
    assert cond(kube, "Routed")["status"] == "True"


def test_weight_reaches_zero_before_the_deployment_goes(
    kube: FakeKube, r: Reconciler
) -> None:
    use_plan(r, Placement("int8", "t4-spot", 2))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    r.reconcile(body(kube), decide=False)
    moving(r, Placement("int8", "t4-spot", 2), Placement("int8", "l4-spot", 2))
    r.reconcile(body(kube))
    assert weights(kube) == {"resnet50-int8-t4-spot": 1000, "resnet50-int8-l4-spot": 0}
    kube.set_ready("resnet50-int8-l4-spot")
    # The new placement is Ready and the policy drops the old one: its weight goes
    # to 0, its Deployment stays.
    use_plan(r, Placement("int8", "l4-spot", 2))
    out = r.reconcile(body(kube))
    assert out.deleted == () and not out.settled
    assert weights(kube) == {"resnet50-int8-t4-spot": 0, "resnet50-int8-l4-spot": 1000}
    assert "resnet50-int8-t4-spot" in kube.deployment_names()
    # Next pass: the route with weight 0 was applied, so the Deployment and its Service go.
    kube.reset_calls()
    out = r.reconcile(body(kube), decide=False)
    assert out.deleted == ("resnet50-int8-t4-spot",) and out.settled
    order = [c for c in kube.calls if c[0] in ("apply", "delete_deployment", "delete_service")]
    route_i = order.index(("apply", f"HTTPRoute/{NS}/{NAME}"))
    assert route_i < order.index(("delete_deployment", f"{NS}/resnet50-int8-t4-spot"))
    assert weights(kube) == {"resnet50-int8-l4-spot": 1000}
    assert (NS, "resnet50-int8-t4-spot") not in kube.services


def test_restart_zeroes_weight_before_deleting(
    kube: FakeKube
) -> None:
    r1 = Reconciler(kube=kube, clock=Clock())
    use_plan(r1, Placement("int8", "t4-spot", 2))
    r1.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    moving(r1, Placement("int8", "t4-spot", 2), Placement("int8", "l4-spot", 2))
    r1.reconcile(body(kube))
    kube.set_ready("resnet50-int8-l4-spot")
    # A new operator process does not know which weights were applied: zero first.
    r2 = Reconciler(kube=kube, clock=Clock())
    use_plan(r2, Placement("int8", "l4-spot", 2))
    out = r2.reconcile(body(kube))
    assert out.deleted == ()
    assert weights(kube)["resnet50-int8-t4-spot"] == 0
    assert r2.reconcile(body(kube), decide=False).deleted == ("resnet50-int8-t4-spot",)


def test_missing_gateway_api_crds_is_a_clear_condition(
    kube: FakeKube, r: Reconciler
) -> None:
    kube.route_crds_missing = True
    use_plan(r, Placement("int8", "t4-spot", 1))
    out = r.reconcile(body(kube))
    assert out.created == ("resnet50-int8-t4-spot",)  # Deployments are still managed
    c = cond(kube, "Routed")
    assert c["status"] == "False" and c["reason"] == "GatewayAPIMissing"
    assert "HTTPRoute" in c["message"] and "Gateway API CRDs" in c["message"]
    assert [e for e in kube.events if e[:2] == ("Warning", "GatewayAPIMissing")]
    kube.reset_calls()
    r.reconcile(body(kube), decide=False)
    assert not [e for e in kube.events if e[1] == "GatewayAPIMissing"]  # once per change
    # Nothing can route through a gateway: transitions are not held back.
    kube.set_ready("resnet50-int8-t4-spot")
    moving(r, Placement("int8", "t4-spot", 1), Placement("int8", "l4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-l4-spot")
    use_plan(r, Placement("int8", "l4-spot", 1))
    assert r.reconcile(body(kube)).deleted == ("resnet50-int8-t4-spot",)
    # The CRDs get installed: routes appear and the condition clears.
    kube.route_crds_missing = False
    r.reconcile(body(kube), decide=False)
    assert weights(kube) == {"resnet50-int8-l4-spot": 1000}
    assert cond(kube, "Routed")["status"] == "True"


def test_route_failure_keeps_deletions_waiting(
    kube: FakeKube, r: Reconciler
) -> None:
    from tritonscale.adapters.kube import KubeAPIError

    use_plan(r, Placement("int8", "t4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    moving(r, Placement("int8", "t4-spot", 1), Placement("int8", "l4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-l4-spot")
    use_plan(r, Placement("int8", "l4-spot", 1))
    kube.fail("apply", "HTTPRoute", KubeAPIError(403, "Forbidden", "no RBAC"))
    out = r.reconcile(body(kube))
    assert out.deleted == ()
    assert cond(kube, "Routed")["reason"] == "RouteApplyFailed"
    assert weights(kube)["resnet50-int8-t4-spot"] == 1000  # the old route still stands
    r.reconcile(body(kube), decide=False)  # weight 0 applied now
    assert weights(kube)["resnet50-int8-t4-spot"] == 0
    assert r.reconcile(body(kube), decide=False).deleted == ("resnet50-int8-t4-spot",)


def test_service_mode_never_touches_routes() -> None:
    k = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace=NS, uid=UID, generation=1)
    k.add_scaledmodel(doc)
    k.route_crds_missing = True
    r = Reconciler(kube=k, clock=Clock())
    use_plan(r, Placement("int8", "t4-spot", 1))
    r.reconcile(copy.deepcopy(k.scaledmodels[(NS, NAME)]))
    assert not k.routes and {n for _, n in k.services} == {"resnet50"}
    assert not [c for c in k.calls if "Route" in c[1]]


@pytest.mark.parametrize("kind", ["Service", "HTTPRoute"])
def test_gateway_objects_we_did_not_create_are_never_taken_over(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    foreign = {"apiVersion": "v1", "kind": kind,
               "metadata": {"name": "resnet50-int8-t4-spot" if kind == "Service" else NAME,
                            "namespace": NS, "labels": {"team": "other"}},
               "spec": {"selector": {"app": "theirs"}}}
    if kind == "Service":
        kube.services[(NS, "resnet50-int8-t4-spot")] = foreign
    else:
        kube.routes[("HTTPRoute", NS, NAME)] = foreign
    use_plan(r, Placement("int8", "t4-spot", 1))
    r.reconcile(body(kube))
    c = cond(kube, "Routed")
    assert c["status"] == "False" and c["reason"] == "OwnershipConflict"
    assert "was not created by ScaledModel resnet50" in c["message"]
    applied = [t for m, t in kube.calls if m == "apply"]
    assert not [t for t in applied if "Route" in t or (t.endswith("-int8-t4-spot")
                and t.startswith("Service"))]
    if kind == "Service":
        assert kube.services[(NS, "resnet50-int8-t4-spot")] == foreign
    else:
        assert kube.routes[("HTTPRoute", NS, NAME)] == foreign


def test_back_to_service_mode_removes_routes_and_placement_services(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_plan(r, Placement("int8", "t4-spot", 1))
    r.reconcile(body(kube))
    assert kube.routes and (NS, "resnet50-int8-t4-spot") in kube.services
    kube.scaledmodels[(NS, NAME)]["spec"].pop("routing")  # generation kept on purpose
    # A new process (memory lost): the Routed condition in status still says to clean up.
    r2 = Reconciler(kube=kube, clock=Clock())
    r2.reconcile(body(kube))
    assert not kube.routes
    assert {n for _, n in kube.services} == {"resnet50"}
    assert cond(kube, "Routed") == {}
    assert "resnet50-int8-t4-spot" in kube.deployment_names()
    kube.reset_calls()
    r2.reconcile(body(kube))  # done once: no more route calls
    assert not [c for c in kube.calls if "Route" in c[1]]


def test_missing_grpcroute_crd_alone_keeps_make_before_break(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPRoute exists (and carries traffic), GRPCRoute's CRD does not: deletions still
    wait for the HTTPRoute's zero weight."""
    kube.missing_route_kinds = {"GRPCRoute"}
    use_plan(r, Placement("int8", "t4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    moving(r, Placement("int8", "t4-spot", 1), Placement("int8", "l4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-l4-spot")
    assert cond(kube, "Routed")["reason"] == "GatewayAPIMissing"
    assert "GRPCRoute" in cond(kube, "Routed")["message"]
    use_plan(r, Placement("int8", "l4-spot", 1))
    out = r.reconcile(body(kube))
    assert out.deleted == ()
    assert weights(kube)["resnet50-int8-t4-spot"] == 0
    assert r.reconcile(body(kube), decide=False).deleted == ("resnet50-int8-t4-spot",)


def test_a_placement_service_an_older_operator_named_is_deleted_after_the_routes_move(
    kube: FakeKube, r: Reconciler
) -> None:
    """Before "--" separated a hyphenated variant from its pool, the per-placement
    Service of int8-trt on t4-spot was resnet50-int8-trt-t4-spot. After the upgrade
    the routes name today's Service; the old one (found by its labels, ours by its
    owner reference) goes -- and somebody else's Service is never touched."""
    obj = kube.scaledmodels[(NS, NAME)]
    for v in obj["spec"]["variants"]:
        if v["name"] == "int8":
            v["name"] = "int8-trt"
    use_plan(r, Placement("int8-trt", "t4-spot", 1))
    r.reconcile(body(kube))
    today = "resnet50-int8-trt--t4-spot"
    assert weights(kube) == {today: 1000}
    legacy = copy.deepcopy(kube.services[(NS, today)])
    legacy["metadata"]["name"] = "resnet50-int8-trt-t4-spot"
    kube.services[(NS, "resnet50-int8-trt-t4-spot")] = legacy
    theirs = copy.deepcopy(legacy)
    theirs["metadata"].update(name="resnet50-int8-trt-l4", ownerReferences=[])
    kube.services[(NS, "resnet50-int8-trt-l4")] = theirs
    # A restarted operator (nothing cached) applies the routes, then prunes.
    r2 = Reconciler(kube=kube, clock=Clock(), policy=r.policy)
    r2.reconcile(body(kube))
    assert {n for _, n in kube.services} == {"resnet50", today, "resnet50-int8-trt-l4"}
    assert weights(kube) == {today: 1000}
    # Back to service mode: every per-placement Service of ours goes, theirs stays.
    obj["spec"].pop("routing")
    obj["metadata"]["generation"] += 1
    r2.reconcile(body(kube))
    assert {n for _, n in kube.services} == {"resnet50", "resnet50-int8-trt-l4"}

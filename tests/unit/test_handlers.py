"""The reconciler against the recording fake kube adapter (no cluster, no Kopf)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from fakes import FakeKube, load_example

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Decision, Observation, Placement
from tritonscale.handlers import reconcile as rec
from tritonscale.handlers.reconcile import ReconcileError, Reconciler

NS, NAME, UID = "ml", "resnet50", "uid-1"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class FixedSignals:
    def __init__(self, obs: Observation) -> None:
        self.obs = obs

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        return self.obs


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace=NS, uid=UID, generation=1)
    k.add_scaledmodel(doc)
    return k


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def r(kube: FakeKube, clock: Clock) -> Reconciler:
    return Reconciler(kube=kube, clock=clock)


def body(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.scaledmodels[(NS, NAME)])


def status(kube: FakeKube) -> dict[str, Any]:
    s: dict[str, Any] = kube.scaledmodels[(NS, NAME)].get("status", {})
    return s


def cond(kube: FakeKube, type_: str) -> Mapping[str, Any]:
    for c in status(kube).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def edit_spec(kube: FakeKube, fn: Any) -> None:
    obj = kube.scaledmodels[(NS, NAME)]
    fn(obj["spec"])
    obj["metadata"]["generation"] += 1


def use_plan(monkeypatch: pytest.MonkeyPatch, *placements: Placement) -> None:
    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        return Decision(placements=tuple(placements), reason="TestPlan",
                        message=f"plan {placements}", state={"step": 1})

    monkeypatch.setattr(rec, "_decide", fake)


def test_create_applies_service_and_deployment_and_status(kube: FakeKube, r: Reconciler) -> None:
    out = r.reconcile(body(kube))
    assert out.valid and out.decided
    # Interim rule: cheapest pool (t4-spot), faster eligible variant there (int8), minReplicas=1.
    assert kube.deployment_names() == ["resnet50-int8-t4-spot"]
    dep = kube.deployments[(NS, "resnet50-int8-t4-spot")]
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["ownerReferences"][0]["uid"] == UID
    assert (NS, NAME) in kube.services
    s = status(kube)
    assert s["observedGeneration"] == 1
    assert s["placement"] == "int8@t4-spot x1"
    assert s["ready"] == "0/1"
    assert s["placements"] == [{
        "variant": "int8", "pool": "t4-spot", "desired": 1, "ready": 0,
        "deployment": "resnet50-int8-t4-spot", "planned": True,
    }]
    assert s["costPerHour"] == pytest.approx(0.201)
    assert s["lastDecision"]["reason"] == "InterimPlacement"
    assert s["lastDecision"]["placements"] == [{"variant": "int8", "pool": "t4-spot",
                                                "replicas": 1}]
    assert cond(kube, "SpecValid")["status"] == "True"
    assert cond(kube, "Satisfiable")["status"] == "True"
    assert cond(kube, "Ready")["status"] == "False"
    assert cond(kube, "SignalsAvailable")["status"] == "False"
    assert cond(kube, "SLOMet")["status"] == "Unknown"
    for c in s["conditions"]:
        assert c["observedGeneration"] == 1 and c["lastTransitionTime"].endswith("Z")
    reasons = [e[1] for e in kube.events]
    assert "CreatedDeployment" in reasons and "InterimPlacement" in reasons


def test_second_pass_is_quiet_then_ready_flips(
    kube: FakeKube, r: Reconciler, clock: Clock
) -> None:
    r.reconcile(body(kube))
    t0 = cond(kube, "SpecValid")["lastTransitionTime"]
    kube.reset_calls()
    clock.t += 60
    kube.forbid("apply", "delete_deployment", "patch_status", "event")
    out = r.reconcile(body(kube))
    assert not out.status_written and not out.created and not out.updated
    assert kube.writes() == []
    kube.allow_all()
    kube.set_ready("resnet50-int8-t4-spot")
    clock.t += 60
    r.reconcile(body(kube), decide=False)
    assert cond(kube, "Ready")["status"] == "True"
    assert status(kube)["ready"] == "1/1"
    assert cond(kube, "SpecValid")["lastTransitionTime"] == t0  # no flip, no new time


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["scaling"].update(minReplicas=40), "spec.scaling.minReplicas"),
        (lambda s: s["variants"][0].update(precision="int4"), "spec.variants[0].precision"),
        (lambda s: s["slo"].update(minAccuracy=0.99), "spec.slo.minAccuracy"),
        (lambda s: s["nodePools"][0].pop("accelerator"), "spec.nodePools[0].accelerator"),
    ],
)
def test_invalid_spec_sets_condition_and_writes_nothing(
    kube: FakeKube, r: Reconciler, mutate: Any, field: str
) -> None:
    edit_spec(kube, mutate)
    kube.forbid("apply", "delete_deployment", "list_deployments")
    out = r.reconcile(body(kube))
    assert not out.valid
    assert kube.deployments == {} and kube.services == {}
    c = cond(kube, "SpecValid")
    assert c["status"] == "False" and c["reason"] == "InvalidSpec"
    assert field in c["message"]
    assert [(t, rsn) for t, rsn, _ in kube.events] == [("Warning", "InvalidSpec")]
    assert field in kube.events[0][2]
    assert set(kube.status_patches[0]) == {"conditions", "observedGeneration"}
    # Re-reconciling the same invalid spec: no new event, no status write.
    kube.reset_calls()
    kube.forbid("patch_status", "event")
    assert not r.reconcile(body(kube)).valid


def test_make_before_break(kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch) -> None:
    use_plan(monkeypatch, Placement("int8", "t4-spot", 2))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    r.reconcile(body(kube), decide=False)
    # The plan moves to L4: the new Deployment is created, the old one kept.
    use_plan(monkeypatch, Placement("int8", "l4-spot", 2))
    kube.reset_calls()
    out = r.reconcile(body(kube))
    assert out.created == ("resnet50-int8-l4-spot",) and out.deleted == ()
    assert not out.settled
    assert kube.deployment_names() == ["resnet50-int8-l4-spot", "resnet50-int8-t4-spot"]
    assert kube.deployments[(NS, "resnet50-int8-t4-spot")]["spec"]["replicas"] == 2
    assert cond(kube, "Ready")["reason"] == "Transitioning"
    planned = {p["deployment"]: p["planned"] for p in status(kube)["placements"]}
    assert planned == {"resnet50-int8-l4-spot": True, "resnet50-int8-t4-spot": False}
    # One new replica ready is not enough: still kept.
    kube.set_ready("resnet50-int8-l4-spot", 1)
    kube.forbid("delete_deployment")
    r.reconcile(body(kube), decide=False)
    kube.allow_all()
    assert "resnet50-int8-t4-spot" in kube.deployment_names()
    # Both ready: the Deployment event refreshes and the old placement goes.
    kube.set_ready("resnet50-int8-l4-spot", 2)
    out2 = r.deployment_event(kube.deployments[(NS, "resnet50-int8-l4-spot")])
    assert out2 is not None and out2.deleted == ("resnet50-int8-t4-spot",)
    assert kube.deployment_names() == ["resnet50-int8-l4-spot"]
    assert cond(kube, "Ready")["status"] == "True"
    assert status(kube)["placement"] == "int8@l4-spot x2"
    assert "DeletedDeployment" in [e[1] for e in kube.events]


def test_shrinking_placement_waits_for_replacement(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_plan(monkeypatch, Placement("int8", "t4-spot", 4))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    use_plan(monkeypatch, Placement("int8", "t4-spot", 2), Placement("int8", "l4-spot", 2))
    r.reconcile(body(kube))
    assert kube.deployments[(NS, "resnet50-int8-t4-spot")]["spec"]["replicas"] == 4
    kube.set_ready("resnet50-int8-l4-spot")
    r.reconcile(body(kube), decide=False)
    assert kube.deployments[(NS, "resnet50-int8-t4-spot")]["spec"]["replicas"] == 2


def test_removed_variant_kept_until_replacement_ready(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    # The user drops the int8 variant: fp16 on t4-spot replaces it.
    edit_spec(kube, lambda s: s["variants"].pop(1))
    r.reconcile(body(kube))
    assert kube.deployment_names() == ["resnet50-fp16-t4-spot", "resnet50-int8-t4-spot"]
    kube.set_ready("resnet50-fp16-t4-spot")
    r.reconcile(body(kube), decide=False)
    assert kube.deployment_names() == ["resnet50-fp16-t4-spot"]
    assert status(kube)["observedGeneration"] == 2


def test_api_error_mid_apply_no_status_lie_then_retry(kube: FakeKube, r: Reconciler) -> None:
    kube.fail("apply", "Deployment/")
    with pytest.raises(ReconcileError):
        r.reconcile(body(kube))
    s = status(kube)
    assert "lastDecision" not in s and "placements" not in s and "observedGeneration" not in s
    assert cond(kube, "Ready")["reason"] == "ApplyFailed"
    assert ("Warning", "ApplyFailed") in [(t, rsn) for t, rsn, _ in kube.events]
    # The retry converges.
    out = r.reconcile(body(kube))
    assert out.created == ("resnet50-int8-t4-spot",)
    assert status(kube)["placement"] == "int8@t4-spot x1"
    assert cond(kube, "Ready")["reason"] == "ReplicasNotReady"


def test_status_patch_failure_is_retried(kube: FakeKube, r: Reconciler) -> None:
    kube.fail("patch_status", error=KubeAPIError(None, "connection reset"))
    with pytest.raises(ReconcileError):
        r.reconcile(body(kube))
    assert r.reconcile(body(kube)).status_written


def test_event_failures_do_not_fail_reconcile(kube: FakeKube, r: Reconciler) -> None:
    kube.fail("event", error=KubeAPIError(403, "Forbidden"))
    assert r.reconcile(body(kube)).valid
    assert kube.deployment_names() == ["resnet50-int8-t4-spot"]


def test_timer_respects_interval(kube: FakeKube, r: Reconciler, clock: Clock) -> None:
    assert r.tick(body(kube)) is not None
    clock.t += 5
    assert r.tick(body(kube)) is None  # intervalSeconds is 15
    clock.t += 11
    out = r.tick(body(kube))
    assert out is not None and out.decided


def test_signals_feed_conditions(kube: FakeKube, clock: Clock) -> None:
    obs = Observation(rps=120.0, latency_ms=31.0)
    r = Reconciler(kube=kube, signals=FixedSignals(obs), clock=clock)
    r.reconcile(body(kube))
    assert cond(kube, "SignalsAvailable")["status"] == "True"
    c = cond(kube, "SLOMet")
    assert c["status"] == "False" and "31.0 ms > target 25 ms" in c["message"]
    assert status(kube)["observed"]["rps"] == 120.0


def test_decision_state_persisted_and_passed_back(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        seen.append(state)
        return Decision(placements=(Placement("int8", "t4-spot", 1),), reason="X", message="m",
                        state={"n": len(seen)})

    monkeypatch.setattr(rec, "_decide", fake)
    r.reconcile(body(kube))
    r.reconcile(body(kube))
    assert seen == [None, {"n": 1}]
    assert status(kube)["autoscaler"] == {"n": 2}


def test_unsatisfiable_holds_and_says_why(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.reconcile(body(kube))

    def infeasible(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        return Decision(placements=(), reason="NoFeasiblePlacement",
                        message="no pool can hold p99 <= 25 ms", slo_feasible=False)

    monkeypatch.setattr(rec, "_decide", infeasible)
    kube.forbid("delete_deployment")
    r.reconcile(body(kube))
    assert kube.deployment_names() == ["resnet50-int8-t4-spot"]
    c = cond(kube, "Satisfiable")
    assert c["status"] == "False" and "25 ms" in c["message"]
    assert ("Warning", "NoFeasiblePlacement") in [(t, rsn) for t, rsn, _ in kube.events]


def test_over_budget_condition(kube: FakeKube, r: Reconciler) -> None:
    edit_spec(kube, lambda s: s["slo"].update(maxCostPerHour=0.1))
    r.reconcile(body(kube))
    c = cond(kube, "Satisfiable")
    assert c["status"] == "False" and c["reason"] == "OverBudget"
    assert "maxCostPerHour" in c["message"]


def test_foreign_deployments_ignored(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    stale = copy.deepcopy(kube.deployments[(NS, "resnet50-int8-t4-spot")])
    stale["metadata"]["name"] = "resnet50-fp16-l4-spot"
    stale["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    kube.deployments[(NS, "resnet50-fp16-l4-spot")] = stale
    kube.forbid("delete_deployment")
    r.reconcile(body(kube), decide=False)


def test_deployment_event_only_refreshes_on_count_change(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    dep = kube.deployments[(NS, "resnet50-int8-t4-spot")]
    assert r.deployment_event(dep) is not None
    kube.reset_calls()
    assert r.deployment_event(dep) is None
    assert kube.calls == []


def test_spec_update_scales(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    edit_spec(kube, lambda s: s["scaling"].update(minReplicas=3))
    out = r.reconcile(body(kube))
    assert out.updated == ("resnet50-int8-t4-spot",)
    assert kube.deployments[(NS, "resnet50-int8-t4-spot")]["spec"]["replicas"] == 3
    assert any("scaled 1 -> 3" in m for _, _, m in kube.events)
    assert status(kube)["observedGeneration"] == 2


def test_fake_fails_loudly_on_unknown_calls(kube: FakeKube) -> None:
    with pytest.raises(AssertionError):
        kube.create_namespaced_secret("ml", {})


def test_stale_signals_removed_from_status(kube: FakeKube, clock: Clock) -> None:
    signals = FixedSignals(Observation(rps=120.0, latency_ms=20.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    r.reconcile(body(kube))
    assert status(kube)["observed"]["latencyMs"] == 20.0
    signals.obs = Observation(rps=None, error="prometheus: connection refused")
    clock.t += 20
    r.reconcile(body(kube))
    observed = status(kube)["observed"]
    assert "rps" not in observed and "latencyMs" not in observed
    assert observed["error"] == "prometheus: connection refused"
    assert cond(kube, "SLOMet")["status"] == "Unknown"


def test_decision_state_keys_removed(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter([{"a": 1, "nested": {"x": 1, "y": 2}}, {"nested": {"x": 3}}])

    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        return Decision(placements=(Placement("int8", "t4-spot", 1),), reason="X", message="m",
                        state=next(states))

    monkeypatch.setattr(rec, "_decide", fake)
    r.reconcile(body(kube))
    r.reconcile(body(kube))
    assert status(kube)["autoscaler"] == {"nested": {"x": 3}}


def test_same_decision_keeps_its_time(kube: FakeKube, r: Reconciler, clock: Clock) -> None:
    r.reconcile(body(kube))
    t0 = status(kube)["lastDecision"]["time"]
    kube.set_ready("resnet50-int8-t4-spot")
    clock.t += 100
    r.reconcile(body(kube))
    assert status(kube)["ready"] == "1/1"
    assert status(kube)["lastDecision"]["time"] == t0

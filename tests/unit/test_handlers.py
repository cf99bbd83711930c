"""The reconciler against the recording fake kube adapter (no cluster, no Kopf)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
from tests.harness.fakes import Clock, FakeKube, kube_with_example
from tests.harness.net import HUNG_HOST

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core import autoscale
from tritonscale.core.placement import initial_placement
from tritonscale.core.render import Owner, get_deployment
from tritonscale.core.spec import ScaledModelSpec, parse_manifest
from tritonscale.core.types import Decision, Observation, Placement
from tritonscale.handlers.reconcile import ReconcileError, Reconciler
from tritonscale.handlers.signals import SpecSignalSource

NS, NAME, UID = "ml", "resnet50", "uid-1"

def interim(spec: ScaledModelSpec, obs: Observation, state: Any, now: float) -> Decision:
    """Reconcile mechanics are tested with the simple, predictable interim rule
    (injected as the Reconciler's policy); the tests named ``test_planner_*`` use
    the default policy, the real ``autoscale.decide``."""
    return initial_placement(spec, obs.unavailable_pools)


class FixedSignals:
    def __init__(self, obs: Observation) -> None:
        self.obs = obs

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        return self.obs


@pytest.fixture
def kube() -> FakeKube:
    return kube_with_example(NS, UID)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def r(kube: FakeKube, clock: Clock) -> Reconciler:
    return Reconciler(kube=kube, clock=clock, policy=interim)


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


def use_plan(r: Reconciler, *placements: Placement) -> None:
    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        return Decision(placements=tuple(placements), reason="TestPlan",
                        message=f"plan {placements}", state={"step": 1})

    r.policy = fake


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


def test_plan_applied_as_decided(kube: FakeKube, r: Reconciler) -> None:
    """The policy alone decides what runs (make-before-break is decide's job,
    see the ``test_planner_*`` tests): the reconciler applies the plan and removes
    every Deployment the plan no longer has."""
    use_plan(r, Placement("int8", "t4-spot", 2))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    use_plan(r, Placement("int8", "t4-spot", 1), Placement("int8", "l4-spot", 2))
    out = r.reconcile(body(kube))
    assert out.created == ("resnet50-int8-l4-spot",) and out.deleted == ()
    assert kube.deployments[(NS, "resnet50-int8-t4-spot")]["spec"]["replicas"] == 1
    use_plan(r, Placement("int8", "l4-spot", 2))
    out = r.reconcile(body(kube))
    assert out.deleted == ("resnet50-int8-t4-spot",) and out.settled
    assert kube.deployment_names() == ["resnet50-int8-l4-spot"]
    assert "DeletedDeployment" in [e[1] for e in kube.events]


def test_planner_make_before_break(kube: FakeKube, clock: Clock) -> None:
    signals = FixedSignals(Observation(rps=50.0, latency_ms=5.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    r.reconcile(body(kube))
    (old,) = kube.deployment_names()
    kube.set_ready(old)
    pool = kube.deployments[(NS, old)]["metadata"]["labels"]["tritonscale.io/pool"]
    # The pool is lost: decide moves the plan, the old Deployment is kept.
    signals.obs = Observation(rps=50.0, latency_ms=5.0, unavailable_pools=frozenset({pool}))
    clock.t += 15
    out = r.reconcile(body(kube))
    assert out.created and out.deleted == () and not out.settled
    (new,) = out.created
    assert kube.deployments[(NS, old)]["spec"]["replicas"] == 1
    assert cond(kube, "Ready")["reason"] == "Transitioning"
    planned = {p["deployment"]: p["planned"] for p in status(kube)["placements"]}
    assert planned == {new: True, old: False}
    # A Deployment event before the new replica is Ready changes nothing.
    kube.forbid("delete_deployment")
    r.deployment_event(kube.deployments[(NS, new)])
    assert cond(kube, "Ready")["reason"] == "Transitioning"
    clock.t += 15
    r.reconcile(body(kube))
    kube.allow_all()
    assert old in kube.deployment_names()
    # Ready: the next decision removes the old placement.
    kube.set_ready(new)
    clock.t += 15
    out = r.reconcile(body(kube))
    assert out.deleted == (old,) and out.settled
    assert kube.deployment_names() == [new]
    assert cond(kube, "Ready")["status"] == "True"


def test_planner_removed_variant_kept_until_replacement_ready(
    kube: FakeKube, clock: Clock
) -> None:
    r = Reconciler(kube=kube, clock=clock)
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot")
    # The user drops the int8 variant: fp16 on t4-spot replaces it; the int8
    # Deployment (no longer renderable) is left untouched until fp16 is Ready.
    edit_spec(kube, lambda s: s["variants"].pop(1))
    clock.t += 15
    r.reconcile(body(kube))
    assert kube.deployment_names() == ["resnet50-fp16-t4-spot", "resnet50-int8-t4-spot"]
    kube.set_ready("resnet50-fp16-t4-spot")
    clock.t += 15
    r.reconcile(body(kube))
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
    r = Reconciler(kube=kube, signals=FixedSignals(obs), clock=clock, policy=interim)
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

    r.policy = fake
    r.reconcile(body(kube))
    r.reconcile(body(kube))
    assert seen == [None, {"n": 1}]
    assert status(kube)["autoscaler"] == {"n": 2}


def test_planner_unsatisfiable_holds_and_says_why(kube: FakeKube, clock: Clock) -> None:
    signals = FixedSignals(Observation(rps=50.0, latency_ms=5.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    r.reconcile(body(kube))
    (running,) = kube.deployment_names()
    kube.set_ready(running)
    # Every pool unavailable: nothing is feasible; decide holds what runs.
    pools = frozenset(p["name"] for p in body(kube)["spec"]["nodePools"])
    signals.obs = Observation(rps=50.0, latency_ms=5.0, unavailable_pools=pools)
    clock.t += 15
    kube.forbid("delete_deployment")
    out = r.reconcile(body(kube))
    assert out.decision is not None and out.decision.reason == "Infeasible"
    assert kube.deployment_names() == [running]
    c = cond(kube, "Satisfiable")
    assert c["status"] == "False" and "holding what runs" in c["message"]
    assert ("Warning", "Infeasible") in [(t, rsn) for t, rsn, _ in kube.events]


def test_planner_invalid_state_resets_with_one_event(kube: FakeKube, clock: Clock) -> None:
    """A tampered status.autoscaler neither crashes nor wedges the model."""
    r = Reconciler(kube=kube, signals=FixedSignals(Observation(rps=50.0)), clock=clock)
    kube.scaledmodels[(NS, NAME)]["status"] = {"autoscaler": {"w": [[1]], "c": 1e308}}
    for _ in range(3):
        out = r.reconcile(body(kube))
        assert out.decision is not None and kube.deployment_names()
        clock.t += 15
    resets = [e for e in kube.events if e[1] == "AutoscalerStateReset"]
    assert len(resets) == 1 and resets[0][0] == "Warning"
    assert "status.autoscaler.loadWindow" in resets[0][2]
    assert status(kube)["autoscaler"]["version"] == 3


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

    r.policy = fake
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


def test_service_reapplied_when_stale(kube: FakeKube, r: Reconciler, clock: Clock) -> None:
    r.reconcile(body(kube))
    del kube.services[(NS, NAME)]
    clock.t += 60
    r.reconcile(body(kube))
    assert (NS, NAME) not in kube.services  # cached: no extra API call per tick
    clock.t += r.service_refresh_seconds
    r.reconcile(body(kube))
    assert (NS, NAME) in kube.services


def _stall(kube: FakeKube, name: str, since: str) -> None:
    d = kube.deployments[(NS, name)]
    d["status"]["conditions"] = [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
         "lastTransitionTime": since},
    ]


def test_pool_loss_replans_elsewhere(kube: FakeKube, r: Reconciler, clock: Clock) -> None:
    """A stalled pool is reported to the policy as unavailable, for a cooldown.
    (The interim policy moves at once; decide's make-before-break is tested in
    test_planner_make_before_break.)"""
    clock.t = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    edit_spec(kube, lambda s: s["scaling"].update(minReplicas=2))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot", 1)  # one replica lost its node
    _stall(kube, "resnet50-int8-t4-spot", "2023-11-14T22:13:20Z")
    clock.t += 100  # not yet past 2 x startupSeconds (90) = 180 s
    r.reconcile(body(kube))
    assert kube.deployment_names() == ["resnet50-int8-t4-spot"]
    clock.t += 100
    r.reconcile(body(kube))
    assert status(kube)["unavailablePools"] == ["t4-spot"]
    assert kube.deployment_names() == ["resnet50-int8-l4-spot"]
    kube.set_ready("resnet50-int8-l4-spot")
    # No flapping back while the pool is in cooldown...
    clock.t += 60
    r.reconcile(body(kube))
    assert kube.deployment_names() == ["resnet50-int8-l4-spot"]
    # ...and the cheap pool is tried again afterwards.
    clock.t += r.pool_cooldown_seconds
    r.reconcile(body(kube))
    assert "resnet50-int8-t4-spot" in kube.deployment_names()
    assert status(kube)["unavailablePools"] == []


def test_pool_stall_floor_is_configurable(kube: FakeKube, r: Reconciler, clock: Clock) -> None:
    clock.t = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    edit_spec(kube, lambda s: [p.update(startupSeconds=5) for p in s["nodePools"]])
    r.pool_stall_floor_seconds = 10.0
    r.reconcile(body(kube))
    _stall(kube, "resnet50-int8-t4-spot", "2023-11-14T22:13:20Z")
    clock.t += 9
    r.reconcile(body(kube))
    assert status(kube)["unavailablePools"] == []
    clock.t += 2  # past max(floor 10 s, 2 x startupSeconds 5 s)
    r.reconcile(body(kube))
    assert status(kube)["unavailablePools"] == ["t4-spot"]


def test_replica_failure_marks_pool_at_once(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    kube.deployments[(NS, "resnet50-int8-t4-spot")]["status"]["conditions"] = [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"},
    ]
    r.reconcile(body(kube))
    assert status(kube)["unavailablePools"] == ["t4-spot"]


def test_listeners_see_every_outcome(kube: FakeKube, clock: Clock) -> None:
    seen: list[Any] = []

    def broken(out: Any) -> None:
        raise RuntimeError("metrics exporter bug")

    r = Reconciler(kube=kube, clock=clock, policy=interim, listeners=[seen.append, broken])
    out = r.reconcile(body(kube))
    assert seen == [out]
    assert out.namespace == NS and out.name == NAME and out.decision is not None
    assert out.placements[0].key == ("int8", "t4-spot") and out.cost_per_hour == 0.201
    assert out.duration_seconds >= 0
    kube.fail("apply", "Deployment/")
    edit_spec(kube, lambda s: s["scaling"].update(minReplicas=2))
    with pytest.raises(ReconcileError):
        r.reconcile(body(kube))
    assert seen[-1].failure and seen[-1].name == NAME


# ------------------------------------------------------------- with the real planner


def test_planner_is_plugged_in(kube: FakeKube) -> None:
    assert Reconciler(kube=kube).policy is autoscale.decide


def test_planner_initial_plan_without_signals(kube: FakeKube, clock: Clock) -> None:
    r = Reconciler(kube=kube, clock=clock)
    out = r.reconcile(body(kube))
    assert out.decision is not None and out.decision.reason == "InitialPlan"
    assert out.created and kube.services
    assert status(kube)["lastDecision"]["reason"] == "InitialPlan"
    assert cond(kube, "SignalsAvailable")["status"] == "False"
    assert isinstance(status(kube)["autoscaler"], dict) and status(kube)["autoscaler"]


def test_planner_scales_with_load_and_keeps_old_until_ready(
    kube: FakeKube, clock: Clock
) -> None:
    signals = FixedSignals(Observation(rps=50.0, latency_ms=5.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    r.reconcile(body(kube))
    for name in kube.deployment_names():
        kube.set_ready(name)
    first = status(kube)["desiredReplicas"]
    signals.obs = Observation(rps=3000.0, latency_ms=40.0)
    for _ in range(6):
        clock.t += 15
        r.reconcile(body(kube))
        for name in kube.deployment_names():
            kube.set_ready(name)
    s = status(kube)
    assert s["desiredReplicas"] > first
    assert s["lastDecision"]["reason"] in {"ScaledUp", "Transitioning", "Held", "OverBudget"}
    assert cond(kube, "SLOMet")["status"] == "False"


def test_forget_reaches_signals_and_listeners(kube: FakeKube, clock: Clock) -> None:
    forgotten: list[tuple[str, str, str]] = []

    class Part:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def observe(self, namespace: str, name: str, spec: Any) -> Observation:
            return Observation(rps=None)

        def __call__(self, out: Any) -> None:
            pass

        def forget(self, namespace: str, name: str) -> None:
            forgotten.append((self.tag, namespace, name))

    r = Reconciler(kube=kube, signals=Part("signals"), clock=clock, listeners=[Part("metrics")])
    r.reconcile(body(kube))
    r.forget(UID, NS, NAME)
    assert forgotten == [("signals", NS, NAME), ("metrics", NS, NAME)]


def test_read_errors_are_retryable(kube: FakeKube, r: Reconciler) -> None:
    kube.fail("list_deployments", error=KubeAPIError(503, "ServiceUnavailable"))
    with pytest.raises(ReconcileError):
        r.reconcile(body(kube))
    kube.fail("get_scaledmodel", error=KubeAPIError(None, "connection refused"))
    with pytest.raises(ReconcileError):
        r.refresh(NS, NAME)
    assert r.refresh(NS, "gone") is None
    assert r.reconcile(body(kube)).valid


def test_stale_event_bodies_do_not_rewind_state(
    kube: FakeKube, r: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kopf may hand over a queued body older than the status we last wrote."""
    seen: list[Any] = []

    def fake(spec: Any, obs: Any, state: Any, now: float) -> Decision:
        seen.append(state)
        return Decision(placements=(Placement("int8", "t4-spot", 1),), reason="X", message="m",
                        state={"n": len(seen)})

    r.policy = fake
    stale = body(kube)  # no status yet
    r.reconcile(stale)
    kube.reset_calls()
    r.reconcile(stale)  # same stale body again
    assert seen == [None, {"n": 1}]
    assert [e for e in kube.events if e[1] == "X"] == []  # the plan did not change
    # A refresh whose read returns an old status still converges to the recorded plan.
    kube.scaledmodels[(NS, NAME)].pop("status")
    out = r.refresh(NS, NAME)
    assert out is not None and not out.decided


def test_status_cache_dropped_after_failed_write(kube: FakeKube, r: Reconciler) -> None:
    r.reconcile(body(kube))
    kube.fail("patch_status")
    edit_spec(kube, lambda s: s["scaling"].update(minReplicas=2))
    with pytest.raises(ReconcileError):
        r.reconcile(body(kube))
    assert r._status == {}
    r.reconcile(body(kube))
    assert status(kube)["observedGeneration"] == 2


def test_tick_loop_skips_models_that_are_not_due(
    kube: FakeKube, r: Reconciler, clock: Clock
) -> None:
    """The operator-wide loop asks ``due`` (two reads of the body) before handing a
    model to a worker: at a slot boundary before intervalSeconds passed (a spec change
    decided just now) nothing is queued and nothing is called."""
    from tritonscale.core.fleet import phase
    from tritonscale.handlers.ticker import TickLoop

    b = body(kube)
    r.reconcile(b)
    kube.reset_calls()
    loop = TickLoop(entries=lambda: [b], tick=lambda body: None, due=r.due, clock=clock)
    start = clock.t - (clock.t % 15) + phase(UID, 15)  # a slot boundary of this model
    assert loop.scan(start - 0.5, start + 0.5) == []  # decided < 15 s ago
    clock.t += 15
    assert not loop.scan(clock.t - 0.5, clock.t)  # due, but no slot boundary passed
    assert loop.scan(start + 14.5, start + 15.5) == [b]
    assert kube.calls == []


def test_a_hung_prometheus_resolver_holds_the_plan_within_the_query_timeout(
    kube: FakeKube, clock: Clock, hung_resolver: threading.Event
) -> None:
    """The real signal source and Prometheus adapter against a resolver that never
    answers: the tick returns within the query timeout, the plan holds (like any
    signal outage), status names the failure, and the next tick does not wait again."""
    signals = FixedSignals(Observation(rps=50.0, latency_ms=5.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    r.reconcile(body(kube))
    before = {n: d["spec"]["replicas"] for (_, n), d in kube.deployments.items()}
    assert before

    def hung(spec: dict[str, Any]) -> None:
        spec["metrics"]["prometheus"].update(url=f"http://{HUNG_HOST}:9090",
                                             timeoutSeconds=1.0)

    edit_spec(kube, hung)
    r.signals = SpecSignalSource()
    for _ in range(2):
        clock.t += 20
        started = time.monotonic()
        out = r.tick(body(kube))
        took = time.monotonic() - started
        assert out is not None and out.decided
        # Bounded by the 1-s query timeout, far below the resolver's 30-s hang (the
        # margin is for a starved machine; 1 s lets the worker reach the resolver).
        assert took < 10.0, took
        assert {n: d["spec"]["replicas"] for (_, n), d in kube.deployments.items()} == before
        assert status(kube)["observed"]["error"].startswith(
            "Prometheus: host name lookup timed out")
        assert cond(kube, "SignalsAvailable")["status"] == "False"
    # The second tick found the breaker open: no second wait on the resolver.
    assert "not retried" in status(kube)["observed"]["error"]


# -- Deployments named by an older operator ----------------------------------------------
#
# Before "--" separated a hyphenated variant from its pool (core/render.py
# deployment_name), variant "int8-trt" on pool "t4-spot" was Deployment
# resnet50-int8-trt-t4-spot; today it is resnet50-int8-trt--t4-spot. What a Deployment
# holds comes from its labels and owner reference, never from its name: after an
# upgrade, the old one must keep being managed (not doubled) and be deleted when its
# placement leaves the plan (not left running while a name it never had is deleted).

LEGACY = "resnet50-int8-trt-t4-spot"
CURRENT = "resnet50-int8-trt--t4-spot"


def _hyphenated(kube: FakeKube) -> None:
    def rename(spec: dict[str, Any]) -> None:
        for v in spec["variants"]:
            if v["name"] == "int8":
                v["name"] = "int8-trt"
        for e in spec["scaling"].get("safePlan") or ():
            if e["variant"] == "int8":
                e["variant"] = "int8-trt"

    edit_spec(kube, rename)


def _old_deployment(kube: FakeKube, name: str, replicas: int, ready: int) -> None:
    """A Deployment an older operator created: ours by labels and owner reference."""
    dep = get_deployment(Owner(name=NAME, namespace=NS, uid=UID),
                         parse_manifest(body(kube))[2],
                         Placement("int8-trt", "t4-spot", replicas))
    dep["metadata"]["name"] = name
    dep["status"] = {"readyReplicas": ready}
    kube.deployments[(NS, name)] = dep


def _theirs(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "theirs"}},
            "spec": {"replicas": 3}}


def test_a_deployment_named_by_an_older_operator_is_kept_managed_not_doubled(
    kube: FakeKube, r: Reconciler
) -> None:
    _hyphenated(kube)
    _old_deployment(kube, LEGACY, replicas=1, ready=1)
    kube.deployments[(NS, CURRENT)] = _theirs(CURRENT)  # in the way of nothing of ours
    use_plan(r, Placement("int8-trt", "t4-spot", 2))
    out = r.reconcile(body(kube))
    assert out.valid and not out.failure and not out.created and out.updated == (LEGACY,)
    assert kube.deployment_names() == [CURRENT, LEGACY]
    assert kube.deployments[(NS, LEGACY)]["spec"]["replicas"] == 2
    assert kube.deployments[(NS, CURRENT)] == _theirs(CURRENT)
    assert status(kube)["placements"][0]["deployment"] == LEGACY


def test_a_deployment_named_by_an_older_operator_is_deleted_when_it_leaves_the_plan(
    kube: FakeKube, r: Reconciler
) -> None:
    _hyphenated(kube)
    _old_deployment(kube, LEGACY, replicas=1, ready=1)
    # Somebody else's Deployment with the name today's naming gives that placement:
    # never ours to delete.
    kube.deployments[(NS, CURRENT)] = _theirs(CURRENT)
    use_plan(r, Placement("fp16", "t4-spot", 1))
    r.reconcile(body(kube))
    kube.set_ready("resnet50-fp16-t4-spot")
    r.reconcile(body(kube))
    assert kube.deployment_names() == sorted([CURRENT, "resnet50-fp16-t4-spot"])
    assert ("delete_deployment", f"{NS}/{CURRENT}") not in kube.calls
    assert any(e[1] == "DeletedDeployment" and LEGACY in e[2] for e in kube.events)


def test_a_duplicate_left_by_an_upgrade_goes_once_the_current_one_is_ready(
    kube: FakeKube, r: Reconciler
) -> None:
    """An operator that parsed names created CURRENT beside LEGACY (both ours, same
    placement): the older one goes once the kept one has all its replicas Ready."""
    _hyphenated(kube)
    _old_deployment(kube, LEGACY, replicas=2, ready=2)
    _old_deployment(kube, CURRENT, replicas=2, ready=0)
    use_plan(r, Placement("int8-trt", "t4-spot", 2))
    r.reconcile(body(kube))
    assert kube.deployment_names() == [CURRENT, LEGACY]  # no capacity dropped yet
    assert [p["deployment"] for p in status(kube)["placements"]] == [CURRENT]
    kube.set_ready(CURRENT)
    r.reconcile(body(kube))
    assert kube.deployment_names() == [CURRENT]
    assert kube.deployments[(NS, CURRENT)]["spec"]["replicas"] == 2


def _indexed_model(kube: FakeKube) -> dict[str, list[dict[str, Any]]]:
    """What handlers/lifecycle.py's ``scaledmodels`` index holds: uid -> [body]."""
    return {UID: [body(kube)]}


def test_deployment_event_reads_the_model_from_the_index(kube: FakeKube, r: Reconciler) -> None:
    """A Deployment event refreshes its ScaledModel from the operator's own index:
    no GET of the ScaledModel per event (at 2,000 models, one per watch event)."""
    from tritonscale.handlers.lifecycle import _deployment_event

    r.reconcile(body(kube))
    kube.set_ready("resnet50-int8-t4-spot", namespace=NS)
    dep = copy.deepcopy(kube.deployments[(NS, "resnet50-int8-t4-spot")])
    memo = type("Memo", (), {"reconciler": r})()
    kube.reset_calls()
    _deployment_event("MODIFIED", dep, memo, None, _indexed_model(kube))
    assert ("get_scaledmodel", f"{NS}/{NAME}") not in kube.calls, kube.calls
    assert ("list_deployments", f"{NS}/{NAME}") in kube.calls  # it did refresh
    assert status(kube)["readyReplicas"] == 1
    # Not in the index (another shard's, not indexed yet): a GET, as before.
    dep["status"]["readyReplicas"] = 0
    kube.reset_calls()
    _deployment_event("MODIFIED", dep, memo, None, {})
    assert ("get_scaledmodel", f"{NS}/{NAME}") in kube.calls


def test_owned_service_deletion_reads_the_model_from_the_index(
    kube: FakeKube, r: Reconciler
) -> None:
    from tritonscale.handlers.lifecycle import _owned_deleted

    r.reconcile(body(kube))
    svc = copy.deepcopy(kube.services[(NS, NAME)])
    del kube.services[(NS, NAME)]
    memo = type("Memo", (), {"reconciler": r})()
    kube.reset_calls()
    _owned_deleted(svc, memo, None, _indexed_model(kube))
    assert ("get_scaledmodel", f"{NS}/{NAME}") not in kube.calls, kube.calls
    assert (NS, NAME) in kube.services  # applied again


def test_unchanged_spec_is_parsed_once(
    kube: FakeKube, r: Reconciler, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ticks of an unchanged spec reuse its parse; any change of the spec (by value,
    whatever the generation says) parses again, and an invalid one is refused."""
    from tritonscale.handlers import reconcile as rec

    parsed: list[str] = []
    real = rec.parse_manifest

    def counting(doc: Any) -> Any:
        parsed.append(doc["metadata"]["name"])
        return real(doc)

    monkeypatch.setattr(rec, "parse_manifest", counting)
    for _ in range(3):
        r.reconcile(body(kube))
        clock.t += 30
    assert len(parsed) == 1
    b = body(kube)
    b["spec"]["scaling"]["minReplicas"] = 2  # same generation: still noticed
    assert r.reconcile(b).placements[0].desired == 2
    assert len(parsed) == 2
    b["spec"]["scaling"]["minReplicas"] = -1
    assert r.reconcile(b).valid is False
    assert r.reconcile(b).valid is False
    assert len(parsed) == 4  # an invalid spec is never remembered
    r.forget(UID, NS, NAME)
    r.reconcile(body(kube))
    assert len(parsed) == 5


def _no_nulls(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _no_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_no_nulls(v) for v in obj]
    return obj


def _fresh_kube() -> FakeKube:
    return kube_with_example(NS, UID)


def _status_patches(cold: bool) -> list[str]:
    """The status patches of a series of passes (as JSON), each pass checked; ``cold``:
    the remembered status is forgotten before each pass (read from the object)."""
    kube, clock = _fresh_kube(), Clock()
    signals = FixedSignals(Observation(rps=50.0, latency_ms=20.0))
    r = Reconciler(kube=kube, signals=signals, clock=clock)
    # (what changes, decide): a pass without a decision (a Deployment event)
    # where nothing changed writes no patch.
    steps: list[tuple[Any, bool]] = [
        (lambda: None, True),
        (lambda: None, False),  # nothing changed: no patch
        (lambda: kube.set_ready("resnet50-int8-t4-ondemand"), False),
        (lambda: None, True),
        (lambda: setattr(signals, "obs", Observation(rps=900.0, latency_ms=60.0)), True),
        (lambda: None, False),  # nothing changed: no patch
        (lambda: setattr(signals, "obs", Observation(rps=None, error="down")), True),
        (lambda: edit_spec(kube, lambda s: s["scaling"].update(maxReplicas=3)), True),
        (lambda: None, True),
    ]
    written: list[str] = []
    for step, decide in steps:
        step()
        clock.t += 20
        if cold:
            r._status.clear()
        held = r._status.get(UID)
        snapshot = copy.deepcopy(held)
        before = len(kube.status_patches)
        out = r.reconcile(body(kube), decide=decide)
        assert held == snapshot  # the pass read the remembered status, changed none of it
        patches = kube.status_patches[before:]
        assert out.status_written == bool(patches) and len(patches) <= 1
        written.append(json.dumps(patches, sort_keys=True))
        # What the operator remembers is what the API server now holds.
        # (The fake keeps the nulls of a patched new object; an API server drops them.)
        assert _no_nulls(r._status[UID]) == _no_nulls(status(kube))
    return written


def test_status_patches_from_the_remembered_status_match_a_cold_read() -> None:
    """The reconciler reads the status it last wrote (not copied) and compares it with
    the new one cheaply: it must write exactly the patches, byte for byte, that a
    reconciler reading the status from the object each time writes; a pass whose
    status did not change writes none; no pass changes the remembered status."""
    warm, cold = _status_patches(cold=False), _status_patches(cold=True)
    assert warm == cold
    assert [w != "[]" for w in warm] == [True, False, True, True, True, False, True, True, True]

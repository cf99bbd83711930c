"""Objects the operator did not create are never adopted or overwritten."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.harness.fakes import FakeKube, kube_with_example

from tritonscale.core.placement import initial_placement
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Decision, Observation
from tritonscale.handlers import ownership
from tritonscale.handlers.reconcile import Reconciler

NS, NAME, UID = "ml", "resnet50", "uid-1"


def interim(spec: ScaledModelSpec, obs: Observation, state: Any, now: float) -> Decision:
    """The simple, predictable interim rule, injected as the Reconciler's policy."""
    return initial_placement(spec, obs.unavailable_pools)


@pytest.fixture
def kube() -> FakeKube:
    return kube_with_example(NS, UID)


def _body(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.scaledmodels[(NS, NAME)])


def _ready(kube: FakeKube) -> dict[str, Any]:
    conds = kube.scaledmodels[(NS, NAME)].get("status", {}).get("conditions", [])
    (c,) = [c for c in conds if c["type"] == "Ready"]
    return dict(c)


def _foreign_service(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"app": "theirs"}, **meta},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
    }


@pytest.mark.parametrize("meta", [
    {},  # no marks at all
    {"labels": {"app.kubernetes.io/managed-by": "tritonscale"}},  # label, no owner
    {"labels": {"app.kubernetes.io/managed-by": "tritonscale"},  # owner is another model
     "ownerReferences": [{"uid": "uid-other", "controller": True, "kind": "ScaledModel",
                          "name": "other", "apiVersion": "tritonscale.io/v1alpha1"}]},
    {"ownerReferences": [{"uid": UID, "controller": True, "kind": "ScaledModel",  # no label
                          "name": NAME, "apiVersion": "tritonscale.io/v1alpha1"}]},
])
def test_foreign_service_is_left_untouched(kube: FakeKube, meta: dict[str, Any]) -> None:
    theirs = _foreign_service(**meta)
    kube.services[(NS, NAME)] = copy.deepcopy(theirs)
    r = Reconciler(kube=kube, policy=interim)
    out = r.reconcile(_body(kube))
    assert kube.services[(NS, NAME)] == theirs
    assert kube.deployments == {}  # nothing else changed for the model
    assert [c for c in kube.writes() if c[0] not in ("patch_status", "event")] == []
    ready = _ready(kube)
    assert ready["status"] == "False" and ready["reason"] == "OwnershipConflict"
    assert f"Service/{NAME}" in ready["message"] and NS in ready["message"]
    assert [(t, why) for t, why, _ in kube.events] == [("Warning", "OwnershipConflict")]
    assert out.valid and not out.settled and out.errors

    # Every later pass: still untouched, and no second event.
    kube.reset_calls()
    for decide in (True, False, True):
        r.reconcile(_body(kube), decide=decide)
    assert kube.services[(NS, NAME)] == theirs and kube.deployments == {}
    assert kube.events == []

    # Once the foreign Service is gone, the model converges and Ready clears.
    del kube.services[(NS, NAME)]
    r.reconcile(_body(kube))
    assert kube.services[(NS, NAME)]["spec"]["selector"] != theirs["spec"]["selector"]
    assert kube.deployments
    assert _ready(kube)["reason"] != "OwnershipConflict"


def test_foreign_deployment_of_a_planned_name_is_left_untouched(kube: FakeKube) -> None:
    r = Reconciler(kube=kube, policy=interim)
    r.reconcile(_body(kube))
    (dname,) = kube.deployment_names()
    # Someone replaces our Deployment by their own of the same name.
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": dname, "namespace": NS, "labels": {"app": "x"}},
              "spec": {"replicas": 7}, "status": {"readyReplicas": 0}}
    kube.deployments[(NS, dname)] = copy.deepcopy(theirs)
    kube.reset_calls()
    r.reconcile(_body(kube))
    assert kube.deployments[(NS, dname)] == theirs
    assert [c for c in kube.writes() if c[0] not in ("patch_status", "event")] == []
    assert f"Deployment/{dname}" in _ready(kube)["message"]


def test_our_own_objects_are_not_conflicts(kube: FakeKube) -> None:
    r = Reconciler(kube=kube, policy=interim)
    r.reconcile(_body(kube))
    assert kube.services and kube.deployments
    r2 = Reconciler(kube=kube, policy=interim)  # a restarted operator re-applies the Service
    kube.reset_calls()
    r2.reconcile(_body(kube))
    assert ("get", f"Service/{NS}/{NAME}") in kube.calls
    assert not [e for e in kube.events if e[1] == "OwnershipConflict"]


def test_is_ours_needs_both_marks() -> None:
    ref = {"uid": UID, "controller": True}
    label = {"app.kubernetes.io/managed-by": "tritonscale"}
    assert ownership.is_ours({"metadata": {"labels": label, "ownerReferences": [ref]}}, UID)
    assert not ownership.is_ours({"metadata": {"labels": label}}, UID)
    assert not ownership.is_ours({"metadata": {"ownerReferences": [ref]}}, UID)
    assert not ownership.is_ours(
        {"metadata": {"labels": label, "ownerReferences": [dict(ref, controller=False)]}}, UID)
    assert not ownership.is_ours({"metadata": {"labels": label, "ownerReferences": [ref]}}, "u2")

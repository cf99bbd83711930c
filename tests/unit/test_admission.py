"""Operator-wide admission (core/admission.py via the Reconciler): a disallowed image or
a second ScaledModel for the same Triton model in a namespace gets SpecValid=False with
the reason, one event, and nothing applied."""

from __future__ import annotations

import copy
from typing import Any

from tests.harness.fakes import FakeKube, load_example

from tritonscale.core.admission import Claim, ImagePolicy, model_name_errors
from tritonscale.handlers.reconcile import Reconciler

NS = "ml"


def _doc(name: str, uid: str, created: str, model: str = "resnet50",
         image: str | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(load_example("resnet50.yaml"))
    doc["metadata"].update(name=name, namespace=NS, uid=uid, generation=1,
                           creationTimestamp=created)
    doc["spec"]["model"]["name"] = model
    if image is not None:
        doc["spec"]["model"]["tritonImage"] = image
    return doc


def _cond(kube: FakeKube, name: str) -> dict[str, Any]:
    conds = kube.scaledmodels[(NS, name)].get("status", {}).get("conditions", [])
    return next(dict(c) for c in conds if c["type"] == "SpecValid")


def test_image_policy_globs() -> None:
    p = ImagePolicy.parse(["nvcr.io/nvidia/tritonserver:*", " registry.example.com/t/* "])
    assert p.allows("nvcr.io/nvidia/tritonserver:24.10-py3")
    assert p.allows("registry.example.com/t/triton@sha256:abc")
    assert not p.allows("nvcr.io/nvidia/tritonserver-evil:1")
    assert not p.allows("registry.example.com.evil.io/t/x")
    assert not p.allows("docker.io/library/busybox")
    assert ImagePolicy.parse(["", " "]).allows("anything")  # empty: any image


def test_disallowed_image_sets_condition_and_applies_nothing() -> None:
    kube = FakeKube()
    kube.add_scaledmodel(_doc("a", "u1", "2026-01-01T00:00:00Z", image="evil.io/miner:1"))
    r = Reconciler(kube=kube, image_policy=ImagePolicy.parse(["nvcr.io/nvidia/tritonserver:*"]))
    out = r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "a")]))
    assert not out.valid
    c = _cond(kube, "a")
    assert (c["status"], c["reason"]) == ("False", "ImageNotAllowed")
    assert "evil.io/miner:1" in c["message"] and "spec.model.tritonImage" in c["message"]
    assert kube.deployment_names() == [] and not kube.services
    assert [e[1] for e in kube.events] == ["ImageNotAllowed"]
    # Allowed image (the default one): reconciled normally.
    kube.scaledmodels[(NS, "a")]["spec"]["model"].pop("tritonImage")
    kube.scaledmodels[(NS, "a")]["metadata"]["generation"] = 2
    assert r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "a")])).valid
    assert kube.deployment_names()


def test_second_scaledmodel_for_the_same_model_is_refused() -> None:
    kube = FakeKube()
    kube.add_scaledmodel(_doc("old", "u1", "2026-01-01T00:00:00Z"))
    kube.add_scaledmodel(_doc("new", "u2", "2026-01-02T00:00:00Z"))
    r = Reconciler(kube=kube)
    # The Kopf index tells the reconciler about both before any handler runs.
    for name, uid in (("new", "u2"), ("old", "u1")):
        r.claim(uid, kube.scaledmodels[(NS, name)])
    assert not r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "new")])).valid
    c = _cond(kube, "new")
    assert c["reason"] == "ModelNameConflict" and "'old'" in c["message"]
    assert not any(n.startswith("new-") for n in kube.deployment_names())
    assert r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "old")])).valid
    # The older one goes away: the newer one is admitted.
    r.forget("u1", NS, "old")
    kube.scaledmodels[(NS, "new")]["metadata"]["generation"] = 2
    assert r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "new")])).valid


def test_renaming_the_model_releases_the_old_name() -> None:
    """Claims are kept by (namespace, model name): a ScaledModel that moves to another
    model name no longer blocks its old namesake, and blocks its new one."""
    kube = FakeKube()
    kube.add_scaledmodel(_doc("old", "u1", "2026-01-01T00:00:00Z"))
    kube.add_scaledmodel(_doc("new", "u2", "2026-01-02T00:00:00Z"))
    r = Reconciler(kube=kube)
    for name, uid in (("old", "u1"), ("new", "u2")):
        r.claim(uid, kube.scaledmodels[(NS, name)])
    assert not r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "new")])).valid
    old = kube.scaledmodels[(NS, "old")]
    model = old["spec"]["model"]["name"]
    old["spec"]["model"]["name"] = model + "-moved"
    old["metadata"]["generation"] = 2
    r.claim("u1", old)
    kube.scaledmodels[(NS, "new")]["metadata"]["generation"] = 2
    assert r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "new")])).valid
    # A third one on the moved-to name is refused (the older "old" serves it now).
    third = _doc("third", "u3", "2026-01-03T00:00:00Z")
    third["spec"]["model"]["name"] = model + "-moved"
    kube.add_scaledmodel(third)
    r.claim("u3", third)
    assert not r.reconcile(copy.deepcopy(kube.scaledmodels[(NS, "third")])).valid


def test_model_name_rule_is_per_namespace_and_model() -> None:
    me = Claim("ns", "b", "m", "2026-01-02T00:00:00Z")
    assert model_name_errors(me, [Claim("other", "a", "m", "2026-01-01T00:00:00Z")]) == []
    assert model_name_errors(me, [Claim("ns", "a", "x", "2026-01-01T00:00:00Z")]) == []
    assert model_name_errors(me, [Claim("ns", "c", "m", "2026-01-03T00:00:00Z")]) == []
    assert model_name_errors(me, [Claim("ns", "a", "m", "2026-01-02T00:00:00Z")])  # tie: name
    assert model_name_errors(me, [Claim("ns", "a", "m", "2026-01-01T00:00:00Z")])

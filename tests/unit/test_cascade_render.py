"""Serving a cascade: the router in the tier-1 pods, the tier-2 Service, the threshold
ConfigMap (core/cascade_render.py through core/render.py) and their reconciliation."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any

import pytest
from tests.harness.fakes import Clock, FakeKube, load_example

from tritonscale.core import cascade_render as cr
from tritonscale.core.api import ANNOTATION_SPEC_HASH, LABEL_VARIANT
from tritonscale.core.render import (
    DEFAULT_OPTIONS,
    Owner,
    get_cascade_objects,
    get_deployment,
    get_service,
    summary_quantiles,
)
from tritonscale.core.spec import ScaledModelSpec, SpecError, parse_manifest
from tritonscale.core.types import Observation, Placement
from tritonscale.handlers.reconcile import Reconciler
from tritonscale.router import router_source

NS, NAME, UID = "ml", "bert-cascade", "uid-c"
OWNER = Owner(NAME, NS, UID)
OPTIONS = replace(DEFAULT_OPTIONS, router_source=router_source())
TIER1, TIER2 = "distil-int8", "large-int8"


def _doc() -> dict[str, Any]:
    doc = load_example("bert-cascade.yaml")
    doc["metadata"].update(namespace=NS, uid=UID, generation=1)
    return doc


def _spec(doc: dict[str, Any] | None = None) -> ScaledModelSpec:
    return parse_manifest(doc if doc is not None else _doc())[2]


def _dep(spec: ScaledModelSpec, variant: str, pool: str = "t4-spot") -> dict[str, Any]:
    return get_deployment(OWNER, spec, Placement(variant, pool, 2), OPTIONS)


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def _objs(spec: ScaledModelSpec, threshold: float) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in get_cascade_objects(OWNER, spec, threshold,
                                                                 OPTIONS)}


# ------------------------------------------------------------------ rendering


def test_tier1_pods_load_the_router_from_its_configmap() -> None:
    spec = _spec()
    c = _container(_dep(spec, TIER1))
    args = c["args"]
    assert "--model-repository=/cascade/models" in args
    assert "--load-model=bert-qa-cascade" in args and "--load-model=bert-qa" in args
    pod = _dep(spec, TIER1)["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    router = vols["cascade-router"]["configMap"]
    assert router["name"] == "bert-cascade-router"
    # The keys laid out as a Triton model repository: <model>/config.pbtxt, <model>/1/model.py
    assert {(i["key"], i["path"]) for i in router["items"]} == {
        ("config.pbtxt", "bert-qa-cascade/config.pbtxt"),
        ("model.py", "bert-qa-cascade/1/model.py"),
    }
    assert vols["cascade-threshold"]["configMap"] == {"name": "bert-cascade-threshold"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    # A directory mount, never subPath: the kubelet then updates the file in place.
    assert mounts["cascade-threshold"] == {
        "name": "cascade-threshold", "mountPath": "/cascade/threshold", "readOnly": True}
    assert not any("subPath" in m for m in c["volumeMounts"])
    assert mounts["cascade-router"]["mountPath"] == "/cascade/models"


def test_tier2_pods_carry_no_router() -> None:
    spec = _spec()
    dep = _dep(spec, TIER2)
    c = _container(dep)
    assert not any("cascade" in a for a in c["args"])
    assert not any(v["name"].startswith("cascade") for v in dep["spec"]["template"]["spec"][
        "volumes"])
    assert cr.ANNOTATION_ROUTER_HASH not in dep["spec"]["template"]["metadata"]["annotations"]


def test_services_split_the_tiers() -> None:
    spec = _spec()
    main = get_service(OWNER, spec)
    assert main["metadata"]["name"] == NAME
    assert main["spec"]["selector"][LABEL_VARIANT] == TIER1
    tier2 = _objs(spec, 0.5)["bert-cascade-tier2"]
    assert tier2["kind"] == "Service"
    assert tier2["spec"]["selector"] == {"tritonscale.io/scaledmodel": NAME,
                                         LABEL_VARIANT: TIER2}
    assert {p["port"] for p in tier2["spec"]["ports"]} >= {8000}


def test_without_cascade_nothing_changes() -> None:
    doc = load_example("resnet50.yaml")
    spec = parse_manifest(doc)[2]
    owner = Owner("resnet50", "default", "u")
    assert get_cascade_objects(owner, spec, 0.5, OPTIONS) == []
    assert LABEL_VARIANT not in get_service(owner, spec)["spec"]["selector"]
    dep = get_deployment(owner, spec, Placement("int8", "t4-spot", 1), OPTIONS)
    assert get_deployment(owner, spec, Placement("int8", "t4-spot", 1)) == dep


def test_router_config_declares_the_tensors_and_the_operators_own_url() -> None:
    spec = _spec()
    cm = _objs(spec, 0.7)["bert-cascade-router"]
    assert cm["data"]["model.py"] == router_source()
    cfg = cm["data"]["config.pbtxt"]
    assert 'name: "bert-qa-cascade"' in cfg and 'backend: "python"' in cfg
    assert "max_batch_size: 64" in cfg
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ 384 ] }' in cfg
    assert '{ name: "CONFIDENCE" data_type: TYPE_FP32 dims: [ 1 ] }' in cfg
    params = dict(re.findall(r'key: "(\w+)" value: \{ string_value: "([^"]*)" \}', cfg))
    assert params == {
        "tier1_model": "bert-qa", "tier2_model": "bert-qa",
        "tier2_url": "http://bert-cascade-tier2.ml.svc:8000",
        "confidence_output": "CONFIDENCE",
        "threshold": "0.5",  # the least escalating point within the floor
        "threshold_file": "/cascade/threshold/threshold", "tier1_timeout_s": "10",
        "tier2_timeout_s": "10", "workers": "256", "max_pending": "1024",
    }
    # Each request is answered on its own (model.py): the router's batcher only saves
    # executes, and two instances spread the router's Python work.
    assert "dynamic_batching { }" in cfg and "count: 2 kind: KIND_CPU" in cfg
    # Balanced braces/brackets: one well-formed text block.
    assert cfg.count("{") == cfg.count("}") and cfg.count("[") == cfg.count("]")


def test_objects_are_owned_and_labelled() -> None:
    for obj in _objs(_spec(), 0.5).values():
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [OWNER.reference()]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "tritonscale"


def test_threshold_change_touches_only_the_threshold_configmap() -> None:
    spec = _spec()
    a, b = _objs(spec, 0.5), _objs(spec, 0.9)
    assert a["bert-cascade-threshold"]["data"] == {"threshold": "0.5\n"}
    assert b["bert-cascade-threshold"]["data"] == {"threshold": "0.9\n"}
    for name in ("bert-cascade-router", "bert-cascade-tier2"):
        assert a[name] == b[name]
    # The pod template never carries the threshold (the latency summary's quantiles,
    # 0.9 among them, are another matter).
    quantiles = summary_quantiles(spec.slo.latency.percentile)
    assert "0.9" not in str(_dep(spec, TIER1)["spec"]["template"]).replace(quantiles, "")


def test_a_changed_router_rolls_tier1_only() -> None:
    spec = _spec()
    other = replace(OPTIONS, router_source=router_source() + "\n# v2\n")
    t1 = get_deployment(OWNER, spec, Placement(TIER1, "t4-spot", 1), OPTIONS)
    t1b = get_deployment(OWNER, spec, Placement(TIER1, "t4-spot", 1), other)
    t2 = get_deployment(OWNER, spec, Placement(TIER2, "t4-spot", 1), OPTIONS)
    t2b = get_deployment(OWNER, spec, Placement(TIER2, "t4-spot", 1), other)
    ann = ANNOTATION_SPEC_HASH
    assert t1["metadata"]["annotations"][ann] != t1b["metadata"]["annotations"][ann]
    assert t2 == t2b


def test_rendering_a_cascade_needs_the_router_source() -> None:
    with pytest.raises(ValueError, match=r"model\.py"):
        get_deployment(OWNER, _spec(), Placement(TIER1, "t4-spot", 1))


@pytest.mark.parametrize(("state", "want"), [
    ({"threshold": 0.9}, 0.9),
    ({"threshold": 0.7}, 0.7),
    ({"threshold": 0.65}, 0.5),   # not a point of the curve
    ({"threshold": 0.0}, 0.0),    # tier 1 alone (the accuracy budget allows it)
    ({"threshold": -0.5}, 0.5),
    ({"threshold": True}, 0.5),
    ({"threshold": "0.9"}, 0.5),
    ({}, 0.5),
    (None, 0.5),
    ("garbage", 0.5),
])
def test_published_threshold_trusts_only_points_of_the_curve(state: Any, want: float) -> None:
    assert cr.published_threshold(_spec(), state) == want


def test_initial_threshold_is_the_least_escalating_within_the_floor() -> None:
    doc = _doc()
    doc["spec"]["slo"]["minAccuracy"] = 0.895  # 0.5 (0.8925) is below the floor
    assert cr.initial_threshold(_spec(doc)) == 0.7


@pytest.mark.parametrize(("path", "value", "field"), [
    (("cascade", "io", "inputs", 0, "name"), 'x" } ] parameters', "spec.cascade.io.inputs[0].name"),
    (("cascade", "confidence", "output"), "CONF\nIDENCE", "spec.cascade.confidence.output"),
    # A trailing newline: Python's "$" also matches before it (RE2, the CRD's, does not).
    (("cascade", "io", "inputs", 0, "name"), "INPUT\n", "spec.cascade.io.inputs[0].name"),
    (("model", "name"), "bert\n", "spec.model.name"),
    (("model", "name"), 'bert"qa', "spec.model.name"),
    (("model", "name"), "../etc", "spec.model.name"),
    (("cascade", "io", "outputs", 0, "dataType"), "BYTES",
     "spec.cascade.io.outputs[0].dataType"),
])
def test_untrusted_names_never_reach_the_router_config(
        path: tuple[Any, ...], value: str, field: str) -> None:
    doc = _doc()
    obj: Any = doc["spec"]
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value
    with pytest.raises(SpecError) as ei:
        parse_manifest(doc)
    assert field in {e.path for e in ei.value.errors}


def test_io_is_required() -> None:
    doc = _doc()
    del doc["spec"]["cascade"]["io"]
    with pytest.raises(SpecError) as ei:
        parse_manifest(doc)
    assert "spec.cascade.io" in {e.path for e in ei.value.errors}


# ------------------------------------------------------------------ reconciling


class Signals:
    def __init__(self, rps: float) -> None:
        self.obs = Observation(rps=rps, latency_ms=10.0, pending=0.0)

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        return self.obs


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add_scaledmodel(_doc())
    return k


def _body(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.scaledmodels[(NS, NAME)])


def _threshold(kube: FakeKube) -> str:
    return str(kube.configmaps[(NS, "bert-cascade-threshold")]["data"]["threshold"]).strip()


def test_reconcile_applies_the_cascade_and_is_make_before_break(kube: FakeKube) -> None:
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, signals=Signals(200.0))
    r.reconcile(_body(kube))
    assert sorted(n for _, n in kube.services) == ["bert-cascade", "bert-cascade-tier2"]
    assert sorted(n for _, n in kube.configmaps) == ["bert-cascade-router",
                                                      "bert-cascade-threshold"]
    tier1 = f"{NAME}-{TIER1}--t4-spot"
    tier2 = f"{NAME}-{TIER2}--t4-spot"
    assert kube.deployment_names() == [tier1, tier2]
    cascade = kube.scaledmodels[(NS, NAME)]["status"]["lastDecision"]["details"]["cascade"]
    # Tier 2 is not Ready: the router keeps the least escalating threshold.
    assert cascade["targetThreshold"] == 0.9 and cascade["threshold"] == 0.5
    assert _threshold(kube) == "0.5"
    template = copy.deepcopy(kube.deployments[(NS, tier1)]["spec"]["template"])

    # Tier 1 Ready, tier 2 not: still no raise.
    kube.set_ready(tier1, namespace=NS)
    clock.t += 120
    r.reconcile(_body(kube))
    assert _threshold(kube) == "0.5"

    # Tier 2 Ready: the planned threshold is published; only the ConfigMap changes.
    kube.set_ready(tier2, namespace=NS)
    clock.t += 120
    kube.reset_calls()
    r.reconcile(_body(kube))
    status = kube.scaledmodels[(NS, NAME)]["status"]
    assert status["lastDecision"]["details"]["cascade"]["threshold"] == 0.9
    assert _threshold(kube) == "0.9"
    applied = [t for m, t in kube.writes() if m == "apply"]
    assert applied == [f"ConfigMap/{NS}/bert-cascade-threshold"]
    assert kube.deployments[(NS, tier1)]["spec"]["template"] == template
    assert ("Normal", "ThresholdChanged") in {(t, r_) for t, r_, _ in kube.events}

    # A quiet pass writes nothing.
    clock.t += 120
    kube.reset_calls()
    r.reconcile(_body(kube))
    assert not [c for c in kube.writes() if c[0] == "apply"]


def test_foreign_configmap_is_never_adopted(kube: FakeKube) -> None:
    kube.configmaps[(NS, "bert-cascade-threshold")] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bert-cascade-threshold", "namespace": NS},
        "data": {"threshold": "mine"}}
    r = Reconciler(kube=kube, clock=Clock(), signals=Signals(200.0))
    out = r.reconcile(_body(kube))
    assert not out.settled
    assert kube.configmaps[(NS, "bert-cascade-threshold")]["data"] == {"threshold": "mine"}
    assert not kube.deployments and not [c for c in kube.writes() if c[0] == "apply"]
    ready = {c["type"]: c for c in kube.scaledmodels[(NS, NAME)]["status"]["conditions"]}
    assert ready["Ready"]["reason"] == "OwnershipConflict"
    assert "ConfigMap/bert-cascade-threshold" in ready["Ready"]["message"]


def test_removing_the_cascade_prunes_its_objects(kube: FakeKube) -> None:
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, signals=Signals(200.0))
    r.reconcile(_body(kube))
    assert (NS, "bert-cascade-tier2") in kube.services
    # Somebody else's ConfigMap of another name stays.
    kube.configmaps[(NS, "other")] = {"metadata": {"name": "other", "namespace": NS}}
    obj = kube.scaledmodels[(NS, NAME)]
    del obj["spec"]["cascade"]
    obj["spec"]["slo"]["minAccuracy"] = 0.85
    obj["metadata"]["generation"] = 2
    clock.t += 120
    r.reconcile(_body(kube))
    assert sorted(n for _, n in kube.services) == ["bert-cascade"]
    assert sorted(n for _, n in kube.configmaps) == ["other"]
    assert LABEL_VARIANT not in kube.services[(NS, NAME)]["spec"]["selector"]


def test_a_deleted_cascade_configmap_is_back_at_the_next_decision(kube: FakeKube) -> None:
    """ConfigMaps are not watched (no list/watch of them in the operator's RBAC): a tick
    checks that the ones it applied still exist, instead of waiting for the refresh
    service_refresh_seconds (600 s) later; new tier-1 pods cannot start without them."""
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, signals=Signals(200.0))
    r.reconcile(_body(kube))
    router = kube.configmaps.pop((NS, "bert-cascade-router"))
    threshold = kube.configmaps.pop((NS, "bert-cascade-threshold"))
    clock.t += 60  # one decision later, far before the refresh (service_refresh_seconds)
    assert r.service_refresh_seconds > 60
    kube.reset_calls()
    out = r.tick(_body(kube))
    assert out is not None and out.decided
    assert kube.configmaps[(NS, "bert-cascade-router")] == router
    assert kube.configmaps[(NS, "bert-cascade-threshold")] == threshold
    assert sorted(t for m, t in kube.writes() if m == "apply") == [
        f"ConfigMap/{NS}/bert-cascade-router", f"ConfigMap/{NS}/bert-cascade-threshold"]
    # While they exist, a tick only reads them.
    clock.t += 60
    kube.reset_calls()
    r.tick(_body(kube))
    assert not [c for c in kube.writes() if c[0] == "apply"]


def test_a_deleted_service_is_applied_again_when_its_deletion_is_seen(kube: FakeKube) -> None:
    """Services are watched (handlers/lifecycle.py on_owned_service): the deletion of
    one of ours converges its ScaledModel at once, not at the 600-s refresh."""
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, signals=Signals(200.0))
    r.reconcile(_body(kube))
    for sname in (NAME, f"{NAME}-tier2"):
        svc = kube.services.pop((NS, sname))
        clock.t += 1
        out = r.owned_object_deleted(svc)
        assert out is not None and not out.decided
        assert kube.services[(NS, sname)] == svc
    # Not ours (no controller reference to the ScaledModel): ignored, nothing read.
    kube.reset_calls()
    theirs = {"metadata": {"name": "x", "namespace": NS, "labels": {
        "tritonscale.io/scaledmodel": NAME, "app.kubernetes.io/managed-by": "tritonscale"}}}
    assert r.owned_object_deleted(theirs) is None
    assert kube.calls == []

"""Rendered Deployments and Service: production-grade Triton pods."""

from __future__ import annotations

import copy
from typing import Any

from tritonscale.core import render
from tritonscale.core.render import Owner, RenderOptions
from tritonscale.core.spec import parse_spec
from tritonscale.core.types import Placement

OWNER = Owner(name="resnet50", namespace="ml", uid="uid-1")


def _spec(doc: dict[str, Any]) -> Any:
    return parse_spec(doc["spec"])


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def test_deployment_identity_labels_and_owner(resnet50: dict[str, Any]) -> None:
    dep = render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 3))
    meta = dep["metadata"]
    assert meta["name"] == "resnet50-int8-t4-spot"
    assert meta["namespace"] == "ml"
    assert dep["spec"]["replicas"] == 3
    ref = meta["ownerReferences"][0]
    assert ref == {
        "apiVersion": "tritonscale.io/v1alpha1", "kind": "ScaledModel", "name": "resnet50",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True,
    }
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for labels in (meta["labels"], pod_labels):
        assert labels["tritonscale.io/scaledmodel"] == "resnet50"
        assert labels["tritonscale.io/variant"] == "int8"
        assert labels["tritonscale.io/pool"] == "t4-spot"
        assert labels["app.kubernetes.io/managed-by"] == "tritonscale"
        for k in ("name", "instance", "component", "part-of"):
            assert f"app.kubernetes.io/{k}" in labels
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel == {
        "tritonscale.io/scaledmodel": "resnet50",
        "tritonscale.io/variant": "int8",
        "tritonscale.io/pool": "t4-spot",
    }
    assert all(pod_labels[k] == v for k, v in sel.items())
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_triton_args(resnet50: dict[str, Any]) -> None:
    resnet50["spec"]["model"]["args"] = ["--log-verbose=1"]
    args = _container(
        render.get_deployment(OWNER, _spec(resnet50), Placement("fp16", "a100-ondemand", 1))
    )["args"]
    assert args[0] == "tritonserver"
    assert "--model-repository=s3://models/resnet50" in args
    assert "--model-control-mode=explicit" in args
    assert "--load-model=resnet50" in args
    assert "--model-config-name=fp16" in args
    assert "--metrics-config=summary_latencies=true" in args
    for flag in ("--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert flag in args
    assert "--exit-timeout-secs=30" in args
    # The user's args come first, the operator's flags after them (the last value wins).
    assert args[1] == "--log-verbose=1"
    assert args[-1] == "--exit-timeout-secs=30"


def test_operator_flags_follow_user_args(resnet50: dict[str, Any]) -> None:
    """Even a value-taking flag at the end of args cannot swallow a port flag."""
    resnet50["spec"]["model"]["args"] = ["--log-file", "/tmp/t.log", "--log-verbose=1"]
    args = _container(
        render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 1))
    )["args"]
    assert args[1:4] == ["--log-file", "/tmp/t.log", "--log-verbose=1"]
    tail = args[4:]
    assert all(a.startswith("--") and "=" in a for a in tail)
    assert {a.split("=", 1)[0] for a in tail} >= {
        "--http-port", "--grpc-port", "--metrics-port", "--model-repository", "--load-model",
    }


def test_deployment_names_cannot_collide() -> None:
    """The audit's pair: variant a-b on pool c, variant a on pool b-c."""
    assert render.deployment_name("m", "a-b", "c") == "m-a-b--c"
    assert render.deployment_name("m", "a", "b-c") == "m-a-b-c"


def test_deployment_names_unique_over_many_pairs() -> None:
    parts = ["a", "b", "a-b", "b-c", "c", "a-b-c", "ab", "b-a"]
    pairs = [(v, p) for v in parts for p in parts]
    names = [render.deployment_name("m-x", v, p) for v, p in pairs]
    assert len(set(names)) == len(pairs)
    assert render.deployment_name("resnet50", "int8", "t4-spot") == "resnet50-int8-t4-spot"


def test_variant_repository_overrides_and_no_config_name(resnet50: dict[str, Any]) -> None:
    v = resnet50["spec"]["variants"][1]
    del v["configName"]
    v["repository"] = "gs://b/int8"
    args = _container(
        render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "l4-spot", 1))
    )["args"]
    assert "--model-repository=gs://b/int8" in args
    assert not any(a.startswith("--model-config-name") for a in args)


def test_probes_ports_and_startup_budget(resnet50: dict[str, Any]) -> None:
    spec = _spec(resnet50)
    dep = render.get_deployment(OWNER, spec, Placement("fp16", "a100-ondemand", 1))
    c = _container(dep)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002,
    }
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    sp = c["startupProbe"]
    assert sp["httpGet"]["path"] == "/v2/health/ready"
    startup = spec.pool("a100-ondemand").startup_seconds  # 180
    assert sp["failureThreshold"] * sp["periodSeconds"] >= startup * 1.2


def test_gpu_limits_selector_tolerations(resnet50: dict[str, Any]) -> None:
    spec = _spec(resnet50)
    dep = render.get_deployment(OWNER, spec, Placement("int8", "t4-spot", 2))
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["limits"]["memory"] == "8Gi"
    assert c["resources"]["requests"]["cpu"] == "2"
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "g4dn.xlarge", "karpenter.sh/capacity-type": "spot",
    }
    assert {"key": "tritonscale.io/spot", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_cpu_pool_has_no_gpu_limit(resnet50: dict[str, Any]) -> None:
    resnet50["spec"]["nodePools"][0]["gpusPerReplica"] = 0
    dep = render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 1))
    res = _container(dep)["resources"]
    assert "nvidia.com/gpu" not in res.get("limits", {})
    assert "nvidia.com/gpu" not in res.get("requests", {})


def test_graceful_termination_and_security(resnet50: dict[str, Any]) -> None:
    opts = RenderOptions(exit_timeout_seconds=40, drain_seconds=7)
    dep = render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 1), opts)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--exit-timeout-secs=40" in c["args"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert pod["terminationGracePeriodSeconds"] > 40 + 7
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/dev/shm"} <= mounts


def test_prometheus_annotations_and_spec_hash(resnet50: dict[str, Any]) -> None:
    spec = _spec(resnet50)
    a = render.get_deployment(OWNER, spec, Placement("int8", "t4-spot", 1))
    b = render.get_deployment(OWNER, spec, Placement("int8", "t4-spot", 5))
    ann = a["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "8002"
    h = ann["tritonscale.io/spec-hash"]
    assert a["metadata"]["annotations"]["tritonscale.io/spec-hash"] == h
    # Replicas do not roll pods; a template change does.
    assert b["spec"]["template"]["metadata"]["annotations"]["tritonscale.io/spec-hash"] == h
    resnet50["spec"]["model"]["tritonImage"] = "nvcr.io/nvidia/tritonserver:24.11-py3"
    c = render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 1))
    assert c["spec"]["template"]["metadata"]["annotations"]["tritonscale.io/spec-hash"] != h


def test_env_passthrough(resnet50: dict[str, Any]) -> None:
    resnet50["spec"]["model"]["env"] = [{"name": "AWS_REGION", "value": "us-east-1"}]
    c = _container(render.get_deployment(OWNER, _spec(resnet50), Placement("int8", "t4-spot", 1)))
    assert c["env"] == [{"name": "AWS_REGION", "value": "us-east-1"}]


def test_deployments_skip_zero_replicas(resnet50: dict[str, Any]) -> None:
    deps = render.get_deployments(
        OWNER, _spec(resnet50),
        [Placement("int8", "t4-spot", 2), Placement("fp16", "t4-ondemand", 0)],
    )
    assert [d["metadata"]["name"] for d in deps] == ["resnet50-int8-t4-spot"]


def test_service(resnet50: dict[str, Any]) -> None:
    svc = render.get_service(OWNER, _spec(resnet50))
    assert svc["metadata"]["name"] == "resnet50"
    assert svc["spec"]["selector"] == {"tritonscale.io/scaledmodel": "resnet50"}
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002,
    }
    assert svc["metadata"]["ownerReferences"][0]["controller"] is True


def test_names_fit_dns_limits(resnet50: dict[str, Any]) -> None:
    name = render.deployment_name("a" * 20, "b" * 20, "c" * 20)
    assert len(name) <= 63


def test_triton_exports_the_slo_percentile(resnet50: dict[str, Any]) -> None:
    """Triton exports 0.5/0.9/0.95/0.99 unless told (0.5 within +-0.05 of rank): the
    SLO's percentile is added, every quantile within a tenth of its tail."""
    doc = copy.deepcopy(resnet50)
    doc["spec"]["slo"]["latency"]["percentile"] = 99.9
    args = _container(
        render.get_deployment(OWNER, _spec(doc), Placement("fp16", "a100-ondemand", 1))
    )["args"]
    assert ("--metrics-config=summary_quantiles=0.5:0.001,0.9:0.001,0.95:0.001,0.99:0.001,"
            "0.999:0.0001") in args
    assert render.summary_quantiles(97) == "0.5:0.001,0.9:0.001,0.95:0.001,0.97:0.001,0.99:0.001"
    assert render.summary_quantiles(95) == "0.5:0.001,0.9:0.001,0.95:0.001,0.99:0.001"

"""Smoke tests proving the local control plane behaves like a real cluster:
scheduling onto KWOK GPU nodes, garbage collection, RBAC with bound tokens."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.harness.k8s import GPU_RESOURCE, Cluster, wait_for

pytestmark = pytest.mark.e2e

GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


def _pool_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _gpu_deployment(
    name: str, pool_label: dict[str, str], replicas: int, gpus: int
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": pool_label,
                    "tolerations": [
                        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "triton",
                            "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi", GPU_RESOURCE: str(gpus)},
                                "limits": {GPU_RESOURCE: str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_versions(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"].startswith("v1.34.")
    assert version["serverVersion"]["gitVersion"].startswith("v1.34.")
    assert cluster.helm("version", "--short").stdout.startswith("v3.")


def test_gpu_pods_run_on_matching_pool_and_unfit_pod_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    pool = cluster.add_node_pool(
        _pool_name("a100"),
        labels={"tritonscale.io/accelerator": "a100"},
        taints=[GPU_TAINT],
        gpus_per_node=2,
        count=2,
        cpu="32",
        memory="128Gi",
    )
    # A decoy pool without the accelerator label or GPUs: nothing may land there.
    decoy = cluster.add_node_pool(_pool_name("cpu"), cpu="64", memory="256Gi")
    try:
        node = cluster.get_json("node", pool.node_names[0])
        assert node["status"]["allocatable"][GPU_RESOURCE] == "2"
        assert node["spec"]["taints"][0]["key"] == GPU_RESOURCE

        selector = {"tritonscale.io/accelerator": "a100"}
        cluster.apply(_gpu_deployment("triton", selector, replicas=3, gpus=1), namespace=namespace)

        pods = cluster.wait_for_ready_pods(namespace, "app=triton", 3)
        assert {p["spec"]["nodeName"] for p in pods} <= set(pool.node_names)
        wait_for(
            lambda: (
                cluster.get_json("deployment", "triton", "-n", namespace)["status"].get(
                    "readyReplicas"
                )
                == 3
            ),
            timeout=60,
            what="deployment readyReplicas == 3",
        )

        # 4 GPUs fit no node (2 per node): the pod stays Pending and the scheduler says why.
        cluster.apply(_gpu_deployment("too-big", selector, replicas=1, gpus=4), namespace=namespace)

        def failed_scheduling_event() -> bool:
            events = cluster.get_json(
                "events", "-n", namespace, "--field-selector", "reason=FailedScheduling"
            )["items"]
            return any(f"Insufficient {GPU_RESOURCE}" in e.get("message", "") for e in events)

        wait_for(failed_scheduling_event, timeout=60, what="FailedScheduling event for too-big")
        pending = cluster.get_json("pods", "-n", namespace, "-l", "app=too-big")["items"]
        assert len(pending) == 1
        assert pending[0]["status"]["phase"] == "Pending"
        assert not pending[0]["spec"].get("nodeName")
    finally:
        cluster.delete_node_pool(pool.name)
        cluster.delete_node_pool(decoy.name)
    assert (
        cluster.get_json("nodes", "-l", f"tritonscale.io/e2e-node-pool={pool.name}")["items"] == []
    )


def test_garbage_collector_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "owner"},
            "data": {"k": "v"},
        },
        namespace=namespace,
    )
    owner = cluster.get_json("configmap", "owner", "-n", namespace)
    deployment = _gpu_deployment("owned", {"no-such-node": "x"}, replicas=1, gpus=1)
    deployment["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
        }
    ]
    cluster.apply(deployment, namespace=namespace)
    # The deployment controller makes a ReplicaSet owned by the Deployment.
    wait_for(
        lambda: len(cluster.get_json("replicasets", "-n", namespace)["items"]) == 1,
        timeout=60,
        what="ReplicaSet of Deployment owned",
    )

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--wait=true")

    def collected() -> bool:
        remaining = cluster.kubectl(
            "get", "deployments,replicasets", "-n", namespace, "-o", "name"
        ).stdout
        return remaining.strip() == ""

    wait_for(
        collected,
        timeout=60,
        what="garbage collection of Deployment and ReplicaSet",
        on_timeout=cluster.logs_summary,
    )


def test_rbac_forbids_service_account_without_roles(
    cluster: Cluster, namespace: str, service_account_kubeconfig: Callable[[str, str], Path]
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = service_account_kubeconfig(namespace, "nobody")

    whoami = json.loads(
        cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"

    denied = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr, denied.stderr

    sa_client = cluster.api_client(kubeconfig)
    try:
        with pytest.raises(ApiException) as excinfo:
            client.CoreV1Api(sa_client).list_namespaced_secret(namespace)
        assert excinfo.value.status == 403

        # Granting a Role makes the same token work: RBAC, not authentication, said no.
        cluster.kubectl(
            "create", "role", "secret-reader", "--verb=list", "--resource=secrets", "-n", namespace
        )
        cluster.kubectl(
            "create",
            "rolebinding",
            "nobody-reads",
            "--role=secret-reader",
            f"--serviceaccount={namespace}:nobody",
            "-n",
            namespace,
        )
        wait_for(
            lambda: client.CoreV1Api(sa_client).list_namespaced_secret(namespace) is not None,
            timeout=30,
            what="RoleBinding to take effect",
        )
    finally:
        sa_client.close()  # type: ignore[no-untyped-call]


def test_helm_installs_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    pool = cluster.add_node_pool(_pool_name("general"), count=1)
    try:
        cluster.helm("create", str(tmp_path / "demo"))
        cluster.helm(
            "install", "demo", str(tmp_path / "demo"), "-n", namespace, "--wait", "--timeout=120s"
        )
        releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
        assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
        service = cluster.get_json("service", "demo", "-n", namespace)
        assert service["spec"]["clusterIP"].startswith("10.96.")
        pods = cluster.wait_for_ready_pods(namespace, "app.kubernetes.io/instance=demo", 1)
        assert pods[0]["spec"]["nodeName"] in pool.node_names
        cluster.helm("uninstall", "demo", "-n", namespace, "--wait")
    finally:
        cluster.delete_node_pool(pool.name)

"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK) for end-to-end tests. See docs/k8s-binaries.md."""

from .binaries import BINARIES, BinariesError, k8s_binaries
from .cluster import (
    GPU_RESOURCE,
    KWOK_NODE_ANNOTATION,
    NODE_POOL_LABEL,
    Cluster,
    ClusterError,
    NodePool,
    pod_is_ready,
    wait_for,
    write_kubeconfig,
)

__all__ = [
    "BINARIES",
    "GPU_RESOURCE",
    "KWOK_NODE_ANNOTATION",
    "NODE_POOL_LABEL",
    "BinariesError",
    "Cluster",
    "ClusterError",
    "NodePool",
    "k8s_binaries",
    "pod_is_ready",
    "wait_for",
    "write_kubeconfig",
]

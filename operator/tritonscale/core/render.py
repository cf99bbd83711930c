"""Desired Kubernetes objects for a ScaledModel, as plain dicts (pure).

``get_*`` builders return objects; only the kube adapter sends them. One
Deployment per (variant, pool) with replicas > 0 (named by :func:`deployment_name`)
and one Service ``<sm>`` selecting every Triton pod of the model so all variants
serve the same endpoint while a transition is in flight.

A cascade (``spec.cascade``) adds the router to the tier-1 pods, the ``<sm>-tier2``
Service and two ConfigMaps (core/cascade_render.py); its main Service selects the
tier-1 pods only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tritonscale.core import cascade_render as cr

# The API identity lives in core/api.py; re-exported for older imports from here.
from tritonscale.core.api import ANNOTATION_MODEL as ANNOTATION_MODEL
from tritonscale.core.api import ANNOTATION_SPEC_HASH as ANNOTATION_SPEC_HASH
from tritonscale.core.api import API_VERSION as API_VERSION
from tritonscale.core.api import GROUP as GROUP
from tritonscale.core.api import KIND as KIND
from tritonscale.core.api import LABEL_MANAGED_BY as LABEL_MANAGED_BY
from tritonscale.core.api import LABEL_POOL as LABEL_POOL
from tritonscale.core.api import LABEL_SM as LABEL_SM
from tritonscale.core.api import LABEL_VARIANT as LABEL_VARIANT
from tritonscale.core.api import MANAGER as MANAGER
from tritonscale.core.spec import NodePool, ScaledModelSpec, Variant
from tritonscale.core.types import Placement

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002


@dataclass(frozen=True)
class Owner:
    """The ScaledModel that owns (and garbage-collects) the rendered objects."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class RenderOptions:
    """Knobs of the pod template that are not part of the ScaledModel API."""

    # Triton waits this long for in-flight requests after SIGTERM.
    exit_timeout_seconds: int = 30
    # preStop sleep: time for endpoints and load balancers to stop sending traffic.
    drain_seconds: int = 10
    # Extra time past drain + exit timeout before the kubelet sends SIGKILL.
    grace_margin_seconds: int = 5
    probe_period_seconds: int = 5
    # Startup probe budget = startupSeconds x this factor (image pull, model load jitter).
    startup_margin: float = 1.5
    # Size of the in-memory /dev/shm (Python backend and shared-memory I/O use it).
    shm_size: str = "1Gi"
    run_as_user: int = 1000
    # The cascade router's model.py (tritonscale/data/router/model.py, read by the
    # caller: core stays free of I/O). Required to render a cascade's tier-1 pods.
    router_source: str = ""


DEFAULT_OPTIONS = RenderOptions()


def deployment_name(sm: str, variant: str, pool: str) -> str:
    """``<sm>-<variant>-<pool>``, or ``<sm>-<variant>--<pool>`` if the variant has a "-".

    Variant and pool names are DNS labels without "--" (core/spec.py, the CRD), so
    the names of one ScaledModel never collide: without a "-" in the variant, the
    variant is everything up to the first "-" after ``<sm>-``; with one, the pool
    starts after the only "--". (Plain ``<sm>-<variant>-<pool>`` made variant
    ``a-b`` on pool ``c`` and variant ``a`` on pool ``b-c`` the same Deployment.)
    At most 20 + 1 + 20 + 2 + 20 = 63 characters.
    """
    sep = "--" if "-" in variant else "-"
    return f"{sm}-{variant}{sep}{pool}"


def selector_labels(sm: str, variant: str | None = None, pool: str | None = None) -> dict[str, str]:
    out = {LABEL_SM: sm}
    if variant is not None:
        out[LABEL_VARIANT] = variant
    if pool is not None:
        out[LABEL_POOL] = pool
    return out


def labels(sm: str, variant: str | None = None, pool: str | None = None) -> dict[str, str]:
    """Recommended ``app.kubernetes.io/*`` labels plus the tritonscale selector labels."""
    out = {
        "app.kubernetes.io/name": "tritonserver",
        "app.kubernetes.io/instance": sm,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "tritonscale",
        LABEL_MANAGED_BY: MANAGER,
    }
    out.update(selector_labels(sm, variant, pool))
    return out


def spec_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Quantiles Triton exports by default (``summary_quantiles``'s default), kept for
# dashboards; the SLO's own percentile is added to them.
DEFAULT_QUANTILES = (50.0, 90.0, 95.0, 99.0)


def quantile_label(percentile: float) -> str:
    """The ``quantile`` label value Triton exports for ``percentile`` (95 -> "0.95")."""
    q = (Decimal(str(percentile)) / 100).normalize()
    return format(q, "f")


def summary_quantiles(percentile: float) -> str:
    """``summary_quantiles`` for Triton's latency summary: the defaults and the SLO's
    ``percentile``, each with a rank error of a tenth of its tail (at most 0.001).

    Triton exports only 0.5, 0.9, 0.95 and 0.99 unless told, so an SLO at p97 or
    p99.9 had no percentile to read and the operator fell back to the mean latency;
    and its default error for 0.5 is 0.05: a "median" anywhere between p45 and p55.
    """
    out = []
    for p in sorted({*DEFAULT_QUANTILES, float(percentile)}):
        tail = (Decimal(100) - Decimal(str(p))) / 100
        err = min(Decimal("0.001"), tail / 10).normalize()
        out.append(f"{quantile_label(p)}:{format(err, 'f')}")
    return ",".join(out)


def metrics_args(percentile: float) -> list[str]:
    """tritonserver's flags for the latency summary the operator reads at the SLO's
    ``percentile`` (the test harness starts its real servers with them too)."""
    return ["--metrics-config=summary_latencies=true",
            f"--metrics-config=summary_quantiles={summary_quantiles(percentile)}"]


def triton_args(spec: ScaledModelSpec, variant: Variant, options: RenderOptions) -> list[str]:
    """``tritonserver``, the ScaledModel's ``model.args``, then the operator's own flags.

    The operator's flags come last, each one token (``--flag=value``), so they win
    over anything earlier (tritonserver keeps the last value of a flag); core/spec.py
    also refuses args naming them."""
    repo = variant.repository or spec.model.repository
    args = [
        "tritonserver",
        *spec.model.args,
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        f"--load-model={spec.model.name}",
    ]
    if variant.config_name:
        args.append(f"--model-config-name={variant.config_name}")
    args += [
        *metrics_args(spec.slo.latency.percentile),
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--exit-timeout-secs={options.exit_timeout_seconds}",
    ]
    return args


def _resources(spec: ScaledModelSpec, pool: NodePool) -> dict[str, Any]:
    res: dict[str, Any] = {
        k: dict(v) for k, v in spec.model.resources.items() if isinstance(v, Mapping)
    }
    if pool.gpus_per_replica > 0:
        limits = res.setdefault("limits", {})
        limits["nvidia.com/gpu"] = pool.gpus_per_replica
        # Extended resources: requests must equal limits when both are set.
        if "requests" in res:
            res["requests"]["nvidia.com/gpu"] = pool.gpus_per_replica
    return res


def _probe(path: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def startup_failure_threshold(pool: NodePool, options: RenderOptions) -> int:
    """Enough probe periods to cover ``startupSeconds`` with margin (at least 3)."""
    budget = pool.startup_seconds * options.startup_margin
    return max(3, math.ceil(budget / options.probe_period_seconds) + 1)


def get_pod_template(
    owner: Owner,
    spec: ScaledModelSpec,
    variant: Variant,
    pool: NodePool,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    period = options.probe_period_seconds
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": spec.model.triton_image,
        "imagePullPolicy": "IfNotPresent",
        "args": triton_args(spec, variant, options),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [dict(e) for e in spec.model.env],
        "resources": _resources(spec, pool),
        "startupProbe": _probe(
            "/v2/health/ready", period, startup_failure_threshold(pool, options)
        ),
        "readinessProbe": _probe("/v2/health/ready", period, 3),
        "livenessProbe": _probe("/v2/health/live", period * 2, 3),
        "lifecycle": {
            "preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if not container["env"]:
        del container["env"]
    extra_volumes: list[dict[str, Any]] = []
    extra_annotations: dict[str, str] = {}
    if cr.is_tier1(spec, variant.name):
        data = cr.router_data(spec, owner.name, owner.namespace, options.router_source)
        args, extra_volumes, mounts, extra_annotations = cr.tier1_pod_parts(
            spec, owner.name, cr.router_hash(data))
        container["args"] += args
        container["volumeMounts"] += mounts
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": options.drain_seconds
        + options.exit_timeout_seconds
        + options.grace_margin_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": options.run_as_user,
            "runAsGroup": options.run_as_user,
            "fsGroup": options.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}},
            *extra_volumes,
        ],
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in pool.tolerations]
    template: dict[str, Any] = {
        "metadata": {
            "labels": labels(owner.name, variant.name, pool.name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
                **extra_annotations,
            },
        },
        "spec": pod_spec,
    }
    template["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = spec_hash(template)
    return template


def get_deployment(
    owner: Owner,
    spec: ScaledModelSpec,
    placement: Placement,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    variant = spec.variant(placement.variant)
    pool = spec.pool(placement.pool)
    template = get_pod_template(owner, spec, variant, pool, options)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(owner.name, variant.name, pool.name),
            "namespace": owner.namespace,
            "labels": labels(owner.name, variant.name, pool.name),
            "annotations": {
                ANNOTATION_SPEC_HASH: template["metadata"]["annotations"][ANNOTATION_SPEC_HASH],
            },
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": placement.replicas,
            "selector": {"matchLabels": selector_labels(owner.name, variant.name, pool.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "minReadySeconds": 0,
            "progressDeadlineSeconds": max(600, int(pool.startup_seconds * 3)),
            "revisionHistoryLimit": 3,
            "template": template,
        },
    }


def get_deployments(
    owner: Owner,
    spec: ScaledModelSpec,
    placements: Iterable[Placement],
    options: RenderOptions = DEFAULT_OPTIONS,
) -> list[dict[str, Any]]:
    """One Deployment per placement with replicas > 0, in a stable order."""
    return [
        get_deployment(owner, spec, p, options)
        for p in sorted(placements)
        if p.replicas > 0
    ]


def get_service(owner: Owner, spec: ScaledModelSpec) -> dict[str, Any]:
    """The model's Service: every ready Triton pod of the ScaledModel, any variant
    (a cascade's: the tier-1 pods, where the router answers)."""
    selector = selector_labels(owner.name)
    if spec.cascade is not None:
        selector = cr.tier_selector(spec, selector, 0)
    return service(owner, owner.name, selector, {ANNOTATION_MODEL: spec.model.name})


def get_cascade_objects(owner: Owner, spec: ScaledModelSpec, threshold: float,
                        options: RenderOptions = DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """A cascade's extra objects: the ``<sm>-tier2`` Service (tier-2 pods only), the
    router ConfigMap and the threshold ConfigMap holding ``threshold``. Empty for a
    ScaledModel without ``spec.cascade``."""
    if spec.cascade is None:
        return []
    ann = {ANNOTATION_MODEL: spec.model.name}
    return [
        service(owner, cr.tier2_service_name(owner.name),
                 cr.tier_selector(spec, selector_labels(owner.name), 1), ann),
        cr.get_router_configmap(owner, spec, options.router_source, labels(owner.name), ann),
        cr.get_threshold_configmap(owner, threshold, labels(owner.name), ann),
    ]


def service(owner: Owner, name: str, selector: Mapping[str, str],
            annotations: Mapping[str, str], *, object_labels: Mapping[str, str] | None = None,
            grpc_app_protocol: str = "grpc", metrics: bool = True) -> dict[str, Any]:
    """A ClusterIP Service of ``owner``'s Triton pods matching ``selector``: the http
    and grpc ports, and the metrics port unless ``metrics`` is False (a weighted
    route's per-placement backends, core/routing.py, which also name the grpc port's
    ``appProtocol`` as Gateway implementations want it)."""
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": grpc_app_protocol},
    ]
    if metrics:
        ports.append({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                      "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": dict(object_labels) if object_labels is not None else labels(owner.name),
            "annotations": dict(annotations),
            "ownerReferences": [owner.reference()],
        },
        "spec": {"type": "ClusterIP", "selector": dict(selector), "ports": ports},
    }

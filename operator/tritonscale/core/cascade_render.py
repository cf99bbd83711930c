"""The objects that serve a cascade, as plain dicts (pure; core/render.py calls in).

A cascade (``spec.cascade``) is served by a **router model** (Triton Python backend,
``tritonscale/data/router/model.py``) loaded next to the tier-1 model in every tier-1
pod. It reaches the pod without a custom image:

* ConfigMap ``<sm>-router`` holds ``model.py`` and a generated ``config.pbtxt``
  (the tensors of ``spec.cascade.io``, the router's parameters). The tier-1 pods mount
  it, with ``items`` laying the keys out as a model repository
  (``<model>-cascade/config.pbtxt``, ``<model>-cascade/1/model.py``), at
  :data:`ROUTER_REPOSITORY`, passed to tritonserver as a second
  ``--model-repository`` with ``--load-model=<model>-cascade``. The stock Triton image
  has the Python backend; the router needs nothing but numpy and the standard library.
* ConfigMap ``<sm>-threshold`` holds the threshold the router runs with (the decided
  ``status.autoscaler.threshold``, which ``lastDecision.details.cascade.threshold``
  shows), mounted as a *directory* at :data:`THRESHOLD_DIR` (not ``subPath``: the
  kubelet swaps the files of a directory mount in place, so a new value reaches the
  running router without a restart). The pod template never carries the threshold.
* Service ``<sm>-tier2`` selects the tier-2 pods only; the router calls
  ``http://<sm>-tier2.<namespace>.svc:8000``, a URL the operator builds from its own
  Service name (nothing of it comes from the spec). The main Service ``<sm>`` selects
  the tier-1 pods only, so clients always enter through the router.

The tier-1 pod template carries a hash of the router ConfigMap's data: a changed
router (new tensors, a new ``model.py``) rolls the tier-1 pods (Triton loads a model
once), while a threshold change rolls nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tritonscale.core.api import LABEL_VARIANT
from tritonscale.core.cascade_spec import Cascade, Tensor
from tritonscale.core.cascade_step import point_of
from tritonscale.core.spec import ScaledModelSpec

ROUTER_REPOSITORY = "/cascade/models"
THRESHOLD_DIR = "/cascade/threshold"
THRESHOLD_KEY = "threshold"
THRESHOLD_FILE = f"{THRESHOLD_DIR}/{THRESHOLD_KEY}"
ROUTER_VOLUME = "cascade-router"
THRESHOLD_VOLUME = "cascade-threshold"
ANNOTATION_ROUTER_HASH = "tritonscale.io/router-hash"
# Router instances per tier-1 pod (Python-backend processes). An instance's execute
# only hands its requests to that instance's threads and returns, so each request is
# answered on its own (none waits for another's tier-2 call) and the instances bound
# no concurrency; two spread the router's own Python work over two processes.
ROUTER_INSTANCES = 2
# Threads per stage and instance: stage 1 holds a request during its tier-1 call,
# stage 2 during its tier-2 call (at most the tier-2 timeout), so a pod holds up to
# ROUTER_INSTANCES x ROUTER_WORKERS requests in each stage before they queue.
ROUTER_WORKERS = 256
# Requests an instance holds at most (in a thread or waiting for one); beyond it the
# router answers at once with an error (unavailable), so overload cannot grow its memory.
ROUTER_MAX_PENDING = 4 * ROUTER_WORKERS
# Bounds of the router's calls (a request's own deadline, when sooner, bounds them
# instead): tier 1 counted from the router's hand-off, tier 2 from tier 1's answer.
TIER1_TIMEOUT_SECONDS = 10
TIER2_TIMEOUT_SECONDS = 10
HTTP_PORT = 8000


def router_model(spec: ScaledModelSpec) -> str:
    """The router's Triton model name: what clients of a cascade call."""
    return f"{spec.model.name}-cascade"


def router_configmap_name(sm: str) -> str:
    return f"{sm}-router"


def threshold_configmap_name(sm: str) -> str:
    return f"{sm}-threshold"


def tier2_service_name(sm: str) -> str:
    return f"{sm}-tier2"


def tier2_url(sm: str, namespace: str) -> str:
    """Built from the operator's own Service name and the object's namespace (both
    RFC 1123 labels, checked by the API server), never from the spec."""
    return f"http://{tier2_service_name(sm)}.{namespace}.svc:{HTTP_PORT}"


def _cascade(spec: ScaledModelSpec) -> Cascade:
    if spec.cascade is None:
        raise ValueError("not a cascade: spec.cascade is absent")
    return spec.cascade


def initial_threshold(spec: ScaledModelSpec) -> float:
    """The least escalating threshold within the accuracy floor: what the router runs
    before the operator decided one (and its fallback if the file is unreadable)."""
    cas = _cascade(spec)
    floor = spec.slo.min_accuracy
    within = [p for p in cas.points if p.accuracy >= floor] or list(cas.points)
    return min(within, key=lambda p: (p.escalated, p.threshold)).threshold


def published_threshold(spec: ScaledModelSpec, state: Mapping[str, Any] | None) -> float:
    """The threshold to publish: ``status.autoscaler.threshold`` (the router's threshold
    the policy decided, make-before-break included) if it is one of the curve's
    points or 0 (tier 1 alone, which the policy runs while the accuracy served allows
    it), else :func:`initial_threshold`. ``state`` is untrusted status JSON."""
    _cascade(spec)
    raw = state.get("threshold") if isinstance(state, Mapping) else None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        point = point_of(spec, float(raw))
        if point is not None:
            return point.threshold
    return initial_threshold(spec)


def _tensor(t: Tensor) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    return f'  {{ name: "{t.name}" data_type: TYPE_{t.data_type} dims: [ {dims} ] }}'


def router_config(spec: ScaledModelSpec, sm: str, namespace: str) -> str:
    """The router's ``config.pbtxt``. Every string in it is held to a pattern without
    quotes or backslashes (tensor and model names: core/cascade_spec.py; the URL is
    the operator's own)."""
    cas = _cascade(spec)
    params = {
        "tier1_model": spec.model.name,
        "tier2_url": tier2_url(sm, namespace),
        "tier2_model": spec.model.name,
        "confidence_output": cas.confidence_output,
        "threshold": f"{initial_threshold(spec):g}",
        "threshold_file": THRESHOLD_FILE,
        "tier1_timeout_s": str(TIER1_TIMEOUT_SECONDS),
        "tier2_timeout_s": str(TIER2_TIMEOUT_SECONDS),
        "workers": str(ROUTER_WORKERS),
        "max_pending": str(ROUTER_MAX_PENDING),
    }
    for value in params.values():
        if any(c in value for c in '"\\\n'):
            raise ValueError(f"unsafe value in the router config: {value!r}")
    inputs = ",\n".join(_tensor(t) for t in cas.io.inputs)
    outputs = ",\n".join(_tensor(t) for t in cas.io.outputs)
    body = "\n".join(
        f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in params.items())
    return (
        f'name: "{router_model(spec)}"\n'
        'backend: "python"\n'
        f"max_batch_size: {cas.io.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching { }\n"
        f"instance_group [ {{ count: {ROUTER_INSTANCES} kind: KIND_CPU }} ]\n"
        f"{body}\n"
    )


def _meta(owner: Any, name: str, labels: Mapping[str, str],
          annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "annotations": dict(annotations),
        "ownerReferences": [owner.reference()],
    }


def router_data(spec: ScaledModelSpec, sm: str, namespace: str,
                router_source: str) -> dict[str, str]:
    if not router_source.strip():
        raise ValueError("the router's model.py source is empty")
    return {"config.pbtxt": router_config(spec, sm, namespace), "model.py": router_source}


def router_hash(data: Mapping[str, str]) -> str:
    blob = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_router_configmap(owner: Any, spec: ScaledModelSpec, router_source: str,
                         labels: Mapping[str, str],
                         annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, router_configmap_name(owner.name), labels, annotations),
        "data": router_data(spec, owner.name, owner.namespace, router_source),
    }


def get_threshold_configmap(owner: Any, threshold: float, labels: Mapping[str, str],
                            annotations: Mapping[str, str]) -> dict[str, Any]:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, threshold_configmap_name(owner.name), labels, annotations),
        "data": {THRESHOLD_KEY: f"{threshold:g}\n"},
    }


def tier_selector(spec: ScaledModelSpec, base: Mapping[str, str], tier: int) -> dict[str, str]:
    """The Service selector of tier ``tier`` (0: the router's tier, 1: the last)."""
    cas = _cascade(spec)
    return {**base, LABEL_VARIANT: cas.tiers[tier].variant}


def is_tier1(spec: ScaledModelSpec, variant: str) -> bool:
    return spec.cascade is not None and spec.cascade.first.variant == variant


def tier1_pod_parts(spec: ScaledModelSpec, sm: str, router_hash_value: str) -> tuple[
        list[str], list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """What a tier-1 pod adds: tritonserver flags, volumes, mounts, annotations."""
    name = router_model(spec)
    args = [f"--model-repository={ROUTER_REPOSITORY}", f"--load-model={name}"]
    volumes = [
        {"name": ROUTER_VOLUME, "configMap": {
            "name": router_configmap_name(sm),
            "items": [
                {"key": "config.pbtxt", "path": f"{name}/config.pbtxt"},
                {"key": "model.py", "path": f"{name}/1/model.py"},
            ],
        }},
        {"name": THRESHOLD_VOLUME, "configMap": {"name": threshold_configmap_name(sm)}},
    ]
    mounts = [
        {"name": ROUTER_VOLUME, "mountPath": ROUTER_REPOSITORY, "readOnly": True},
        {"name": THRESHOLD_VOLUME, "mountPath": THRESHOLD_DIR, "readOnly": True},
    ]
    return args, volumes, mounts, {ANNOTATION_ROUTER_HASH: router_hash_value}

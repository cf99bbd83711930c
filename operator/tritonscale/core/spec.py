"""Parse, default and validate a ScaledModel ``spec`` into frozen dataclasses.

Pure code: no Kubernetes, Kopf, Prometheus or Triton imports. The same rules are
enforced by the CRD's OpenAPI schema and CEL rules at admission time; this module
is the single place the operator, ``tritonscale validate``, ``plan`` and
``simulate`` read a spec through, so every consumer sees the same defaults.

Errors are collected, not raised one at a time: :class:`SpecError` carries every
:class:`FieldError`, each naming the offending field by its JSON path
(``spec.variants[1].profiles[0].batches``) so users can find it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tritonscale.core import k8sformat as k8s
from tritonscale.core.api import API_VERSION, KIND
from tritonscale.core.cascade_spec import MAX_MODEL_NAME as MAX_CASCADE_MODEL_NAME
from tritonscale.core.cascade_spec import MODEL_NAME as CASCADE_MODEL_NAME
from tritonscale.core.cascade_spec import Cascade, parse_cascade

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "fp8")
CAPACITY_TYPES: tuple[str, ...] = ("onDemand", "spot")
PRIORITIES: tuple[str, ...] = ("latency", "cost", "accuracy")
METRIC_SOURCES: tuple[str, ...] = ("prometheus", "triton", "none")
ROUTING_MODES: tuple[str, ...] = ("service", "gateway")
ROUTE_PROTOCOLS: tuple[str, ...] = ("http", "grpc")
MAX_PARENT_REFS = 8
# spec.scaling.clientTimeoutSeconds at most (a day; `simulate --client-timeout` too).
MAX_CLIENT_TIMEOUT_S = 86_400.0

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"

# RFC 1123 label, as Kubernetes requires for names that end up in object names.
# Every name pattern is compiled by k8s.re2 and used with ``.search``: with ``re``'s
# own "$", "gw\n" passed (``$`` also matches before a final newline; RE2's does not).
_DNS_LABEL = k8s.re2(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# RFC 1123 subdomain (Gateway names, listener section names).
_DNS_SUBDOMAIN = k8s.re2(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)

# spec.metrics.prometheus.url: a base URL only. http(s), a host name or an IP (v6 in
# brackets), an optional port and path; no user info, query or fragment, so the
# operator's own query path cannot be cut off ("...#", "...?") or credentials smuggled
# in. The CRD's CEL rule on the field matches this exact pattern (RE2 and Python read
# it alike; tests/unit/test_cel.py checks the two agree).
PROMETHEUS_URL_PATTERN = (
    r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?"
)
_PROMETHEUS_URL = re.compile(PROMETHEUS_URL_PATTERN)
PROMETHEUS_URL_RULE = (
    "must be a base URL: http:// or https://, a host, an optional port and path; "
    "no user info (@), query (?) or fragment (#)"
)
# Variant and pool names: RFC 1123 labels without "--", the separator
# core/render.py puts between a hyphenated variant and its pool, so Deployment
# names of one ScaledModel cannot collide.
_PART_NAME = k8s.re2(k8s.PART_NAME)
# The ScaledModel's name is its Service's name: an RFC 1035 label (starts with a letter).
_OBJECT_NAME = k8s.re2(k8s.OBJECT_NAME)
_PROM_LABEL = k8s.re2(k8s.PROM_LABEL_NAME)
# "<sm>-<variant>-<pool>" (or "<sm>-<variant>--<pool>") Deployment names stay <= 63
# characters, so each part is kept short.
MAX_PART_NAME = 20
# Longest FieldError message (and path): they quote user input.
MAX_MESSAGE = 300


@dataclass(frozen=True)
class FieldError:
    """One problem in a spec, located by its JSON path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot be used; carries every problem found."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class BatchPoint:
    """Compute time of one batch of ``size`` requests on one replica."""

    size: int
    latency_ms: float


@dataclass(frozen=True)
class Profile:
    """Measured performance of a variant on one accelerator type."""

    accelerator: str
    max_batch_size: int
    batches: tuple[BatchPoint, ...]
    # Triton dynamic batcher's max_queue_delay; the simulator and perf model use it.
    max_queue_delay_ms: float = 0.0


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    accuracy: float
    profiles: tuple[Profile, ...]
    repository: str | None = None
    config_name: str | None = None

    def profile_for(self, accelerator: str) -> Profile | None:
        for p in self.profiles:
            if p.accelerator == accelerator:
                return p
        return None


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key is not None:
            out["key"] = self.key
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


@dataclass(frozen=True)
class NodePool:
    name: str
    accelerator: str
    price_per_hour: float
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    gpus_per_replica: int = 1
    capacity_type: str = "onDemand"
    max_replicas: int = 10
    startup_seconds: float = 120.0
    # Seconds between the cloud's interruption warning and the reclaim (spot: AWS
    # gives 120, GCP and Azure about 30); 0 = no notice. The simulator announces
    # each preemption that long before it; the operator reads the warning from
    # the nodes' taints (adapters/kube.py, INTERRUPTION_TAINTS).
    interruption_notice_seconds: int = 0

    @property
    def is_spot(self) -> bool:
        return self.capacity_type == "spot"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    repository: str
    triton_image: str = DEFAULT_TRITON_IMAGE
    args: tuple[str, ...] = ()
    # Kubernetes EnvVar / ResourceRequirements, passed through verbatim.
    env: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencySLO:
    percentile: float
    target_ms: float


@dataclass(frozen=True)
class SLO:
    latency: LatencySLO
    min_accuracy: float = 0.0
    max_cost_per_hour: float | None = None
    priority: Literal["latency", "cost", "accuracy"] = "latency"


@dataclass(frozen=True)
class SafePlanEntry:
    variant: str
    pool: str
    replicas: int


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 1
    max_replicas: int = 20
    interval_seconds: float = 15.0
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    headroom: float = 0.1
    # Scale to zero after this many seconds without requests; 0 disables it.
    idle_seconds: float = 0.0
    # Largest change of total replicas in one step (0 = unbounded).
    max_scale_up_step: int = 0
    max_scale_down_step: int = 0
    # Keep enough on-demand capacity to hold the SLO at current load if every
    # spot replica vanished.
    spot_protection: bool = False
    # Consecutive signal failures after which the safe plan is applied.
    failure_threshold: int = 5
    safe_plan: tuple[SafePlanEntry, ...] = ()
    # Seconds of sustained recovery before the degradation ladder steps back up.
    recovery_seconds: float = 300.0
    # Bursts (core/burst.py): the volatility headroom's cap, the time a backlog is
    # planned to drain in, and how long a panic (backlog or latency over target) holds.
    max_headroom: float = 1.0
    drain_seconds: float = 60.0
    panic_seconds: float = 60.0
    # How long the clients wait for an answer before giving up (their request
    # timeout); None: patient clients. The drain plans only for the part of a
    # backlog they will still be waiting for when new capacity is Ready.
    client_timeout_seconds: float | None = None


@dataclass(frozen=True)
class PrometheusSource:
    url: str
    timeout_seconds: float = 5.0
    # Prometheus label names holding each dimension.
    namespace_label: str = "namespace"
    model_label: str = "model"
    variant_label: str = "tritonscale_io_variant"
    pool_label: str = "tritonscale_io_pool"
    # Extra label matchers added to every query (e.g. job="triton").
    selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Metrics:
    source: str = "prometheus"
    prometheus: PrometheusSource | None = None
    triton_metrics_port: int = 8002


@dataclass(frozen=True)
class ParentRef:
    """A Gateway API ParentReference (a Gateway, optionally one listener of it)."""

    name: str
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.name,
        }
        if self.namespace is not None:
            out["namespace"] = self.namespace
        if self.section_name is not None:
            out["sectionName"] = self.section_name
        if self.port is not None:
            out["port"] = self.port
        return out


@dataclass(frozen=True)
class Routing:
    """How requests reach the replicas.

    ``service``: one Service over every Ready pod (an even split per replica).
    ``gateway``: one Service per (variant, pool) and Gateway API routes whose
    backendRefs carry weights = each placement's share of the Ready capacity.
    """

    mode: Literal["service", "gateway"] = "service"
    protocols: tuple[str, ...] = ("http",)
    parent_refs: tuple[ParentRef, ...] = ()

    @property
    def weighted(self) -> bool:
        return self.mode == "gateway"


@dataclass(frozen=True)
class ScaledModelSpec:
    model: ModelSpec
    variants: tuple[Variant, ...]
    node_pools: tuple[NodePool, ...]
    slo: SLO
    scaling: Scaling = field(default_factory=Scaling)
    metrics: Metrics = field(default_factory=Metrics)
    # Two tiers answering together (core.cascade plans them); None: one variant per request.
    cascade: Cascade | None = None
    routing: Routing = field(default_factory=Routing)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def pool(self, name: str) -> NodePool:
        for p in self.node_pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def eligible_variants(self) -> tuple[Variant, ...]:
        """Variants meeting the accuracy floor."""
        return tuple(v for v in self.variants if v.accuracy >= self.slo.min_accuracy)

    def combos(self) -> tuple[tuple[Variant, NodePool, Profile], ...]:
        """Every (variant, pool) pair allowed by accuracy and with a profile."""
        out: list[tuple[Variant, NodePool, Profile]] = []
        for v in self.eligible_variants():
            for p in self.node_pools:
                prof = v.profile_for(p.accelerator)
                if prof is not None:
                    out.append((v, p, prof))
        return tuple(out)


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Collects errors while reading typed values out of nested dicts."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def err(self, path: str, message: str) -> None:
        # Messages quote user input: keep them short (they reach status and events).
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        self.errors.append(FieldError(path[:MAX_MESSAGE], message))

    def obj(self, data: Any, path: str, required: bool = True) -> Mapping[str, Any]:
        if data is None:
            if required:
                self.err(path, "is required")
            return {}
        if not isinstance(data, Mapping):
            self.err(path, f"must be an object, got {type(data).__name__}")
            return {}
        return data

    def lst(self, data: Any, path: str, required: bool = True) -> list[Any]:
        if data is None:
            if required:
                self.err(path, "is required")
            return []
        if not isinstance(data, list):
            self.err(path, f"must be a list, got {type(data).__name__}")
            return []
        return data

    def string(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: str | None = None,
        required: bool = False,
        enum: Sequence[str] | None = None,
        dns: bool = False,
    ) -> str | None:
        p = f"{path}.{key}"
        v = d.get(key)
        if v is None:
            if required:
                self.err(p, "is required")
            return default
        if not isinstance(v, str):
            self.err(p, f"must be a string, got {type(v).__name__}")
            return default
        if required and not v:
            self.err(p, "must not be empty")
        if enum is not None and v not in enum:
            self.err(p, f"must be one of {', '.join(enum)}; got {v!r}")
        if dns and v and (not _PART_NAME.search(v) or len(v) > MAX_PART_NAME):
            self.err(
                p,
                f"must be a lowercase RFC 1123 label of at most {MAX_PART_NAME} "
                f"characters without '--'; got {v[:40]!r}",
            )
        return v

    def number(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: float | None = None,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: float | None = None,
        exclusive_maximum: float | None = None,
    ) -> float | None:
        p = f"{path}.{key}"
        v = d.get(key)
        if v is None:
            if required:
                self.err(p, "is required")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.err(p, f"must be a number, got {type(v).__name__}")
            return default
        f = float(v)
        if not math.isfinite(f):
            self.err(p, "must be finite")
            return default
        if minimum is not None and f < minimum:
            self.err(p, f"must be >= {minimum:g}; got {f:g}")
        if maximum is not None and f > maximum:
            self.err(p, f"must be <= {maximum:g}; got {f:g}")
        if exclusive_minimum is not None and f <= exclusive_minimum:
            self.err(p, f"must be > {exclusive_minimum:g}; got {f:g}")
        if exclusive_maximum is not None and f >= exclusive_maximum:
            self.err(p, f"must be < {exclusive_maximum:g}; got {f:g}")
        return f

    def integer(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        default: int | None = None,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        p = f"{path}.{key}"
        v = d.get(key)
        if v is None:
            if required:
                self.err(p, "is required")
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(p, f"must be an integer, got {type(v).__name__}")
            return default
        if minimum is not None and v < minimum:
            self.err(p, f"must be >= {minimum}; got {v}")
        if maximum is not None and v > maximum:
            self.err(p, f"must be <= {maximum}; got {v}")
        return v

    def boolean(self, d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.err(f"{path}.{key}", f"must be true or false, got {type(v).__name__}")
            return default
        return v

    def str_map(self, d: Mapping[str, Any], key: str, path: str) -> tuple[tuple[str, str], ...]:
        v = d.get(key)
        if v is None:
            return ()
        if not isinstance(v, Mapping) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()
        ):
            self.err(f"{path}.{key}", "must be a map of strings to strings")
            return ()
        return tuple(sorted(v.items()))

    def unique(self, names: Sequence[str | None], path: str, what: str) -> None:
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n is None:
                continue
            if n in seen:
                self.err(f"{path}[{i}].name", f"duplicate {what} name {n!r}")
            seen.add(n)


def _parse_batches(r: _Reader, data: Any, path: str, max_batch: int) -> tuple[BatchPoint, ...]:
    out: list[BatchPoint] = []
    items = r.lst(data, path)
    if data is not None and not items:
        r.err(path, "must have at least one entry")
    for i, item in enumerate(items):
        bp = f"{path}[{i}]"
        b = r.obj(item, bp)
        size = r.integer(b, "size", bp, required=True, minimum=1)
        lat = r.number(b, "latencyMs", bp, required=True, exclusive_minimum=0.0)
        if size is not None and size > max_batch:
            r.err(f"{bp}.size", f"must be <= maxBatchSize ({max_batch}); got {size}")
        if size is not None and lat is not None:
            out.append(BatchPoint(size=size, latency_ms=lat))
    sizes = [p.size for p in out]
    if len(set(sizes)) != len(sizes):
        r.err(path, "batch sizes must be unique")
    out.sort(key=lambda p: p.size)
    for a, b2 in itertools.pairwise(out):
        if b2.latency_ms < a.latency_ms:
            r.err(
                path,
                f"latencyMs must not decrease as size grows (size {b2.size} is faster "
                f"than size {a.size})",
            )
            break
    return tuple(out)


def _parse_variant(r: _Reader, data: Any, path: str) -> Variant | None:
    d = r.obj(data, path)
    name = r.string(d, "name", path, required=True, dns=True)
    precision = r.string(d, "precision", path, required=True, enum=PRECISIONS)
    accuracy = r.number(d, "accuracy", path, required=True, minimum=0.0, maximum=1.0)
    repository = r.string(d, "repository", path)
    config_name = r.string(d, "configName", path)
    if repository is not None and config_name is not None:
        r.err(f"{path}.configName", "set either repository or configName, not both")
    profiles: list[Profile] = []
    items = r.lst(d.get("profiles"), f"{path}.profiles")
    if d.get("profiles") is not None and not items:
        r.err(f"{path}.profiles", "must have at least one entry")
    for j, pd in enumerate(items):
        pp = f"{path}.profiles[{j}]"
        p = r.obj(pd, pp)
        acc = r.string(p, "accelerator", pp, required=True)
        mbs = r.integer(p, "maxBatchSize", pp, default=1, minimum=1, maximum=4096)
        qd = r.number(p, "maxQueueDelayMs", pp, default=0.0, minimum=0.0, maximum=10_000.0)
        batches = _parse_batches(r, p.get("batches"), f"{pp}.batches", mbs or 1)
        if acc is not None and mbs is not None and qd is not None and batches:
            profiles.append(Profile(acc, mbs, batches, qd))
    r.unique([p.accelerator for p in profiles], f"{path}.profiles", "accelerator")
    if name is None or precision is None or accuracy is None:
        return None
    return Variant(name, precision, accuracy, tuple(profiles), repository, config_name)


def _parse_toleration(r: _Reader, data: Any, path: str) -> Toleration:
    d = r.obj(data, path)
    op = r.string(d, "operator", path, default="Equal", enum=("Equal", "Exists"))
    effect = r.string(
        d, "effect", path, enum=("NoSchedule", "PreferNoSchedule", "NoExecute")
    )
    secs = r.integer(d, "tolerationSeconds", path)
    key = r.string(d, "key", path)
    value = r.string(d, "value", path)
    # The API server's validateTolerations rules.
    if key:
        for m in k8s.qualified_name_errors(key):
            r.err(f"{path}.key", m)
    elif op != "Exists":
        r.err(f"{path}.operator", "must be Exists when key is empty (match every taint)")
    if value is not None:
        for m in k8s.label_value_errors(value):
            r.err(f"{path}.value", m)
        if op == "Exists" and value:
            r.err(f"{path}.value", "must be empty when operator is Exists")
    if secs is not None and effect != "NoExecute":
        r.err(f"{path}.effect", "must be NoExecute when tolerationSeconds is set")
    return Toleration(
        key=key,
        operator=op or "Equal",
        value=value,
        effect=effect,
        toleration_seconds=secs,
    )


def _parse_pool(r: _Reader, data: Any, path: str) -> NodePool | None:
    d = r.obj(data, path)
    name = r.string(d, "name", path, required=True, dns=True)
    acc = r.string(d, "accelerator", path, required=True)
    price = r.number(d, "pricePerHour", path, required=True, minimum=0.0)
    tols = tuple(
        _parse_toleration(r, t, f"{path}.tolerations[{i}]")
        for i, t in enumerate(r.lst(d.get("tolerations"), f"{path}.tolerations", False))
    )
    gpus = r.integer(d, "gpusPerReplica", path, default=1, minimum=0, maximum=16)
    ct = r.string(d, "capacityType", path, default="onDemand", enum=CAPACITY_TYPES)
    maxr = r.integer(d, "maxReplicas", path, default=10, minimum=0, maximum=1000)
    startup = r.number(d, "startupSeconds", path, default=120.0, minimum=0.0, maximum=3600.0)
    notice = r.integer(d, "interruptionNoticeSeconds", path, default=0, minimum=0, maximum=3600)
    sel = r.str_map(d, "nodeSelector", path)
    for k, v in sel:
        for m in k8s.qualified_name_errors(k):
            r.err(f"{path}.nodeSelector", f"key {k[:80]!r} {m}")
        for m in k8s.label_value_errors(v):
            r.err(f"{path}.nodeSelector[{k[:80]!r}]", m)
    if name is None or acc is None or price is None:
        return None
    return NodePool(
        name=name,
        accelerator=acc,
        price_per_hour=price,
        node_selector=sel,
        tolerations=tols,
        gpus_per_replica=gpus if gpus is not None else 1,
        capacity_type=ct or "onDemand",
        max_replicas=maxr if maxr is not None else 10,
        startup_seconds=startup if startup is not None else 120.0,
        interruption_notice_seconds=notice if notice is not None else 0,
    )


def _parse_model(r: _Reader, data: Any) -> ModelSpec | None:
    path = "spec.model"
    d = r.obj(data, path)
    name = r.string(d, "name", path, required=True)
    repo = r.string(d, "repository", path, required=True)
    image = r.string(d, "tritonImage", path, default=DEFAULT_TRITON_IMAGE)
    args = r.lst(d.get("args"), f"{path}.args", required=False)
    if len(args) > 64:
        r.err(f"{path}.args", "must have at most 64 items")
    for i, a in enumerate(args):
        if not isinstance(a, str):
            r.err(f"{path}.args[{i}]", "must be a string")
            continue
        if len(a) > 1024:
            r.err(f"{path}.args[{i}]", "must be at most 1024 characters")
        for m in k8s.arg_errors(a):
            r.err(f"{path}.args[{i}]", m)
    if args and isinstance(args[-1], str) and k8s.dangling_flag(args[-1]):
        r.err(f"{path}.args[{len(args) - 1}]", "a flag at the end without =value would "
              "take the operator's next flag as its value; write --flag=value")
    env = r.lst(d.get("env"), f"{path}.env", required=False)
    for i, e in enumerate(env):
        _check_env(r, e, f"{path}.env[{i}]")
    res = r.obj(d.get("resources"), f"{path}.resources", required=False)
    _check_resources(r, res, f"{path}.resources")
    if name is None or repo is None:
        return None
    return ModelSpec(
        name=name,
        repository=repo,
        triton_image=image or DEFAULT_TRITON_IMAGE,
        args=tuple(a for a in args if isinstance(a, str)),
        env=tuple(e for e in env if isinstance(e, Mapping)),
        resources=dict(res),
    )


_ENV_KEYS = ("name", "value", "valueFrom")
# The operator's service account creates the Triton pods, and the kubelet hands a pod
# any Secret of its namespace it names: a secretKeyRef here would let whoever may
# write a ScaledModel read a Secret they may have no RBAC for (through a model of
# theirs that prints its environment). The CRD's CEL rule says the same.
SECRET_REF_REFUSED = (
    "is not allowed: the operator creates the Triton pods, so a Secret named here would "
    "reach a ScaledModel author who may not be allowed to read it; give the pods "
    "credentials through the model repository's access (e.g. the nodes' identity)"
)


def _check_env(r: _Reader, data: Any, path: str) -> None:
    """One Kubernetes EnvVar: a valid name, a string value or a valueFrom, not both."""
    if not isinstance(data, Mapping):
        r.err(path, f"must be an object, got {type(data).__name__}")
        return
    name = data.get("name")
    if not isinstance(name, str):
        r.err(f"{path}.name", "is required")
    elif len(name) > 253:
        r.err(f"{path}.name", "must be at most 253 characters")
    else:
        for m in k8s.env_var_name_errors(name):
            r.err(f"{path}.name", m)
    for key in data:
        if key not in _ENV_KEYS:
            r.err(f"{path}.{str(key)[:40]}", f"unknown field (allowed: {', '.join(_ENV_KEYS)})")
    value = data.get("value")
    if value is not None and not isinstance(value, str):
        r.err(f"{path}.value", f"must be a string, got {type(value).__name__}")
    elif isinstance(value, str) and len(value) > 32768:
        r.err(f"{path}.value", "must be at most 32768 characters")
    vf = data.get("valueFrom")
    if vf is not None and not isinstance(vf, Mapping):
        r.err(f"{path}.valueFrom", f"must be an object, got {type(vf).__name__}")
    elif isinstance(vf, Mapping) and "secretKeyRef" in vf:
        r.err(f"{path}.valueFrom.secretKeyRef", SECRET_REF_REFUSED)
    if isinstance(value, str) and value and vf is not None:
        r.err(f"{path}.valueFrom", "must not be set when value is not empty")


def _check_resources(r: _Reader, res: Mapping[str, Any], path: str) -> None:
    """Container requests/limits as the API server checks them (cpu, memory and
    ephemeral-storage only: GPUs come from the pool's gpusPerReplica)."""
    parsed: dict[str, dict[str, Any]] = {}
    for key in res:
        if key not in ("requests", "limits"):
            r.err(f"{path}.{str(key)[:40]}", "unknown field (allowed: limits, requests)")
    for part in ("requests", "limits"):
        block = r.obj(res.get(part), f"{path}.{part}", required=False)
        parsed[part] = {}
        for rname, q in block.items():
            rp = f"{path}.{part}.{str(rname)[:80]}"
            if rname not in k8s.STANDARD_RESOURCES:
                r.err(rp, f"unknown field (allowed: {', '.join(k8s.STANDARD_RESOURCES)}; "
                      f"GPUs come from spec.nodePools[].gpusPerReplica)")
                continue
            if isinstance(q, bool) or not isinstance(q, (int, str)):
                r.err(rp, f"must be a quantity string or integer, got {type(q).__name__}")
                continue
            try:
                parsed[part][rname] = k8s.parse_quantity(q)
            except ValueError as e:
                r.err(rp, str(e))
    for rname, req in parsed["requests"].items():
        lim = parsed["limits"].get(rname)
        if lim is not None and req > lim:
            r.err(f"{path}.requests.{rname}", f"must be <= limits.{rname}")


def _parse_slo(r: _Reader, data: Any) -> SLO | None:
    path = "spec.slo"
    d = r.obj(data, path)
    lat = r.obj(d.get("latency"), f"{path}.latency")
    pct = r.number(
        lat, "percentile", f"{path}.latency", default=99.0,
        exclusive_minimum=0.0, exclusive_maximum=100.0,
    )
    target = r.number(lat, "targetMs", f"{path}.latency", required=True, exclusive_minimum=0.0)
    min_acc = r.number(d, "minAccuracy", path, default=0.0, minimum=0.0, maximum=1.0)
    max_cost = r.number(d, "maxCostPerHour", path, exclusive_minimum=0.0)
    prio = r.string(d, "priority", path, default="latency", enum=PRIORITIES)
    if pct is None or target is None or min_acc is None:
        return None
    return SLO(
        latency=LatencySLO(pct, target),
        min_accuracy=min_acc,
        max_cost_per_hour=max_cost,
        priority="cost" if prio == "cost" else "accuracy" if prio == "accuracy" else "latency",
    )


def _parse_scaling(r: _Reader, data: Any) -> Scaling:
    path = "spec.scaling"
    d = r.obj(data, path, required=False)
    dflt = Scaling()
    safe: list[SafePlanEntry] = []
    for i, e in enumerate(r.lst(d.get("safePlan"), f"{path}.safePlan", required=False)):
        ep = f"{path}.safePlan[{i}]"
        ed = r.obj(e, ep)
        v = r.string(ed, "variant", ep, required=True)
        p = r.string(ed, "pool", ep, required=True)
        n = r.integer(ed, "replicas", ep, required=True, minimum=0, maximum=1000)
        if v is not None and p is not None and n is not None:
            safe.append(SafePlanEntry(v, p, n))

    def num(key: str, default: float, minimum: float, maximum: float) -> float:
        v = r.number(d, key, path, default=default, minimum=minimum, maximum=maximum)
        return default if v is None else v

    def integer(key: str, default: int, minimum: int, maximum: int) -> int:
        v = r.integer(d, key, path, default=default, minimum=minimum, maximum=maximum)
        return default if v is None else v

    return Scaling(
        min_replicas=integer("minReplicas", dflt.min_replicas, minimum=0, maximum=10_000),
        max_replicas=integer("maxReplicas", dflt.max_replicas, minimum=1, maximum=10_000),
        interval_seconds=num("intervalSeconds", dflt.interval_seconds, minimum=1, maximum=3600),
        scale_up_stabilization_seconds=num(
            "scaleUpStabilizationSeconds", dflt.scale_up_stabilization_seconds,
            minimum=0, maximum=3600,
        ),
        scale_down_stabilization_seconds=num(
            "scaleDownStabilizationSeconds", dflt.scale_down_stabilization_seconds,
            minimum=0, maximum=86_400,
        ),
        headroom=num("headroom", dflt.headroom, minimum=0, maximum=10),
        idle_seconds=num("idleSeconds", dflt.idle_seconds, minimum=0, maximum=86_400 * 7),
        max_scale_up_step=integer("maxScaleUpStep", 0, minimum=0, maximum=10_000),
        max_scale_down_step=integer("maxScaleDownStep", 0, minimum=0, maximum=10_000),
        spot_protection=r.boolean(d, "spotProtection", path, dflt.spot_protection),
        failure_threshold=integer("failureThreshold", dflt.failure_threshold, minimum=1,
                                  maximum=1000),
        safe_plan=tuple(safe),
        recovery_seconds=num("recoverySeconds", dflt.recovery_seconds, minimum=0,
                             maximum=86_400),
        max_headroom=num("maxHeadroom", dflt.max_headroom, minimum=0, maximum=10),
        drain_seconds=num("drainSeconds", dflt.drain_seconds, minimum=0, maximum=3600),
        panic_seconds=num("panicSeconds", dflt.panic_seconds, minimum=0, maximum=3600),
        client_timeout_seconds=r.number(d, "clientTimeoutSeconds", path, exclusive_minimum=0,
                                        maximum=MAX_CLIENT_TIMEOUT_S),
    )


def _parse_metrics(r: _Reader, data: Any) -> Metrics:
    path = "spec.metrics"
    d = r.obj(data, path, required=False)
    prom_d = d.get("prometheus")
    default_source = "prometheus" if prom_d is not None else "triton"
    source = r.string(d, "source", path, default=default_source, enum=METRIC_SOURCES)
    prom: PrometheusSource | None = None
    if prom_d is not None:
        pp = f"{path}.prometheus"
        pd = r.obj(prom_d, pp)
        url = r.string(pd, "url", pp, required=True)
        if url is not None and not _PROMETHEUS_URL.fullmatch(url):
            shown = url if len(url) <= 80 else url[:77] + "..."
            r.err(f"{pp}.url", f"{PROMETHEUS_URL_RULE}; got {shown!r}")
        labels = r.obj(pd.get("labels"), f"{pp}.labels", required=False)
        lp = f"{pp}.labels"
        dflt = PrometheusSource(url="http://x")

        def label(key: str, default: str) -> str:
            # Absent takes the default; "" is checked (and refused) like the schema does.
            value = r.string(labels, key, lp)
            return default if value is None else value

        prom = PrometheusSource(
            url=url or "",
            timeout_seconds=r.number(pd, "timeoutSeconds", pp, default=5.0,
                                     exclusive_minimum=0, maximum=300) or 5.0,
            namespace_label=label("namespace", dflt.namespace_label),
            model_label=label("model", dflt.model_label),
            variant_label=label("variant", dflt.variant_label),
            pool_label=label("pool", dflt.pool_label),
            selector=r.str_map(pd, "selector", pp),
        )
        for key, val in (
            ("namespace", prom.namespace_label),
            ("model", prom.model_label),
            ("variant", prom.variant_label),
            ("pool", prom.pool_label),
        ):
            if len(val) > 128 or not _PROM_LABEL.search(val):
                r.err(f"{lp}.{key}", f"must be a Prometheus label name not starting with "
                      f"'__'; got {val[:80]!r}")
        if prom.variant_label == prom.pool_label:
            r.err(f"{lp}.pool", "must differ from the variant label")
        for key, _ in prom.selector:
            if len(key) > 128 or not _PROM_LABEL.search(key):
                r.err(f"{pp}.selector", f"key {key[:80]!r} must be a Prometheus label name "
                      f"not starting with '__'")
    elif source == "prometheus":
        r.err(f"{path}.prometheus", "is required when source is prometheus")
    port = r.integer(d, "tritonMetricsPort", path, default=8002, minimum=1, maximum=65535)
    return Metrics(source=source or "triton", prometheus=prom, triton_metrics_port=port or 8002)


def _check_safe_plan(
    r: _Reader, scaling: Scaling, variants: Sequence[Variant], pools: Sequence[NodePool],
    slo: SLO, cascade_tiers: set[Any],
) -> None:
    """``scaling.safePlan`` obeys every limit the planner obeys (mirrored by CEL rules).

    Entries naming an unknown variant or pool are reported by the caller; here they
    only count toward nothing."""
    path = "spec.scaling.safePlan"
    vby = {v.name: v for v in variants}
    pby = {p.name: p for p in pools}
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(scaling.safe_plan):
        if (e.variant, e.pool) in seen:
            r.err(f"{path}[{i}]", f"duplicate entry for {e.variant}@{e.pool}")
        seen.add((e.variant, e.pool))
        v = vby.get(e.variant)
        p = pby.get(e.pool)
        if v is not None and v.accuracy < slo.min_accuracy and e.variant not in cascade_tiers:
            r.err(f"{path}[{i}].variant", f"variant {e.variant!r} is below the accuracy "
                  f"floor spec.slo.minAccuracy ({slo.min_accuracy:g})")
        if v is not None and p is not None and v.profile_for(p.accelerator) is None:
            r.err(f"{path}[{i}].pool", f"variant {e.variant!r} has no profile for pool "
                  f"{e.pool!r}'s accelerator {p.accelerator!r}")
    for j, p in enumerate(pools):
        n = sum(e.replicas for e in scaling.safe_plan if e.pool == p.name)
        if n > p.max_replicas:
            r.err(f"{path}", f"puts {n} replicas on pool {p.name!r}, over its "
                  f"spec.nodePools[{j}].maxReplicas ({p.max_replicas})")
    total = sum(e.replicas for e in scaling.safe_plan)
    if total > scaling.max_replicas:
        r.err(f"{path}", f"totals {total} replicas, over spec.scaling.maxReplicas "
              f"({scaling.max_replicas})")
    if slo.max_cost_per_hour is not None:
        # The one price function (a replica costs pricePerHour x gpusPerReplica), summed
        # in entry order like the CEL rule, so both round the same way. (Imported here:
        # core/pricing.py imports this module.)
        from tritonscale.core.pricing import replica_price_per_hour

        cost = 0.0
        for e in scaling.safe_plan:
            p = pby.get(e.pool)
            cost += float(e.replicas) * (replica_price_per_hour(p) if p is not None else 0.0)
        if cost > slo.max_cost_per_hour:
            r.err(f"{path}", f"costs ${cost:g}/h, over spec.slo.maxCostPerHour "
                  f"(${slo.max_cost_per_hour:g}/h)")


def _parse_parent_ref(r: _Reader, data: Any, path: str) -> ParentRef | None:
    d = r.obj(data, path)
    name = r.string(d, "name", path, required=True)
    if name is not None and name and (len(name) > 253 or not _DNS_SUBDOMAIN.search(name)):
        r.err(f"{path}.name", f"must be a lowercase RFC 1123 subdomain of at most 253 "
              f"characters; got {name!r}")
    ns = r.string(d, "namespace", path)
    if ns is not None and (len(ns) > 63 or not _DNS_LABEL.search(ns)):
        r.err(f"{path}.namespace", f"must be a lowercase RFC 1123 label of at most 63 "
              f"characters; got {ns!r}")
    section = r.string(d, "sectionName", path)
    if section is not None and (len(section) > 253 or not _DNS_SUBDOMAIN.search(section)):
        r.err(f"{path}.sectionName", f"must be a lowercase RFC 1123 subdomain of at most "
              f"253 characters; got {section!r}")
    port = r.integer(d, "port", path, minimum=1, maximum=65535)
    for key in d:
        if key not in ("name", "namespace", "sectionName", "port"):
            r.err(f"{path}.{key}", "unknown field (allowed: name, namespace, sectionName, port)")
    if not name:
        return None
    return ParentRef(name, ns, section, port)


def _parse_routing(r: _Reader, data: Any) -> Routing:
    path = "spec.routing"
    d = r.obj(data, path, required=False)
    has_refs = d.get("parentRefs") is not None
    mode = r.string(d, "mode", path, default="gateway" if has_refs else "service",
                    enum=ROUTING_MODES)
    protocols: list[str] = []
    pitems = r.lst(d.get("protocols"), f"{path}.protocols", required=False)
    if d.get("protocols") is not None and not pitems:
        r.err(f"{path}.protocols", "must have at least one entry")
    for i, proto in enumerate(pitems):
        if proto not in ROUTE_PROTOCOLS:
            r.err(f"{path}.protocols[{i}]",
                  f"must be one of {', '.join(ROUTE_PROTOCOLS)}; got {proto!r}")
        elif proto in protocols:
            r.err(f"{path}.protocols[{i}]", f"duplicate protocol {proto!r}")
        else:
            protocols.append(proto)
    refs: list[ParentRef] = []
    ritems = r.lst(d.get("parentRefs"), f"{path}.parentRefs", required=False)
    if has_refs and not ritems:
        r.err(f"{path}.parentRefs", "must have at least one entry")
    if len(ritems) > MAX_PARENT_REFS:
        r.err(f"{path}.parentRefs", f"must have at most {MAX_PARENT_REFS} entries; "
              f"got {len(ritems)}")
    for i, item in enumerate(ritems[:MAX_PARENT_REFS]):
        ref = _parse_parent_ref(r, item, f"{path}.parentRefs[{i}]")
        if ref is None:
            continue
        if ref in refs:
            r.err(f"{path}.parentRefs[{i}]", "duplicate parent reference")
        refs.append(ref)
    if mode == "gateway" and not has_refs:
        r.err(f"{path}.parentRefs", "is required when mode is gateway")
    if mode == "service" and has_refs:
        r.err(f"{path}.parentRefs",
              "is only used when mode is gateway (set mode: gateway or remove parentRefs)")
    return Routing(
        mode="gateway" if mode == "gateway" else "service",
        protocols=tuple(protocols) or ("http",),
        parent_refs=tuple(refs),
    )


def _check_cascade_serving(r: _Reader, model: ModelSpec | None, routing: Routing) -> None:
    """What serving a cascade needs from the rest of the spec (CEL rules mirror it)."""
    name = model.name if model is not None else None
    if name and (len(name) > MAX_CASCADE_MODEL_NAME or not CASCADE_MODEL_NAME.search(name)):
        r.err("spec.model.name",
              f"a cascade's model name names its router model and directory: at most "
              f"{MAX_CASCADE_MODEL_NAME} letters, digits, _ and -, not starting with -; "
              f"got {name[:40]!r}")
    if routing.weighted:
        r.err("spec.routing.mode",
              "gateway routing is not supported with spec.cascade (routes would send "
              "requests past the router straight to tier 2); use mode service")


def parse_spec(data: Any) -> ScaledModelSpec:
    """Parse a ScaledModel ``spec`` mapping; raise :class:`SpecError` listing every problem."""
    r = _Reader()
    d = r.obj(data, "spec")
    model = _parse_model(r, d.get("model"))
    variants: list[Variant] = []
    vitems = r.lst(d.get("variants"), "spec.variants")
    if d.get("variants") is not None and not vitems:
        r.err("spec.variants", "must have at least one entry")
    for i, vd in enumerate(vitems):
        v = _parse_variant(r, vd, f"spec.variants[{i}]")
        if v is not None:
            variants.append(v)
    r.unique([v.name for v in variants], "spec.variants", "variant")
    pools: list[NodePool] = []
    pitems = r.lst(d.get("nodePools"), "spec.nodePools")
    if d.get("nodePools") is not None and not pitems:
        r.err("spec.nodePools", "must have at least one entry")
    for i, pd in enumerate(pitems):
        p = _parse_pool(r, pd, f"spec.nodePools[{i}]")
        if p is not None:
            pools.append(p)
    r.unique([p.name for p in pools], "spec.nodePools", "node pool")
    slo = _parse_slo(r, d.get("slo"))
    scaling = _parse_scaling(r, d.get("scaling"))
    metrics = _parse_metrics(r, d.get("metrics"))
    cascade = parse_cascade(r, d.get("cascade"), {v.name for v in variants},
                            slo.min_accuracy if slo is not None else None)
    routing = _parse_routing(r, d.get("routing"))
    if d.get("cascade") is not None:
        _check_cascade_serving(r, model, routing)

    # Cross-field rules (mirrored by CEL rules in the CRD).
    if scaling.min_replicas > scaling.max_replicas:
        r.err(
            "spec.scaling.minReplicas",
            f"must be <= spec.scaling.maxReplicas ({scaling.max_replicas}); "
            f"got {scaling.min_replicas}",
        )
    accelerators = {p.accelerator for p in pools}
    for i, v in enumerate(variants):
        if pools and not any(p.accelerator in accelerators for p in v.profiles):
            r.err(
                f"spec.variants[{i}].profiles",
                f"variant {v.name!r} has no profile for any node pool's accelerator "
                f"({', '.join(sorted(accelerators))})",
            )
    if slo is not None and variants and d.get("cascade") is None and not any(
        v.accuracy >= slo.min_accuracy for v in variants
    ):
        r.err(
            "spec.slo.minAccuracy",
            f"no variant meets the accuracy floor {slo.min_accuracy:g} "
            f"(best is {max(v.accuracy for v in variants):g})",
        )
    vnames = {v.name for v in variants}
    pnames = {p.name for p in pools}
    for i, e in enumerate(scaling.safe_plan):
        if e.variant not in vnames:
            r.err(f"spec.scaling.safePlan[{i}].variant", f"unknown variant {e.variant!r}")
        if e.pool not in pnames:
            r.err(f"spec.scaling.safePlan[{i}].pool", f"unknown node pool {e.pool!r}")
    if slo is not None:
        # A cascade's tiers answer together: a tier below the floor may run (the
        # cascade's curve is what meets it), so the safe plan may name it too.
        raw = d.get("cascade")
        tiers = raw.get("tiers") if isinstance(raw, Mapping) else None
        tier_variants = {t.get("variant") for t in tiers if isinstance(t, Mapping)} \
            if isinstance(tiers, list) else set()
        _check_safe_plan(r, scaling, variants, pools, slo, tier_variants)
    total_pool_max = sum(p.max_replicas for p in pools)
    if pools and scaling.min_replicas > total_pool_max:
        r.err(
            "spec.scaling.minReplicas",
            f"exceeds the sum of spec.nodePools[*].maxReplicas ({total_pool_max})",
        )

    if r.errors or model is None or slo is None:
        if not r.errors:  # pragma: no cover - defensive: a None always logs an error
            r.err("spec", "is invalid")
        raise SpecError(r.errors)
    return ScaledModelSpec(
        model=model,
        variants=tuple(variants),
        node_pools=tuple(pools),
        slo=slo,
        scaling=scaling,
        metrics=metrics,
        cascade=cascade,
        routing=routing,
    )


def parse_manifest(doc: Any) -> tuple[str, str, ScaledModelSpec]:
    """Parse a whole ScaledModel object; return (namespace, name, spec)."""
    r = _Reader()
    d = r.obj(doc, "<document>")
    if d.get("apiVersion") != API_VERSION:
        r.err("apiVersion", f"must be {API_VERSION}; got {d.get('apiVersion')!r}")
    if d.get("kind") != KIND:
        r.err("kind", f"must be {KIND}; got {d.get('kind')!r}")
    meta = r.obj(d.get("metadata"), "metadata")
    name = r.string(meta, "name", "metadata", required=True)
    if name is not None and (not _OBJECT_NAME.search(name) or len(name) > MAX_PART_NAME):
        r.err("metadata.name", f"must be an RFC 1035 label (lowercase, starting with a "
              f"letter: it names the Service) of at most {MAX_PART_NAME} characters; "
              f"got {name[:40]!r}")
    ns = r.string(meta, "namespace", "metadata", default="default") or "default"
    errors = list(r.errors)
    try:
        spec = parse_spec(d.get("spec"))
    except SpecError as e:
        errors.extend(e.errors)
        raise SpecError(errors) from None
    if errors:
        raise SpecError(errors)
    return ns, name or "", spec

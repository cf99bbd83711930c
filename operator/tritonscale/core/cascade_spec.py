"""``spec.cascade``: the contract of a two-tier cascade, parsed and validated.

Pure code. A cascade serves every request with the first tier's variant; a request
whose confidence (the tier's ``confidence.output`` tensor, in [0, 1]) is below the
threshold escalates to the last tier, which answers everything it receives::

    cascade:
      tiers:
        - variant: distil-int8
          escalateBelow:                     # measured on a labelled sample
            - {threshold: 0.5, escalated: 0.12, accuracy: 0.8925}
            - {threshold: 0.7, escalated: 0.20, accuracy: 0.8975}
        - variant: large-int8
      confidence: {output: CONFIDENCE}
      io:                                    # the model's tensors (the router declares them)
        maxBatchSize: 64
        inputs: [{name: INPUT, dataType: FP32, dims: [64]}]
        outputs: [{name: LABEL, dataType: INT32, dims: [1]},
                  {name: CONFIDENCE, dataType: FP32, dims: [1]}]
      hopMs: 1                               # optional: tier 1 -> tier 2 network hop

``escalated`` is the fraction of *all* requests passed on at that threshold and
``accuracy`` the whole cascade's accuracy there (``tritonscale profile --cascade``
measures both). Exactly two tiers: a point's accuracy is the whole cascade's, which
for three tiers would depend on both thresholds jointly, so a per-tier curve could
not express it.

The same verdicts are CEL rules in crds/scaledmodel.yaml (tests/unit/test_cel.py
checks they agree): unknown or repeated variants, a first tier without points or a
last tier with them, thresholds not strictly ascending, ``escalated`` falling as the
threshold rises (it cannot: a higher threshold escalates a superset), fractions
outside [0, 1], and a curve whose best point is below ``slo.minAccuracy``.

``io`` describes the model's tensors, alike on both tiers: the operator serves the
cascade through a router model loaded next to tier 1 (core/cascade_render.py), and
Triton needs the router's ``config.pbtxt`` to declare them. Names end up inside
that file, so they are held to :data:`TENSOR_NAME` (no quotes, spaces or
backslashes); types are the numeric ones the router moves over HTTP/JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tritonscale.core import k8sformat as k8s

if TYPE_CHECKING:  # the reader lives in core.spec, which imports this module
    from tritonscale.core.spec import _Reader as Reader

MAX_POINTS = 8
DEFAULT_HOP_MS = 1.0
# Tensor names as the CRD's pattern has them: they are written into config.pbtxt.
TENSOR_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$"
TENSOR_NAME = k8s.re2(TENSOR_NAME_PATTERN)  # RE2's "$": no trailing newline
MAX_TENSOR_NAME = 128
MAX_TENSORS = 16
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
MAX_BATCH = 4096
# The data types the router forwards (numpy dtypes with a KServe v2 JSON form).
DATA_TYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
              "INT64", "FP16", "FP32", "FP64")
# A cascade's model name also names the router model (``<name>-cascade``) and its
# directory in the router's ConfigMap volume: no dots, slashes or quotes.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
MODEL_NAME = k8s.re2(MODEL_NAME_PATTERN)
MAX_MODEL_NAME = 100


@dataclass(frozen=True)
class Tensor:
    """One input or output tensor (without the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class CascadeIO:
    """The model's tensors, declared by the router's config.pbtxt."""

    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class EscalationPoint:
    """At ``threshold``: the fraction of all requests escalated and the cascade's accuracy."""

    threshold: float
    escalated: float
    accuracy: float


@dataclass(frozen=True)
class CascadeTier:
    variant: str
    escalate_below: tuple[EscalationPoint, ...] = ()


@dataclass(frozen=True)
class Cascade:
    tiers: tuple[CascadeTier, ...]
    confidence_output: str
    io: CascadeIO
    hop_ms: float = DEFAULT_HOP_MS

    @property
    def first(self) -> CascadeTier:
        return self.tiers[0]

    @property
    def last(self) -> CascadeTier:
        return self.tiers[-1]

    @property
    def points(self) -> tuple[EscalationPoint, ...]:
        return self.tiers[0].escalate_below

    def variants(self) -> tuple[str, ...]:
        return tuple(t.variant for t in self.tiers)

    def point(self, threshold: float) -> EscalationPoint | None:
        for p in self.points:
            if abs(p.threshold - threshold) < 1e-9:
                return p
        return None


def parse_cascade(
    r: Reader, data: Any, variant_names: set[str], min_accuracy: float | None
) -> Cascade | None:
    """Read ``spec.cascade`` (None when absent); problems go to ``r``."""
    if data is None:
        return None
    path = "spec.cascade"
    d = r.obj(data, path)
    tiers: list[CascadeTier] = []
    items = r.lst(d.get("tiers"), f"{path}.tiers")
    if d.get("tiers") is not None and len(items) != 2:
        r.err(f"{path}.tiers", f"must have exactly 2 tiers; got {len(items)}")
    seen: set[str] = set()
    for i, td in enumerate(items):
        tp = f"{path}.tiers[{i}]"
        t = r.obj(td, tp)
        name = r.string(t, "variant", tp, required=True)
        if name is not None and variant_names and name not in variant_names:
            r.err(f"{tp}.variant", f"must name one of spec.variants; got {name!r}")
        if name is not None and name in seen:
            r.err(f"{tp}.variant", f"variant {name!r} already serves another tier")
        if name is not None:
            seen.add(name)
        last = i == len(items) - 1
        raw = t.get("escalateBelow")
        if last and raw is not None:
            r.err(f"{tp}.escalateBelow", "the last tier answers everything it receives; "
                  "remove escalateBelow")
        if not last and not raw:
            r.err(f"{tp}.escalateBelow", "is required (at least one point) on every tier "
                  "but the last")
        pts = _parse_points(r, raw, f"{tp}.escalateBelow") if not last else ()
        if name is not None:
            tiers.append(CascadeTier(name, pts))
    conf = r.obj(d.get("confidence"), f"{path}.confidence")
    output = r.string(conf, "output", f"{path}.confidence", required=True)
    if output:
        _tensor_name(r, output, f"{path}.confidence.output")
    io = _parse_io(r, d.get("io"), f"{path}.io")
    if output and io is not None and output not in {t.name for t in io.outputs}:
        r.err(f"{path}.confidence.output",
              f"must name one of {path}.io.outputs; got {output[:40]!r}")
    hop = r.number(d, "hopMs", path, default=DEFAULT_HOP_MS, minimum=0.0, maximum=10_000.0)
    if tiers and tiers[0].escalate_below and min_accuracy is not None:
        best = max(p.accuracy for p in tiers[0].escalate_below)
        if best < min_accuracy:
            r.err(f"{path}.tiers[0].escalateBelow",
                  f"best accuracy {best:g} is below spec.slo.minAccuracy {min_accuracy:g}")
    if output is None or io is None or len(tiers) != 2 or len(items) != 2:
        return None
    return Cascade(tuple(tiers), output, io, DEFAULT_HOP_MS if hop is None else hop)


def _tensor_name(r: Reader, name: str, path: str) -> None:
    if len(name) > MAX_TENSOR_NAME or not TENSOR_NAME.search(name):
        r.err(path, f"must be a tensor name of at most {MAX_TENSOR_NAME} characters "
              f"(letters, digits, _ . : / -, not starting with . : / -); got {name[:40]!r}")


def _parse_io(r: Reader, data: Any, path: str) -> CascadeIO | None:
    d = r.obj(data, path)
    if not d:
        return None
    mbs = r.integer(d, "maxBatchSize", path, required=True, minimum=1, maximum=MAX_BATCH)
    groups: list[tuple[Tensor, ...]] = []
    for key in ("inputs", "outputs"):
        items = r.lst(d.get(key), f"{path}.{key}")
        if d.get(key) is not None and not items:
            r.err(f"{path}.{key}", "must have at least one tensor")
        if len(items) > MAX_TENSORS:
            r.err(f"{path}.{key}", f"must have at most {MAX_TENSORS} tensors; got {len(items)}")
        out: list[Tensor] = []
        for i, td in enumerate(items):
            tp = f"{path}.{key}[{i}]"
            t = r.obj(td, tp)
            name = r.string(t, "name", tp, required=True)
            if name:
                _tensor_name(r, name, f"{tp}.name")
            dtype = r.string(t, "dataType", tp, required=True, enum=DATA_TYPES)
            dims = _parse_dims(r, t.get("dims"), f"{tp}.dims")
            if name and dtype in DATA_TYPES and dims is not None:
                out.append(Tensor(name, dtype, dims))
        groups.append(tuple(out))
    names = [t.name for g in groups for t in g]
    if len(set(names)) != len(names):
        r.err(path, "tensor names must be unique across inputs and outputs")
    if mbs is None or not groups[0] or not groups[1]:
        return None
    return CascadeIO(mbs, groups[0], groups[1])


def _parse_dims(r: Reader, data: Any, path: str) -> tuple[int, ...] | None:
    items = r.lst(data, path)
    if data is None:
        return None
    if not 1 <= len(items) <= MAX_DIMS:
        r.err(path, f"must have 1 to {MAX_DIMS} dimensions; got {len(items)}")
        return None
    dims: list[int] = []
    for j, v in enumerate(items):
        jp = f"{path}[{j}]"
        if isinstance(v, bool) or not isinstance(v, int):
            r.err(jp, f"must be an integer, got {type(v).__name__}")
        elif v < -1:
            r.err(jp, f"must be >= -1; got {v}")
        elif v > MAX_DIM:
            r.err(jp, f"must be <= {MAX_DIM}; got {v}")
        elif v == 0:
            r.err(path, "each must be -1 (variable) or positive; got 0")
        else:
            dims.append(v)
    return tuple(dims) if len(dims) == len(items) else None


def _parse_points(r: Reader, data: Any, path: str) -> tuple[EscalationPoint, ...]:
    out: list[EscalationPoint] = []
    items = r.lst(data, path, required=False)
    if len(items) > MAX_POINTS:
        r.err(path, f"must have at most {MAX_POINTS} points; got {len(items)}")
    for j, pd in enumerate(items):
        pp = f"{path}[{j}]"
        p = r.obj(pd, pp)
        vals = [r.number(p, k, pp, required=True, minimum=0.0, maximum=1.0)
                for k in ("threshold", "escalated", "accuracy")]
        t, e, a = vals
        if t is not None and e is not None and a is not None:
            out.append(EscalationPoint(t, e, a))
    for a_pt, b_pt in itertools.pairwise(out):
        if b_pt.threshold <= a_pt.threshold:
            r.err(path, "thresholds must be strictly ascending")
            break
    for a_pt, b_pt in itertools.pairwise(out):
        if b_pt.escalated < a_pt.escalated:
            r.err(path, "escalated must not decrease as the threshold rises")
            break
    return tuple(out)

"""Kopf wiring: thin handlers that hand the object to the :class:`Reconciler`.

Importing this module registers the handlers in Kopf's default registry;
``tritonscale run`` passes everything they need in the memo (``reconciler``,
``shard``, ``ticks``: the settings are code, not environment variables).

- create / update (spec changed) / resume: reconcile with a fresh decision;
  API failures become ``kopf.TemporaryError`` so Kopf retries with a delay.
- ticks: ONE operator-wide loop (:class:`tritonscale.handlers.ticker.TickLoop`,
  started by :func:`start_ticking`) decides again for each ScaledModel once its
  ``spec.scaling.intervalSeconds`` passed, at a per-uid phase so 2,000 models do
  not wake together. It walks :func:`scaledmodels`, Kopf's index of the models this
  shard owns. There is no per-object Kopf timer: Kopf adds its finalizer to
  every object with a timer or daemon, and none to objects that only have
  create/update/resume/event/index handlers.
- events of owned Deployments: refresh ready counts and finish make-before-break
  transitions as soon as replacements become Ready.
- Nodes tainted for a spot interruption (:data:`tritonscale.core.interruption.
  INTERRUPTION_TAINTS`): the ScaledModels with a pool whose nodeSelector the node
  matches decide at once (:meth:`TickLoop.nudge`, an off-cadence decision that only
  re-plans), not at their next ``intervalSeconds`` slot; the Nodes cache of those
  selectors is dropped first so the decision sees the taint. Only the first event of
  a taint nudges; its removal is remembered so a new taint nudges again.
- deletion of an owned Service (the model's, a cascade's tier-2, a placement's):
  apply it again at once. Deployments and Services are watched with a server-side
  label selector (managed-by tritonscale, with a ScaledModel label), so the operator
  never receives anybody else's. ConfigMaps are not watched (RBAC grants no list or
  watch of them): a deleted cascade ConfigMap is noticed at the model's next decision.
- deletion: the operator adds NO finalizer; nothing needs cleaning up outside
  owner references (garbage collection removes the Deployments and the Service),
  so a ScaledModel, or the CRD, deletes even while the operator is down. When a
  model leaves the index (Kopf drops it on the DELETED watch event) the tick loop
  drops its in-memory state (``Reconciler.forget``).
- shards (``memo.shard``): every handler and both indexes filter on the uid (the
  owner's uid for Deployments), so N operators split the ScaledModels.
- lanes: spec changes (create / update / resume) run in ``memo.spec_executor``,
  ticks and Deployment events in ``memo.background_executor``, so a spec change never
  queues behind 2,000 ticks or a flood of Deployment events. The indexes are
  ``async`` (cheap; no thread hop per watch event).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

import kopf

from tritonscale.core import interruption as ir
from tritonscale.core.api import (
    ANNOTATION_SPEC_HASH,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_SM,
    MANAGER,
    PLURAL,
    VERSION,
)
from tritonscale.core.fleet import Shard
from tritonscale.handlers.reconcile import ReconcileError, Reconciler
from tritonscale.handlers.ticker import PeeringGate, TickLoop

DEFAULT_TICK_SECONDS = 1.0
DEFAULT_TICK_WORKERS = 4
# Kopf waits this long for the event of its own annotation patch before it handles a
# stale body again (its default, 5 s, ran on_create twice for most objects when the
# watch lagged under load: twice the work, and a backlog of bodies in memory).
CONSISTENCY_TIMEOUT_SECONDS = 60.0

T = TypeVar("T")

OWNED_LABELS: Mapping[str, Any] = {LABEL_SM: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER}
OWNED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_SM}"

log = logging.getLogger(__name__)


def plain(obj: Any) -> Any:
    """Kopf bodies are mapping views; the reconciler gets plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _reconciler(memo: Any) -> Reconciler:
    r = getattr(memo, "reconciler", None)
    if r is None:  # pragma: no cover - run.py always sets it
        raise kopf.PermanentError("tritonscale: no reconciler configured in memo")
    assert isinstance(r, Reconciler)
    return r


def _shard(memo: Any) -> Shard:
    shard = getattr(memo, "shard", None)
    return shard if isinstance(shard, Shard) else Shard()


def owned_model(uid: str | None, memo: Any, **_: Any) -> bool:
    """Filter of every ScaledModel handler: is this model in our shard?"""
    return _shard(memo).owns(uid)


def owned_deployment(meta: Mapping[str, Any], memo: Any, **_: Any) -> bool:
    """Filter of the Deployment handlers: is the owning ScaledModel in our shard?"""
    shard = _shard(memo)
    if shard.count == 1:
        return True
    refs = meta.get("ownerReferences") or []
    return any(r.get("kind") == "ScaledModel" and shard.owns(r.get("uid")) for r in refs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Keep Kopf's bookkeeping in annotations: the CRD's status schema is strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our own Events explain every change; Kopf's per-handler ones would be noise.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = int(getattr(memo, "max_workers", 0) or 16)
    # Only our objects on the watch streams (the API server filters): the handlers'
    # labels= filters alone run client-side, after every Deployment and Service of
    # the watched namespaces was sent and parsed.
    for resource in (("apps", "v1", "deployments"), ("v1", "services")):
        settings.watching.label_selectors[resource] = OWNED_SELECTOR
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT_SECONDS
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Exact namespaces (run.scans_namespaces): no Namespace listing, so a namespaced
    # service account starts at once instead of retrying a 403 for ~55 s.
    if getattr(memo, "scan_cluster", True) is False:
        settings.scanning.disabled = True
    lifetime = getattr(memo, "peering_lifetime", None)
    if lifetime:
        settings.peering.lifetime = int(lifetime)


# Watch-event handlers that run on every event of our Deployments and Services:
# Kopf logs "Handler '<id>' succeeded." at INFO after each (thousands of lines, and
# their formatting, at 2,000 ScaledModels). Failures and warnings still show.
EVENT_HANDLERS = ("on_deployment", "on_owned_service", "on_node")


class QuietEventHandlers(logging.Filter):
    """Drops Kopf's INFO "succeeded" line of :data:`EVENT_HANDLERS` (``kopf.objects``)."""

    _lines = frozenset(f"Handler {h!r} succeeded." for h in EVENT_HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.msg not in self._lines


def quiet_event_handlers(logger: logging.Logger | None = None) -> None:
    """Install :class:`QuietEventHandlers` on Kopf's per-object logger (once)."""
    target = logger or logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietEventHandlers) for f in target.filters):
        target.addFilter(QuietEventHandlers())


def _lane(memo: Any, name: str) -> Executor | None:
    """``memo.spec_executor`` / ``memo.background_executor``; None: asyncio's default."""
    executor = getattr(memo, name, None)
    return executor if isinstance(executor, Executor) else None


async def _in_lane(memo: Any, lane: str, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a lane's threads, with the caller's context
    (Kopf's per-object logger posts its Events through context variables)."""
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_lane(memo, lane), call)


@kopf.index(GROUP, VERSION, PLURAL, when=owned_model)
async def scaledmodels(uid: str, body: Any, **_: Any) -> dict[str, dict[str, Any]]:
    """The ScaledModels this shard owns, by uid, as the tick loop reads them: what the
    reconciler needs (metadata, spec, status), without Kopf's bookkeeping annotations."""
    meta = body.get("metadata") or {}
    return {uid: {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "labels": plain(meta.get("labels") or {}),
        },
        "spec": plain(body.get("spec") or {}),
        "status": plain(body.get("status") or {}),
    }}


def _bodies(index: Any) -> Iterator[Mapping[str, Any]]:
    for store in index.values():
        yield from store


@kopf.on.startup()
async def start_ticking(
    memo: Any, settings: kopf.OperatorSettings, scaledmodels: Any = None,
    deployments_by_model: Any = None, **_: Any,
) -> None:
    """Start the operator-wide tick loop (one asyncio task for all ScaledModels)."""
    reconciler = _reconciler(memo)

    def decider(decide: Callable[[Mapping[str, Any], Any], Any], failed: str
                ) -> Callable[[Mapping[str, Any]], None]:
        """One model's decision (``decide`` with its indexed Deployments); a failure
        is logged with ``failed`` (namespace, name, error) and waits for the next."""
        def run(body: Mapping[str, Any]) -> None:
            meta = body["metadata"]
            try:
                decide(body, _indexed(
                    deployments_by_model, str(meta.get("namespace")), str(meta.get("name"))))
            except ReconcileError as e:
                log.warning(failed, meta.get("namespace"), meta.get("name"), e)
        return run

    tick = decider(reconciler.tick,
                   "autoscale step of %s/%s failed, retrying next interval: %s")
    notice = decider(reconciler.notice, "decision of %s/%s on an interruption notice "
                                        "failed, its next interval decides: %s")

    gate = getattr(memo, "gate", None)
    loop = TickLoop(
        entries=lambda: _bodies(scaledmodels or {}),
        tick=tick,
        due=reconciler.due,
        resolution=float(getattr(memo, "tick_seconds", 0) or DEFAULT_TICK_SECONDS),
        concurrency=int(getattr(memo, "tick_workers", 0) or DEFAULT_TICK_WORKERS),
        gate=gate if isinstance(gate, PeeringGate) else PeeringGate(),
        executor=_lane(memo, "background_executor") or settings.execution.executor,
        gone=reconciler.forget,
        notice=notice,
    )
    memo.tick_loop = loop
    memo.tick_task = asyncio.create_task(loop.run(), name="tritonscale tick loop")


@kopf.on.cleanup()
async def stop_ticking(memo: Any, **_: Any) -> None:
    task = getattr(memo, "tick_task", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@kopf.index(
    "apps", "v1", "deployments",
    labels={LABEL_SM: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER},
    when=owned_deployment,
)
async def deployments_by_model(
    namespace: str | None, labels: Mapping[str, str], body: Any, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """The operator's Deployments per (namespace, ScaledModel), kept by Kopf's watch,
    so a reconcile reads them from memory instead of listing them from the API."""
    return {(namespace or "", labels[LABEL_SM]): _slim(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def model_names(uid: str | None, body: Any, memo: Any, **_: Any) -> dict[Any, Any]:
    """Tell the reconciler which Triton model each ScaledModel serves. Kopf fills
    indexes before it runs any handler, so the first reconcile of a ScaledModel
    already knows every older one serving the same model name in its namespace
    (core/admission.py: they would count each other's traffic)."""
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None and uid:
        meta = body.get("metadata") or {}
        model = (body.get("spec") or {}).get("model")
        reconciler.claim(uid, {
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "creationTimestamp")},
            "spec": {"model": {"name": model.get("name")}} if isinstance(model, Mapping)
            else {},
        })
    return {}


def _slim(body: Any) -> dict[str, Any]:
    """What the reconciler reads of a Deployment (keeps the index small)."""
    meta = body.get("metadata") or {}
    ann = meta.get("annotations") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "labels": plain(meta.get("labels") or {}),
            "annotations": {k: v for k, v in ann.items() if k == ANNOTATION_SPEC_HASH},
            "ownerReferences": plain(meta.get("ownerReferences") or []),
        },
        "spec": {"replicas": (body.get("spec") or {}).get("replicas")},
        "status": plain(body.get("status") or {}),
    }


def _indexed(index: Any, namespace: str, name: str) -> list[dict[str, Any]] | None:
    if index is None:
        return None
    return [dict(d) for d in index.get((namespace, name), [])]


def _spec_handler(body: Any, memo: Any, logger: Any, index: Any = None) -> None:
    meta = body.get("metadata") or {}
    try:
        out = _reconciler(memo).reconcile(
            plain(body), decide=True,
            deployments=_indexed(index, str(meta.get("namespace")), str(meta.get("name"))),
        )
    except ReconcileError as e:
        raise kopf.TemporaryError(str(e), delay=e.delay) from e
    if not out.valid:
        logger.warning("invalid spec: %s", "; ".join(out.errors[:5]))


async def _spec_lane(body: Any, memo: Any, logger: Any, index: Any) -> None:
    await _in_lane(memo, "spec_executor", _spec_handler, body, memo, logger, index)


@kopf.on.create(GROUP, VERSION, PLURAL, when=owned_model)
async def on_create(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    await _spec_lane(body, memo, logger, deployments_by_model)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=owned_model)
async def on_update(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    await _spec_lane(body, memo, logger, deployments_by_model)


@kopf.on.resume(GROUP, VERSION, PLURAL, when=owned_model)
async def on_resume(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    await _spec_lane(body, memo, logger, deployments_by_model)


def _model_of(models: Any, body: Mapping[str, Any]) -> Callable[[str, str], Any] | None:
    """The owning ScaledModel as the ``scaledmodels`` index holds it (by the uid of
    the object's controller reference), so a watch event of one of our objects needs
    no GET of its ScaledModel; None when the index lacks it (the reconciler GETs)."""
    if models is None:
        return None
    refs = (body.get("metadata") or {}).get("ownerReferences") or ()
    uids = [str(r.get("uid")) for r in refs if isinstance(r, Mapping)
            and r.get("kind") == "ScaledModel" and r.get("controller") is True]

    def lookup(namespace: str, name: str) -> Any:
        for uid in uids:
            for m in models.get(uid, ()):
                meta = m.get("metadata") or {}
                if meta.get("namespace") == namespace and meta.get("name") == name:
                    return m
        return None

    return lookup


def _deployment_event(type: str, body: Any, memo: Any, index: Any,
                      models: Any = None) -> None:
    try:
        dep = plain(body)
        _reconciler(memo).deployment_event(
            dep, deleted=type == "DELETED",
            deployments=lambda ns, sm: _indexed(index, ns, sm),
            model=_model_of(models, dep),
        )
    except ReconcileError as e:
        log.warning("refresh after a Deployment event failed: %s", e)


@kopf.on.event(
    "apps", "v1", "deployments",
    labels={LABEL_SM: kopf.PRESENT, LABEL_MANAGED_BY: MANAGER},
    when=owned_deployment,
)
async def on_deployment(
    type: str | None, body: Any, memo: Any, deployments_by_model: Any = None,
    scaledmodels: Any = None, **_: Any,
) -> None:
    if type is None:
        return  # the initial listing: on_resume already reconciles every ScaledModel
    await _in_lane(memo, "background_executor", _deployment_event, type, body, memo,
                   deployments_by_model, scaledmodels)


def _owned_deleted(body: Any, memo: Any, index: Any, models: Any = None) -> None:
    try:
        obj = plain(body)
        _reconciler(memo).owned_object_deleted(
            obj, deployments=lambda ns, sm: _indexed(index, ns, sm),
            model=_model_of(models, obj))
    except ReconcileError as e:
        log.warning("re-applying a deleted Service failed: %s", e)


@kopf.on.event("v1", "services", labels=OWNED_LABELS, when=owned_deployment)
async def on_owned_service(
    type: str | None, body: Any, memo: Any, deployments_by_model: Any = None,
    scaledmodels: Any = None, **_: Any,
) -> None:
    if type != "DELETED":
        return
    await _in_lane(memo, "background_executor", _owned_deleted, body, memo,
                   deployments_by_model, scaledmodels)


def _node_taint(body: Mapping[str, Any]) -> tuple[str, str | None]:
    meta = body.get("metadata") or {}
    return str(meta.get("name") or ""), ir.interruption_taint(body)


def node_of_interest(body: Any, memo: Any, **_: Any) -> bool:
    """Filter of :func:`on_node`: tainted for an interruption, or was (its taint went)."""
    name, taint = _node_taint(body)
    return taint is not None or name in _noticed_nodes(memo)


def _noticed_nodes(memo: Any) -> dict[str, str]:
    seen = getattr(memo, "noticed_nodes", None)
    if not isinstance(seen, dict):
        seen = {}
        memo.noticed_nodes = seen
    return seen


@kopf.on.event("", "v1", "nodes", when=node_of_interest)
async def on_node(
    type: str | None, body: Any, memo: Any, scaledmodels: Any = None, **_: Any,
) -> None:
    """A Node newly tainted for an interruption: the models that may run there decide
    now. Cheap (no API call here): the decisions run in the tick loop's workers."""
    name, taint = _node_taint(body)
    seen = _noticed_nodes(memo)
    if type == "DELETED" or taint is None:
        seen.pop(name, None)
        return
    if not name or seen.get(name) == taint:
        return  # this taint was seen already (a later event of the same node)
    seen[name] = taint
    labels = plain((body.get("metadata") or {}).get("labels") or {})
    invalidate = getattr(_reconciler(memo).interruptions, "invalidate", None)
    if callable(invalidate):
        invalidate(labels)
    uids = ir.models_on_node(_bodies(scaledmodels or {}), labels)
    loop = getattr(memo, "tick_loop", None)
    queued = loop.nudge(uids) if isinstance(loop, TickLoop) else 0
    log.info("node %s tainted %s: %d ScaledModel(s) may run there, %d decide now",
             name, taint, len(uids), queued)


@kopf.on.probe(id="reconciler")
def probe(memo: Any, **_: Any) -> str:
    return "configured" if getattr(memo, "reconciler", None) is not None else "missing"

"""Kopf wiring: thin handlers that hand the object to the :class:`Reconciler`.

Importing this module registers the handlers in Kopf's default registry;
``tritonscale run`` imports it and passes the reconciler in ``memo.reconciler``.

- create / update (spec changed) / resume: reconcile with a fresh decision;
  API failures become ``kopf.TemporaryError`` so Kopf retries with a delay.
- timer (every ``TRITONSCALE_TICK_SECONDS``, default 5 s): decide again once the
  ScaledModel's own ``spec.scaling.intervalSeconds`` has passed.
- events of owned Deployments: refresh ready counts and finish make-before-break
  transitions as soon as replacements become Ready.
- delete: nothing to clean up in the cluster (ownerReferences + garbage
  collection); forget in-memory state. ``optional=True`` would mean no finalizer,
  but Kopf adds its finalizer anyway to every object that has a timer
  (nolar/kopf#1074), so deleting a ScaledModel while the operator is down waits
  for it to come back (docs/quickstart.md, "Deleting while the operator is down").
  Replacing the per-object timer by one operator-wide loop would remove it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from tritonscale.core.render import ANNOTATION_SPEC_HASH, GROUP, LABEL_SM, MANAGER
from tritonscale.handlers.reconcile import ReconcileError, Reconciler

VERSION = "v1alpha1"
PLURAL = "scaledmodels"
DEFAULT_TICK_SECONDS = 5.0
# Kopf timers have a fixed interval, read when this module is imported; each tick
# only decides when the ScaledModel's own intervalSeconds has passed.
TICK_SECONDS = float(os.environ.get("TRITONSCALE_TICK_SECONDS") or DEFAULT_TICK_SECONDS)

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
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30


@kopf.index(
    "apps", "v1", "deployments",
    labels={LABEL_SM: kopf.PRESENT, "app.kubernetes.io/managed-by": MANAGER},
)
def deployments_by_model(
    namespace: str | None, labels: Mapping[str, str], body: Any, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """The operator's Deployments per (namespace, ScaledModel), kept by Kopf's watch,
    so a reconcile reads them from memory instead of listing them from the API."""
    return {(namespace or "", labels[LABEL_SM]): _slim(body)}


@kopf.index(GROUP, VERSION, PLURAL)
def model_names(uid: str | None, body: Any, memo: Any, **_: Any) -> dict[Any, Any]:
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


@kopf.on.create(GROUP, VERSION, PLURAL)
def on_create(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    _spec_handler(body, memo, logger, deployments_by_model)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_update(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    _spec_handler(body, memo, logger, deployments_by_model)


@kopf.on.resume(GROUP, VERSION, PLURAL)
def on_resume(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    _spec_handler(body, memo, logger, deployments_by_model)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, initial_delay=TICK_SECONDS)
def on_tick(
    body: Any, memo: Any, logger: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    reconciler = _reconciler(memo)
    if not reconciler.due(body):
        return  # most ticks: no copy of the body, no work (2,000 models: ~270 a second)
    meta = body.get("metadata") or {}
    try:
        reconciler.tick(
            plain(body),
            _indexed(deployments_by_model, str(meta.get("namespace")), str(meta.get("name"))),
        )
    except ReconcileError as e:
        logger.warning("autoscale step failed, retrying next tick: %s", e)


@kopf.on.event(
    "apps", "v1", "deployments",
    labels={LABEL_SM: kopf.PRESENT, "app.kubernetes.io/managed-by": MANAGER},
)
def on_deployment(
    type: str | None, body: Any, memo: Any, deployments_by_model: Any = None, **_: Any
) -> None:
    if type is None:
        return  # the initial listing: on_resume already reconciles every ScaledModel
    try:
        _reconciler(memo).deployment_event(
            plain(body), deleted=type == "DELETED",
            deployments=lambda ns, sm: _indexed(deployments_by_model, ns, sm),
        )
    except ReconcileError as e:
        log.warning("refresh after a Deployment event failed: %s", e)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(uid: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _reconciler(memo).forget(uid, namespace or "", name)


@kopf.on.probe(id="reconciler")
def probe(memo: Any, **_: Any) -> str:
    return "configured" if getattr(memo, "reconciler", None) is not None else "missing"

"""One reconciliation of a ScaledModel, free of Kopf so it is tested with fakes.

Flow (``Reconciler.reconcile``): parse the spec (invalid -> ``SpecValid=False``,
an Event, and nothing applied) -> read the owned Deployments -> decide (or reuse
the recorded plan) -> apply the Service and the plan's Deployments, delete the
Deployments the plan no longer has -> patch status from what now exists ->
Events for every change.

The policy is the ``policy`` argument of :class:`Reconciler` (default
:func:`tritonscale.core.autoscale.decide`, the step ``plan`` and ``simulate``
run); it alone decides what runs, including make-before-break and holding what
runs when nothing is feasible. The signal source is the ``signals`` argument.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core import admission
from tritonscale.core import interruption as ir
from tritonscale.core import state as st_codec
from tritonscale.core import status as st
from tritonscale.core.api import (
    ANNOTATION_SPEC_HASH,
    API_VERSION,
    KIND,
    LABEL_POOL,
    LABEL_SM,
    LABEL_VARIANT,
)
from tritonscale.core.autoscale import decide
from tritonscale.core.cascade_render import (
    published_threshold,
    router_configmap_name,
    threshold_configmap_name,
    tier2_service_name,
)
from tritonscale.core.fleet import interval_of
from tritonscale.core.placement import changes
from tritonscale.core.render import (
    DEFAULT_OPTIONS,
    Owner,
    RenderOptions,
    deployment_name,
    get_cascade_objects,
    get_deployment,
    get_service,
    spec_hash,
)
from tritonscale.core.routing import (
    ROUTE_KINDS,
    ROUTED,
    gate_deletions,
    get_placement_service,
    get_routes,
    placement_service_name,
    route_weights,
)
from tritonscale.core.spec import ScaledModelSpec, SpecError, parse_manifest
from tritonscale.core.types import Decision, Observation, Placement, PlacementState
from tritonscale.handlers import apierrors, ownership
from tritonscale.handlers.ports import (
    InterruptionSource,
    KubeAPI,
    NoInterruptions,
    NullSignalSource,
    Policy,
    SignalSource,
)
from tritonscale.router import router_source

log = logging.getLogger(__name__)

MAX_ERRORS_IN_MESSAGE = 5


class ReconcileError(Exception):
    """The API refused part of the work; nothing was recorded as done. Retry later."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Outcome:
    """What one reconciliation did; also handed to ``Reconciler.listeners``
    (e.g. the operator's Prometheus metrics) so they need no hooks in the flow."""

    valid: bool
    namespace: str = ""
    name: str = ""
    decided: bool = False
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    settled: bool = True
    status_written: bool = False
    errors: tuple[str, ...] = ()
    spec: ScaledModelSpec | None = None
    decision: Decision | None = None
    observation: Observation | None = None
    # What exists after this pass, per (variant, pool).
    placements: tuple[PlacementState, ...] = ()
    cost_per_hour: float = 0.0
    # Set when the pass failed (ReconcileError) and will be retried.
    failure: str = ""
    duration_seconds: float = 0.0


@dataclass
class Reconciler:
    kube: KubeAPI
    signals: SignalSource = field(default_factory=NullSignalSource)
    # Pools under a spot interruption notice (nodes' taints; handlers/interruption.py).
    interruptions: InterruptionSource = field(default_factory=NoInterruptions)
    policy: Policy = decide
    clock: Callable[[], float] = time.time
    options: RenderOptions = field(default_factory=lambda: replace(
        DEFAULT_OPTIONS, router_source=router_source()))
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_decided: dict[str, float] = field(default_factory=dict, repr=False)
    # Service applied per ScaledModel: (hash, when); re-applied on change, when stale
    # (a safety net) or at once when the watch reports it deleted (owned_object_deleted).
    _service_hash: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    service_refresh_seconds: float = 600.0
    _seen_deployments: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    # Pools found unable to host replicas, per ScaledModel: pool -> until when avoided.
    _pools_down: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    pool_cooldown_seconds: float = 600.0
    # A pool counts as stalled once a Deployment there stayed unavailable for
    # 2 x its startupSeconds, and at least this long (``--pool-stall-seconds``).
    pool_stall_floor_seconds: float = 120.0
    # The status this operator last wrote, per ScaledModel uid. The operator is the
    # only writer of status, so this is never older than the status in a (possibly
    # queued, stale) event body; decisions always see the state they last persisted.
    # Never changed in place: each write stores a new mapping (st.merge_patch copies
    # the paths it patches), so passes read it without copying.
    _status: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # API failures (handlers/apierrors.py): consecutive transient failures and when
    # the next attempt is due, per uid; models blocked by a permanent failure.
    backoff: apierrors.Backoff = field(default_factory=apierrors.Backoff)
    permanent_recheck_seconds: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict, repr=False)
    _retry_at: dict[str, float] = field(default_factory=dict, repr=False)
    _blocked: dict[str, apierrors.Blocked] = field(default_factory=dict, repr=False)
    # Called with every Outcome (listener errors are logged, never raised).
    listeners: list[Callable[[Outcome], None]] = field(default_factory=list)
    # Images ScaledModels may run (``tritonscale run --allow-image``); empty: any.
    image_policy: admission.ImagePolicy = field(default_factory=admission.ImagePolicy)
    # Which Triton model each known ScaledModel serves, by uid: one ScaledModel per
    # model name and namespace. Filled by the Kopf index before any handler runs
    # (handlers/lifecycle.py model_names) and by every reconcile.
    _claims: dict[str, admission.Claim] = field(default_factory=dict, repr=False)
    # The same claims by (namespace, model name): a reconcile compares with its
    # namesakes only, not with every ScaledModel (O(n) per pass at 2,000 models).
    _claimants: dict[tuple[str, str], set[str]] = field(default_factory=dict, repr=False)
    # Weighted routing: backendRef weights of the routes last applied, per uid (a
    # Deployment is deleted only once a route giving it weight 0 was applied), and
    # the hash of the per-placement Services and routes with when they were applied.
    _route_weights: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict,
                                                                 repr=False)
    _route_hash: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    # Cascades: per uid, the hash of each applied object (tier-2 Service, router and
    # threshold ConfigMaps) by name, with when it was applied.
    _cascade_hash: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict,
                                                                   repr=False)
    # The last valid spec parsed per uid, with the (namespace, name, spec mapping) it
    # was parsed from: a tick of an unchanged spec reuses it (parsing and validating
    # was about a fifth of a steady tick's CPU). Compared by value, never by
    # generation alone.
    _parsed: dict[str, tuple[tuple[str, str, Any], ScaledModelSpec]] = field(
        default_factory=dict, repr=False)

    # -- entry points (called by the Kopf handlers) ------------------------------

    def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        decide: bool = True,
        deployments: Sequence[Mapping[str, Any]] | None = None,
        replan: bool = False,
    ) -> Outcome:
        """Converge one ScaledModel; ``decide`` makes a new decision first.

        ``deployments``: the model's Deployments if the caller already has them (the
        Kopf layer keeps an index fed by its watch); otherwise they are listed.
        ``replan``: an off-cadence decision (an interruption notice, :meth:`notice`)
        that only re-plans and leaves the model's interval slots where they are."""
        meta = body.get("metadata") or {}
        out: Outcome = self._guarded(
            str(meta.get("namespace", "")), str(meta.get("name", "")),
            lambda: self._reconcile(body, decide, deployments, replan),
        )
        return out

    def _guarded(self, ns: str, name: str, work: Callable[[], Outcome | None]) -> Any:
        """Run ``work`` under the model's lock; time it and tell the listeners."""
        started = time.monotonic()
        with self._lock(f"{ns}/{name}"):
            try:
                out = work()
            except ReconcileError as e:
                took = time.monotonic() - started
                # The lock is released right after: with every API call bounded by
                # its timeout, ``took`` shows how long a stalled server held the model.
                log.warning("reconcile of %s/%s failed after %.1f s, retry in %.1f s: %s",
                            ns, name, took, e.delay, e)
                self._notify(Outcome(
                    valid=True, namespace=ns, name=name, failure=str(e),
                    duration_seconds=took,
                ))
                raise
        if out is None:
            return None
        out = replace(out, duration_seconds=time.monotonic() - started)
        self._notify(out)
        return out

    def _notify(self, out: Outcome) -> None:
        for listener in self.listeners:
            try:
                listener(out)
            except Exception:
                log.exception("reconcile listener %r failed", listener)

    def tick(
        self,
        body: Mapping[str, Any],
        deployments: Sequence[Mapping[str, Any]] | None = None,
    ) -> Outcome | None:
        """Autoscale tick: decide again once ``spec.scaling.intervalSeconds`` passed."""
        if not self.due(body):
            return None
        return self.reconcile(body, decide=True, deployments=deployments)

    def notice(
        self,
        body: Mapping[str, Any],
        deployments: Sequence[Mapping[str, Any]] | None = None,
    ) -> Outcome | None:
        """Decide now, off the model's interval: a Node running its pods was tainted
        for an interruption (the tick loop's nudge). Like the simulator's decision at a
        notice, it only re-plans (:func:`tritonscale.core.interruption.replan_state`:
        what the regular steps learn is kept as the last one left it) and does not
        move the next regular decision. Skipped while backing off or blocked."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock()
        if now < self._retry_at.get(uid, 0.0):
            return None
        blocked = self._blocked.get(uid)
        if blocked is not None and blocked.generation == meta.get("generation") and (
                now < blocked.until):
            return None
        return self.reconcile(body, decide=True, deployments=deployments, replan=True)

    def due(self, body: Mapping[str, Any]) -> bool:
        """Has ``spec.scaling.intervalSeconds`` passed since the last decision?

        Cheap (reads two fields of ``body``), so the tick loop asks it before handing
        the body to a worker."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock()
        if now < self._retry_at.get(uid, 0.0):
            return False  # backing off after a failure
        blocked = self._blocked.get(uid)
        if blocked is not None and blocked.generation == meta.get("generation") and (
                now < blocked.until):
            return False  # a permanent failure: wait for a spec change
        last = self._last_decided.get(uid)
        return last is None or now - last >= interval_of(body)

    def refresh(
        self,
        namespace: str,
        name: str,
        deployments: Sequence[Mapping[str, Any]] | None = None,
        known: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> Outcome | None:
        """Re-read one ScaledModel and converge to its recorded plan (no new decision).

        The object is read under the model's lock, so it is never older than a
        reconcile that was running when the refresh was asked for: from ``known``
        (the operator's own index of ScaledModels, kept by its watch) when that has
        it, else with a GET."""

        def work() -> Outcome | None:
            body = known() if known is not None else None
            if body is None:
                try:
                    body = self.kube.get_scaledmodel(namespace, name)
                except KubeAPIError as e:
                    raise ReconcileError(f"reading {namespace}/{name}: {e}") from e
            if body is None:
                return None
            return self._reconcile(body, False, deployments)

        out: Outcome | None = self._guarded(namespace, name, work)
        return out

    def deployment_event(
        self,
        body: Mapping[str, Any],
        deleted: bool = False,
        deployments: Callable[[str, str], Sequence[Mapping[str, Any]] | None] | None = None,
        model: Callable[[str, str], Mapping[str, Any] | None] | None = None,
    ) -> Outcome | None:
        """A Deployment we own changed: refresh its ScaledModel when counts moved.

        ``deployments(namespace, name)`` and ``model(namespace, name)``: what the
        Kopf layer's indexes hold (None: list / GET it from the API)."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        sm = labels.get(LABEL_SM)
        namespace = meta.get("namespace")
        if not sm or not namespace:
            return None
        key = str(meta.get("uid") or f"{namespace}/{meta.get('name')}")
        counts = (
            int((body.get("spec") or {}).get("replicas") or 0),
            int((body.get("status") or {}).get("readyReplicas") or 0),
        )
        if deleted:
            self._seen_deployments.pop(key, None)
        elif self._seen_deployments.get(key) == counts:
            return None
        else:
            self._seen_deployments[key] = counts
        listed = deployments(str(namespace), str(sm)) if deployments is not None else None
        return self.refresh(str(namespace), str(sm), listed, _known(model, namespace, sm))

    def owned_object_deleted(
        self,
        body: Mapping[str, Any],
        deployments: Callable[[str, str], Sequence[Mapping[str, Any]] | None] | None = None,
        model: Callable[[str, str], Mapping[str, Any] | None] | None = None,
    ) -> Outcome | None:
        """A Service of ours (the model's, a cascade's tier-2, a placement's) was
        deleted: forget that it was applied and converge its ScaledModel now, which
        applies it again (instead of at the refresh, ``service_refresh_seconds``
        later). Ours: labelled managed-by tritonscale (the watch's selector) and
        controlled by a ScaledModel; anything else is ignored."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        sm, namespace = labels.get(LABEL_SM), meta.get("namespace")
        uids = [str(r.get("uid")) for r in meta.get("ownerReferences") or ()
                if isinstance(r, Mapping) and r.get("controller") is True
                and r.get("kind") == KIND and r.get("name") == sm]
        if not sm or not namespace or not uids:
            return None
        uid, oname = uids[0], str(meta.get("name") or "")
        with self._lock(f"{namespace}/{sm}"):
            if oname == sm:
                self._service_hash.pop(uid, None)
            self._cascade_hash.get(uid, {}).pop(oname, None)
            self._route_hash.pop(uid, None)
        listed = deployments(str(namespace), str(sm)) if deployments is not None else None
        return self.refresh(str(namespace), str(sm), listed, _known(model, namespace, sm))

    def forget(self, uid: str, namespace: str = "", name: str = "") -> None:
        """The ScaledModel is gone; garbage collection removes its objects.
        Drop in-memory state here and in the signal source and listeners."""
        for part in (self.signals, *self.listeners):
            drop = getattr(part, "forget", None)
            if callable(drop) and namespace and name:
                try:
                    drop(namespace, name)
                except Exception:
                    log.exception("forgetting %s/%s in %r failed", namespace, name, part)
        with self._guard:
            self._locks.pop(f"{namespace}/{name}", None)
            self._unclaim(uid)
        self._status.pop(uid, None)
        self._parsed.pop(uid, None)
        self._last_decided.pop(uid, None)
        self._service_hash.pop(uid, None)
        self._pools_down.pop(uid, None)
        self._failures.pop(uid, None)
        self._retry_at.pop(uid, None)
        self._blocked.pop(uid, None)
        self._route_weights.pop(uid, None)
        self._route_hash.pop(uid, None)
        self._cascade_hash.pop(uid, None)

    def claim(self, uid: str, body: Mapping[str, Any]) -> None:
        """Record which Triton model name the ScaledModel ``body`` serves."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        model = spec.get("model") if isinstance(spec, Mapping) else None
        mname = model.get("name") if isinstance(model, Mapping) else None
        with self._guard:
            self._unclaim(uid)
            if not uid or not isinstance(mname, str):
                return
            c = self._claims[uid] = admission.Claim(
                str(meta.get("namespace") or ""), str(meta.get("name") or ""), mname,
                str(meta.get("creationTimestamp") or ""),
            )
            self._claimants.setdefault((c.namespace, c.model), set()).add(uid)

    def _unclaim(self, uid: str) -> None:
        """Drop ``uid``'s claim (caller holds ``_guard``)."""
        old = self._claims.pop(uid, None)
        if old is not None:
            uids = self._claimants.get((old.namespace, old.model))
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del self._claimants[(old.namespace, old.model)]

    def _not_admitted(
        self, uid: str, body: Mapping[str, Any], spec: ScaledModelSpec
    ) -> tuple[str, SpecError] | None:
        """The operator-wide rules (core/admission.py): (reason, errors) or None."""
        errors = admission.image_errors(spec, self.image_policy)
        if errors:
            return admission.IMAGE_NOT_ALLOWED, SpecError(errors)
        self.claim(uid, body)
        with self._guard:
            me = self._claims.get(uid)
            namesakes = self._claimants.get((me.namespace, me.model), ()) if me else ()
            others = [self._claims[u] for u in namesakes if u != uid]
        errors = admission.model_name_errors(me, others) if me is not None else []
        if errors:
            return admission.MODEL_NAME_CONFLICT, SpecError(errors)
        return None

    # -- internals ---------------------------------------------------------------

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def _unavailable_pools(
        self, uid: str, spec: ScaledModelSpec, owned: Sequence[Mapping[str, Any]], now: float
    ) -> frozenset[str]:
        """Pools seen stalled recently (kept ``pool_cooldown_seconds`` to avoid flapping)."""
        startup = {p.name: p.startup_seconds for p in spec.node_pools}
        memory = self._pools_down.setdefault(uid, {})
        stalled = st.stalled_pools(owned, startup, now,
                                   floor_seconds=self.pool_stall_floor_seconds)
        for pool in stalled:
            memory[pool] = now + self.pool_cooldown_seconds
        for pool, until in list(memory.items()):
            if until <= now or pool not in startup:
                del memory[pool]
        return frozenset(memory)

    def _event(self, involved: Mapping[str, Any], type_: str, reason: str, msg: str,
               best_effort: bool = False) -> None:
        try:
            self.kube.event(involved, type_, reason, msg)
        except KubeAPIError as e:  # events are best effort; never fail a reconcile...
            if e.status is None and not best_effort:
                raise  # ...but no answer at all: end the pass, the next call would wait too
            log.warning("could not post event %s for %s: %s", reason, involved.get("name"), e)

    def _reconcile(
        self,
        body: Mapping[str, Any],
        decide: bool,
        deployments: Sequence[Mapping[str, Any]] | None = None,
        replan: bool = False,
    ) -> Outcome:
        """One pass, with API failures classified (handlers/apierrors.py): permanent
        ones block the model until its spec changes, others raise for a retry after
        a jittered backoff."""
        meta = body.get("metadata") or {}
        uid, generation = str(meta.get("uid") or ""), meta.get("generation")
        blocked = self._blocked.get(uid)
        if blocked is not None:
            if blocked.generation == generation and self.clock() < blocked.until:
                return Outcome(valid=True, namespace=str(meta.get("namespace", "")),
                               name=str(meta.get("name", "")), failure=blocked.message)
            del self._blocked[uid]
        try:
            out = self._reconcile_pass(body, decide, deployments, replan)
        except (ReconcileError, KubeAPIError) as e:
            return self._failed(body, e)
        self._failures.pop(uid, None)
        self._retry_at.pop(uid, None)
        return out

    def _parse(self, uid: str, ns: str, name: str, meta: Mapping[str, Any],
               raw: Any) -> ScaledModelSpec:
        """The parsed ``spec``: the one parsed last for ``uid`` if the object is the
        same (namespace, name and spec equal by value), else parsed now (raises
        :class:`SpecError`; an invalid spec is never remembered)."""
        seen = self._parsed.get(uid) if uid else None
        if seen is not None and seen[0] == (ns, name, raw):
            return seen[1]
        _, _, spec = parse_manifest(
            {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": raw})
        if uid:
            self._parsed[uid] = ((ns, name, copy.deepcopy(raw)), spec)
        return spec

    def _failed(self, body: Mapping[str, Any], exc: ReconcileError | KubeAPIError) -> Outcome:
        meta = body.get("metadata") or {}
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid") or "")
        generation = meta.get("generation")
        err = exc if isinstance(exc, KubeAPIError) else exc.__cause__
        api = err if isinstance(err, KubeAPIError) else None
        kind = apierrors.classify(api)
        # Whatever the pass did is re-read next time.
        self._service_hash.pop(uid, None)
        self._cascade_hash.pop(uid, None)
        self._status.pop(uid, None)
        now = self.clock()
        involved = {"apiVersion": API_VERSION, "kind": KIND, "namespace": ns, "name": name,
                    "uid": uid}
        status = dict(body.get("status") or {})
        text = str(exc) if isinstance(exc, ReconcileError) else f"reconciling {ns}/{name}: {exc}"
        if kind is apierrors.Kind.PERMANENT and api is not None:
            self._failures.pop(uid, None)
            msg = f"the API server refused it, not retried until the spec changes: {text}"
            self._blocked[uid] = apierrors.Blocked(generation,
                                                   now + self.permanent_recheck_seconds, msg)
            self._report(ns, name, involved, status, _rejected_reason(api), msg, now)
            log.warning("%s/%s: %s", ns, name, msg)
            return Outcome(valid=True, namespace=ns, name=name, failure=msg)
        self._last_decided.pop(uid, None)  # the timer retries after the backoff
        attempt = self._failures[uid] = self._failures.get(uid, 0) + 1
        delay = self.backoff.delay(kind, attempt)
        self._retry_at[uid] = now + delay
        if api is not None and api.status is not None and attempt == 1:
            # The server answers: say so once per failure streak. (With no answer at
            # all, a status patch or event would only wait for another timeout.)
            self._report(ns, name, involved, status, "ApplyFailed",
                         f"applying the plan failed, will retry: {text}", now)
        raise ReconcileError(text, delay=delay) from (api or exc)

    def _report(self, ns: str, name: str, involved: Mapping[str, Any],
                status: Mapping[str, Any], reason: str, msg: str, now: float) -> None:
        """Ready=False with ``reason``; one Warning event when that condition changes."""
        old = st.condition(status.get("conditions"), st.READY)
        if old.get("reason") != reason or old.get("message") != st.clip(msg):
            self._event(involved, "Warning", reason, msg, best_effort=True)
        conds = st.merge_conditions(
            status.get("conditions"), [st.Condition(st.READY, "False", reason, msg)], None, now,
        )
        try:
            self.kube.patch_status(ns, name, {"conditions": conds})
        except KubeAPIError as e2:
            log.warning("could not record the failure of %s/%s: %s", ns, name, e2)

    def _reconcile_pass(
        self,
        body: Mapping[str, Any],
        decide: bool,
        deployments: Sequence[Mapping[str, Any]] | None = None,
        replan: bool = False,
    ) -> Outcome:
        now = self.clock()
        meta = body.get("metadata") or {}
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid") or "")
        generation = meta.get("generation")
        cached = self._status.get(uid) if uid else None
        # The remembered status is never changed in place (a pass only reads it, and
        # _write_status replaces it with a new mapping), so it is read as it is: a deep
        # copy of it was a sixth of a steady decision's CPU. The body's status is
        # copied once, when it seeds the cache: the caller owns the body.
        status: dict[str, Any] = (
            cached if cached is not None else copy.deepcopy(dict(body.get("status") or {}))
        )
        involved = {
            "apiVersion": API_VERSION, "kind": KIND, "namespace": ns, "name": name, "uid": uid,
        }
        try:
            spec = self._parse(uid, ns, name, meta, body.get("spec"))
        except SpecError as e:
            return self._invalid(ns, name, involved, status, generation, e, now)
        refused = self._not_admitted(uid, body, spec)
        if refused is not None:
            return self._invalid(ns, name, involved, status, generation, refused[1], now,
                                 reason=refused[0])

        if deployments is not None:
            listed = [dict(d) for d in deployments]
        else:
            try:
                listed = self.kube.list_deployments(ns, name)
            except KubeAPIError as e:
                raise ReconcileError(f"listing Deployments of {ns}/{name}: {e}") from e
        owned = [d for d in listed if not uid or ownership.is_ours(d, uid)]
        # What a Deployment holds is read from its labels, never its name: an older
        # operator named hyphenated variants differently (core/render.py
        # deployment_name). One Deployment per placement is managed (today's name if it
        # exists); the others of that placement go once it is Ready (``extras``).
        kept, extras = _one_per_placement(owned, name)
        states = st.states_from_deployments(kept.values())
        by_name = {str(d["metadata"]["name"]): d for d in owned}
        names = {key: str(d["metadata"]["name"]) for key, d in kept.items()}
        prev_plan = st.placements_from_status(status)

        decision: Decision | None = None
        obs: Observation | None = None
        down = self._unavailable_pools(uid, spec, owned, now)
        if decide or prev_plan is None:
            obs = self.signals.observe(ns, name, spec)
            notices = dict(self.interruptions.observe(ns, name, spec))
            obs = replace(obs, current=tuple(states),
                          unavailable_pools=obs.unavailable_pools | down,
                          noticed_pools={**obs.noticed_pools, **notices})
            decision = self.policy(spec, obs, status.get("autoscaler"), now)
            if replan and prev_plan is not None:
                # Off-cadence: what the steps learn stays as the last step left it
                # (validated as decide reads it), and the next step keeps its slot.
                learnt = st_codec.encode(st_codec.decode(
                    status.get("autoscaler"), now=now,
                    max_replicas=spec.scaling.max_replicas).state)
                decision = replace(decision, state=ir.replan_state(learnt, decision.state))
            else:
                self._last_decided[uid] = now
            plan = decision.placements
            target = decision.target if decision.target is not None else plan
        else:
            plan = prev_plan
            target = st.target_from_status(status) or prev_plan
        todo = changes(spec, plan, states)
        wanted = {p.key: p.replicas for p in target}
        draining = any(p.replicas > wanted.get(p.key, 0) for p in plan)
        owner = Owner(name=name, namespace=ns, uid=uid)
        created: list[str] = []
        updated: list[str] = []
        deleted: list[str] = []
        after = {s.key: s for s in states}
        deletions = tuple(todo.delete)
        routed: st.Condition | None = None
        unrouted = False
        try:
            svc = get_service(owner, spec)
            h = spec_hash(svc)
            known = self._service_hash.get(uid)
            apply_svc = (known is None or known[0] != h
                         or now - known[1] >= self.service_refresh_seconds)
            # A cascade's tier-2 Service and ConfigMaps: those that changed or are stale.
            threshold, cascade_objs = self._cascade_objects(owner, spec, uid, decision,
                                                            status, now)
            rendered = []
            for p in todo.apply:
                dep = get_deployment(owner, spec, p, self.options)
                if p.key in names:  # ours under the name it has (maybe an older naming)
                    dep["metadata"]["name"] = names[p.key]
                rendered.append((p, dep))
            # Never take over an object we did not create (handlers/ownership.py).
            new_deps = [d for _, d in rendered if d["metadata"]["name"] not in by_name]
            clash = ownership.conflicts(
                self.kube, uid, ([svc] if apply_svc else []) + cascade_objs + new_deps)
            if clash:
                return self._ownership_conflict(ns, name, involved, status, generation,
                                                clash, now, spec, states)
            if apply_svc:
                self.kube.apply(svc)
                self._service_hash[uid] = (h, now)
            # Before the Deployments: tier-1 pods mount the ConfigMaps.
            self._apply_cascade(involved, uid, cascade_objs, threshold, status, now)
            if spec.cascade is None and (uid in self._cascade_hash
                                         or _had_cascade(status)):
                self._prune_cascade(owner, uid)
            for p, dep in rendered:
                dname = dep["metadata"]["name"]
                names[p.key] = dname
                cur = by_name.get(dname)
                if cur is not None and _same(cur, dep):
                    continue
                self.kube.apply(dep)
                prev = after.get(p.key)
                after[p.key] = PlacementState(
                    p.variant, p.pool, p.replicas, min(prev.ready, p.replicas) if prev else 0
                )
                if cur is None:
                    created.append(dname)
                    self._event(involved, "Normal", "CreatedDeployment",
                                f"Created Deployment {dname}: {p.replicas} x {p.variant} "
                                f"on {p.pool}")
                else:
                    updated.append(dname)
                    before = int((cur.get("spec") or {}).get("replicas") or 0)
                    what = (f"scaled {before} -> {p.replicas}" if before != p.replicas
                            else "rolled to a new pod template")
                    self._event(involved, "Normal", "UpdatedDeployment",
                                f"Deployment {dname} {what}")
            if spec.routing.weighted:
                deletions, routed = self._route(owner, spec, uid, after, todo.delete, now)
            elif uid in self._route_weights or st.condition(status.get("conditions"), ROUTED):
                self._unroute(owner, uid)
                unrouted = True
            for key in deletions:
                # Only Deployments that are ours (listed, labelled, owner reference),
                # by the names they have: never a name computed for the placement.
                mine = [names.pop(key)] if key in names else []
                for gone in mine + extras.pop(key, []):
                    self.kube.delete_deployment(ns, gone)
                    deleted.append(gone)
                    self._event(involved, "Normal", "DeletedDeployment",
                                f"Deleted Deployment {gone}: it left the plan")
                if spec.routing.weighted:
                    sname = placement_service_name(name, *key)
                    live = self.kube.get("Service", ns, sname)
                    if live is not None and ownership.is_ours(live, uid):
                        self.kube.delete_service(ns, sname)
                after.pop(key, None)
            for key, dnames in sorted(extras.items()):
                # A placement with two Deployments of ours (an upgrade renamed it): the
                # older ones go once the kept one has all its replicas Ready.
                now_state = after.get(key)
                if now_state is None or now_state.desired <= 0 or (
                        now_state.ready < now_state.desired):
                    continue
                for gone in dnames:
                    self.kube.delete_deployment(ns, gone)
                    deleted.append(gone)
                    self._event(involved, "Normal", "DeletedDeployment",
                                f"Deleted Deployment {gone}: Deployment {names.get(key)} "
                                f"now runs {key[0]} on {key[1]}")
        except KubeAPIError as e:  # reported and classified by _reconcile
            raise ReconcileError(f"reconciling {ns}/{name}: {e}") from e

        states_after = sorted(after.values(), key=lambda s: s.key)
        patch = st.build_status(
            old=status, spec=spec, name=name, generation=generation, now=now,
            states=states_after, plan=tuple(target),
            draining=draining or deletions != todo.delete, target=sum(wanted.values()),
            unavailable_pools=down, decision=decision, observation=obs,
            extra_conditions=[routed] if routed is not None else [],
            drop_conditions=[ROUTED] if unrouted else [],
            deployment_names=names,
        )
        running_cost = float(patch["costPerHour"])
        if routed is not None and routed.status == "False":
            was = st.condition(status.get("conditions"), ROUTED)
            if was.get("reason") != routed.reason:
                self._event(involved, "Warning", routed.reason, routed.message)
        written = self._write_status(ns, name, uid, status, patch)
        if decision is not None:
            self._decision_events(involved, status, decision, prev_plan)
            if decision.state_reset:
                self._event(involved, "Warning", "AutoscalerStateReset",
                            f"status.autoscaler was invalid and is reset: "
                            f"{st.clip(decision.state_reset)}")
        if obs is not None:
            self._notice_events(involved, status, obs, decision)
        return Outcome(
            valid=True, namespace=ns, name=name, decided=decision is not None,
            created=tuple(created), updated=tuple(updated), deleted=tuple(deleted),
            settled=not draining and deletions == todo.delete, status_written=written,
            spec=spec, decision=decision,
            observation=obs,
            placements=tuple(states_after), cost_per_hour=running_cost,
        )

    def _route(
        self,
        owner: Owner,
        spec: ScaledModelSpec,
        uid: str,
        after: Mapping[tuple[str, str], PlacementState],
        delete: Sequence[tuple[str, str]],
        now: float,
    ) -> tuple[tuple[tuple[str, str], ...], st.Condition]:
        """Weighted routing: apply per-placement Services and the routes; return the
        Deployments that may go now (their weight 0 was applied in an earlier pass)
        and the ``Routed`` condition.

        Without the Gateway API CRDs nothing can route through a gateway: the
        condition says so and deletions are not held back. Other route failures
        keep the previous weights (so deletions wait) and say why."""
        applied = self._route_weights.get(uid)
        delete_now, later = gate_deletions(delete, applied)
        staying = [s for k, s in sorted(after.items()) if k not in delete_now]
        weights = route_weights(spec, staying, leaving=later)
        objs = [get_placement_service(owner, spec, s.key) for s in staying]
        objs += get_routes(owner, spec, weights)
        h = spec_hash(objs)
        known = self._route_hash.get(uid)
        if known is not None and known[0] == h and now - known[1] < self.service_refresh_seconds:
            self._route_weights[uid] = weights
            return delete_now, _routed_ok(weights, later)
        # Never take over a Service or route we did not create (handlers/ownership.py).
        clash = ownership.conflicts(self.kube, uid, objs)
        if clash:
            self._route_hash.pop(uid, None)
            return (), st.Condition(ROUTED, "False", ownership.REASON,
                                    "; ".join(c.message(owner.name) for c in clash))
        routes_applied = 0
        for obj in objs:
            try:
                self.kube.apply(obj)
            except KubeAPIError as e:
                if obj["kind"] == "Service":
                    raise
                self._route_hash.pop(uid, None)
                if e.not_found:
                    missing = st.Condition(
                        ROUTED, "False", "GatewayAPIMissing",
                        f"spec.routing.mode is gateway but the API server has no "
                        f"{obj['apiVersion']} {obj['kind']} (install the Gateway API CRDs): "
                        f"{e}")
                    if routes_applied:  # another route kind exists and carries traffic
                        self._route_weights[uid] = weights
                        return delete_now, missing
                    self._route_weights[uid] = {}
                    return tuple(delete), missing
                return delete_now, st.Condition(
                    ROUTED, "False", "RouteApplyFailed",
                    f"applying {obj['kind']} {owner.namespace}/{owner.name} failed, will "
                    f"retry: {e}")
            if obj["kind"] != "Service":
                routes_applied += 1
        # The routes now name only these Services: any other per-placement Service of
        # ours (one an older operator named differently, one whose weight 0 was
        # applied before) carries no traffic.
        self._prune_backends(owner, uid, {o["metadata"]["name"] for o in objs
                                          if o["kind"] == "Service"})
        self._route_hash[uid] = (h, now)
        self._route_weights[uid] = weights
        return delete_now, _routed_ok(weights, later)

    def _prune_backends(self, owner: Owner, uid: str, keep: set[str]) -> None:
        """Delete the per-placement Services of ours not in ``keep`` (found by their
        labels; ours by label and controller owner reference, never by name)."""
        for svc in self.kube.list_backend_services(owner.namespace, owner.name):
            sname = str((svc.get("metadata") or {}).get("name") or "")
            if sname and sname not in keep and ownership.is_ours(svc, uid):
                self.kube.delete_service(owner.namespace, sname)

    def _unroute(self, owner: Owner, uid: str) -> None:
        """Back to ``service`` mode: remove the routes and per-placement Services this
        model created in gateway mode (only ours; absent ones are fine)."""
        ns = owner.namespace
        for kind in ROUTE_KINDS.values():
            live = self.kube.get(kind, ns, owner.name)
            if live is not None and ownership.is_ours(live, uid):
                self.kube.delete_route(kind, ns, owner.name)
        self._prune_backends(owner, uid, set())
        self._route_weights.pop(uid, None)
        self._route_hash.pop(uid, None)

    # -- cascades (core/cascade_render.py) ------------------------------------------

    def _cascade_objects(
        self, owner: Owner, spec: ScaledModelSpec, uid: str, decision: Decision | None,
        status: Mapping[str, Any], now: float,
    ) -> tuple[float | None, list[dict[str, Any]]]:
        """The threshold to publish and the cascade objects to apply now (changed, or
        not applied for ``service_refresh_seconds``, so deleted ones come back).

        The threshold is the policy's (``status.autoscaler.threshold``, as this pass
        decided it or as last recorded): make-before-break is the policy's, so a
        threshold escalating more arrives here only once tier 2's Ready capacity
        holds it."""
        if spec.cascade is None:
            return None, []
        state = decision.state if decision is not None else status.get("autoscaler")
        threshold = published_threshold(spec, state)
        known = self._cascade_hash.get(uid, {})
        out = []
        for obj in get_cascade_objects(owner, spec, threshold, self.options):
            oname = obj["metadata"]["name"]
            seen = known.get(oname)
            if seen is None or seen[0] != spec_hash(obj) or (
                    now - seen[1] >= self.service_refresh_seconds):
                out.append(obj)
            elif decision is not None and obj["kind"] == "ConfigMap" and self.kube.get(
                    "ConfigMap", owner.namespace, oname) is None:
                # ConfigMaps are not watched (the operator may not list or watch them):
                # one deleted since it was applied is noticed at the next decision, not
                # at the refresh service_refresh_seconds later. (Services are watched:
                # owned_object_deleted.)
                out.append(obj)
        return threshold, out

    def _apply_cascade(
        self, involved: Mapping[str, Any], uid: str, objs: Sequence[Mapping[str, Any]],
        threshold: float | None, status: Mapping[str, Any], now: float,
    ) -> None:
        known = self._cascade_hash.setdefault(uid, {}) if objs else {}
        for obj in objs:
            oname = obj["metadata"]["name"]
            self.kube.apply(obj)
            known[oname] = (spec_hash(obj), now)
            if oname == threshold_configmap_name(involved["name"]) and threshold is not None:
                was = _recorded_threshold(status)
                if was is not None and abs(was - threshold) > 1e-9:
                    self._event(involved, "Normal", "ThresholdChanged",
                                f"Cascade router threshold {was:g} -> {threshold:g} "
                                f"(ConfigMap {oname}; no pod restarts)")

    def _prune_cascade(self, owner: Owner, uid: str) -> None:
        """``spec.cascade`` was removed: delete the tier-2 Service and the ConfigMaps
        (only ours; absent ones are fine)."""
        ns = owner.namespace
        sname = tier2_service_name(owner.name)
        live = self.kube.get("Service", ns, sname)
        if live is not None and ownership.is_ours(live, uid):
            self.kube.delete_service(ns, sname)
        for cname in (router_configmap_name(owner.name), threshold_configmap_name(owner.name)):
            live = self.kube.get("ConfigMap", ns, cname)
            if live is not None and ownership.is_ours(live, uid):
                self.kube.delete_configmap(ns, cname)
        self._cascade_hash.pop(uid, None)

    def _write_status(
        self, ns: str, name: str, uid: str, status: Mapping[str, Any], patch: Mapping[str, Any]
    ) -> bool:
        """Merge-patch status if it changes; remember what the object now holds."""
        if not st.status_changed(status, patch):
            if uid:
                self._status[uid] = dict(status)
            return False
        try:
            self.kube.patch_status(ns, name, patch)
        except KubeAPIError as e:
            self._status.pop(uid, None)
            raise ReconcileError(f"patching status of {ns}/{name}: {e}") from e
        if uid:
            self._status[uid] = st.merge_patch(status, patch)
        return True

    def _notice_events(self, involved: Mapping[str, Any], status: Mapping[str, Any],
                       obs: Observation, decision: Decision | None) -> None:
        """One Warning ``InterruptionNotice`` per pool newly under notice (not in the
        status's ``interruptionNotices`` before this pass)."""
        before = {str(n.get("pool")) for n in status.get("interruptionNotices") or ()
                  if isinstance(n, Mapping)}
        target = "" if decision is None or decision.target is None else ", ".join(
            f"{p.replicas} x {p.variant} on {p.pool}" for p in decision.target)
        for pool, why in sorted(obs.noticed_pools.items()):
            if pool in before:
                continue
            self._event(involved, "Warning", "InterruptionNotice",
                        f"Pool {pool} is under interruption notice ({why}): no new replica "
                        f"goes there; its replicas serve until their replacement is Ready"
                        + (f" (target: {target})." if target else "."))

    def _decision_events(
        self,
        involved: Mapping[str, Any],
        status: Mapping[str, Any],
        decision: Decision,
        prev_plan: Sequence[Placement] | None,
    ) -> None:
        if prev_plan is None or tuple(sorted(prev_plan)) != tuple(sorted(decision.placements)):
            self._event(involved, "Normal", decision.reason or "Decided", decision.message)
        was = st.condition(status.get("conditions"), st.SATISFIABLE).get("status")
        if not decision.slo_feasible and was != "False":
            self._event(involved, "Warning", decision.reason or "Unsatisfiable", decision.message)

    def _invalid(
        self,
        ns: str,
        name: str,
        involved: Mapping[str, Any],
        status: Mapping[str, Any],
        generation: Any,
        err: SpecError,
        now: float,
        reason: str = "InvalidSpec",
    ) -> Outcome:
        shown = [str(e) for e in err.errors[:MAX_ERRORS_IN_MESSAGE]]
        more = len(err.errors) - len(shown)
        msg = "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")
        old = st.condition(status.get("conditions"), st.SPEC_VALID)
        patch = {
            "observedGeneration": generation,
            "conditions": st.merge_conditions(
                status.get("conditions"),
                [st.Condition(st.SPEC_VALID, "False", reason, msg)],
                generation, now,
            ),
        }
        written = self._write_status(ns, name, str(involved.get("uid") or ""), status, patch)
        if old.get("status") != "False" or old.get("message") != msg:
            self._event(involved, "Warning", reason, msg)
        return Outcome(valid=False, namespace=ns, name=name, status_written=written,
                       errors=tuple(str(e) for e in err.errors))

    def _ownership_conflict(
        self,
        ns: str,
        name: str,
        involved: Mapping[str, Any],
        status: Mapping[str, Any],
        generation: Any,
        clash: Sequence[ownership.Conflict],
        now: float,
        spec: ScaledModelSpec,
        states: Sequence[PlacementState],
    ) -> Outcome:
        """Someone else's object has a name we need: touch nothing, say so once."""
        msg = "; ".join(c.message(name) for c in clash[:MAX_ERRORS_IN_MESSAGE])
        old = st.condition(status.get("conditions"), st.READY)
        patch = {
            "observedGeneration": generation,
            "conditions": st.merge_conditions(
                status.get("conditions"),
                [st.Condition(st.SPEC_VALID, "True", "Valid", "spec is valid"),
                 st.Condition(st.READY, "False", ownership.REASON, msg)],
                generation, now,
            ),
        }
        written = self._write_status(ns, name, str(involved.get("uid") or ""), status, patch)
        if old.get("reason") != ownership.REASON or old.get("message") != msg:
            self._event(involved, "Warning", ownership.REASON, msg)
        return Outcome(valid=True, namespace=ns, name=name, settled=False,
                       status_written=written, errors=(msg,), spec=spec,
                       placements=tuple(states))


def _known(
    model: Callable[[str, str], Mapping[str, Any] | None] | None, namespace: Any, name: Any
) -> Callable[[], Mapping[str, Any] | None] | None:
    if model is None:
        return None
    return functools.partial(model, str(namespace), str(name))


def _rejected_reason(err: KubeAPIError) -> str:
    return {400: "Invalid", 403: "Forbidden", 404: "NotFound", 422: "Invalid"}.get(
        err.status or 0, "Rejected")


def _routed_ok(weights: Mapping[tuple[str, str], int],
               later: Sequence[tuple[str, str]]) -> st.Condition:
    text = ", ".join(f"{v}@{p}={w}" for (v, p), w in sorted(weights.items()))
    msg = f"backendRef weights: {text or 'none'}"
    if later:
        msg += "; draining (weight 0, deleted next pass): " + ", ".join(
            f"{v}@{p}" for v, p in later)
    return st.Condition(ROUTED, "True", "RoutesApplied", msg)


def _had_cascade(status: Mapping[str, Any]) -> bool:
    """Did the last recorded decision plan a cascade (so its objects may exist)?"""
    last = status.get("lastDecision")
    details = last.get("details") if isinstance(last, Mapping) else None
    return isinstance(details, Mapping) and "cascade" in details


def _recorded_threshold(status: Mapping[str, Any]) -> float | None:
    """The threshold the recorded status holds (the one the ConfigMap was given)."""
    auto = status.get("autoscaler")
    raw = auto.get("threshold") if isinstance(auto, Mapping) else None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    return None


def _one_per_placement(
    owned: Sequence[Mapping[str, Any]], sm: str
) -> tuple[dict[tuple[str, str], Mapping[str, Any]], dict[tuple[str, str], list[str]]]:
    """Our Deployments by the (variant, pool) their labels name: the one to manage per
    placement (today's name if present, else the first by name) and the names of the
    others (left by an older operator's naming)."""
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for d in sorted(owned, key=lambda d: str(d["metadata"]["name"])):
        labels = (d.get("metadata") or {}).get("labels") or {}
        variant, pool = labels.get(LABEL_VARIANT), labels.get(LABEL_POOL)
        if variant and pool:
            by_key.setdefault((str(variant), str(pool)), []).append(d)
    kept: dict[tuple[str, str], Mapping[str, Any]] = {}
    extras: dict[tuple[str, str], list[str]] = {}
    for key, deps in by_key.items():
        today = deployment_name(sm, *key)
        first = next((d for d in deps if d["metadata"]["name"] == today), deps[0])
        kept[key] = first
        rest = [str(d["metadata"]["name"]) for d in deps if d is not first]
        if rest:
            extras[key] = rest
    return kept, extras


def _same(cur: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """Does the live Deployment already match (replicas and pod template hash)?"""
    cur_ann = (cur.get("metadata") or {}).get("annotations") or {}
    want_ann = want["metadata"]["annotations"]
    return bool(
        (cur.get("spec") or {}).get("replicas") == want["spec"]["replicas"]
        and cur_ann.get(ANNOTATION_SPEC_HASH) == want_ann[ANNOTATION_SPEC_HASH]
    )

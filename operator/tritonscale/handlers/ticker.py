"""The operator-wide tick loop: one asyncio task instead of a Kopf timer per object.

A Kopf timer runs one task per ScaledModel and forces a finalizer on every one
(so deleting a ScaledModel, or the CRD, while the operator is down hangs). This
loop needs neither: it wakes every ``resolution`` seconds, walks the ScaledModels
this process owns (Kopf's index, fed by its watch) and hands each one whose tick
slot just passed (:mod:`tritonscale.core.fleet`: a per-uid phase spreads them over
their ``intervalSeconds``) to a few workers that reconcile in Kopf's thread pool.

A replica in standby (Kopf peering) does not tick: :class:`PeeringGate` reads the
peering object every few seconds and applies Kopf's rule.

:meth:`TickLoop.nudge` runs a model now, off its slot: a Node running its pods was
tainted for a spot interruption (handlers/lifecycle.py ``on_node``), so waiting for
the next slot (up to ``intervalSeconds``) would cost that much of the notice. The
nudged run is handed to ``notice`` (an off-cadence decision that only re-plans;
the model's slots do not move). A model already queued is not queued twice; one
already running is run again once it ends (it may have read the Nodes before the
taint).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from tritonscale.core.fleet import crossed_slot, interval_of, peering_active

log = logging.getLogger(__name__)


class PeersSource(Protocol):
    def peers(self, namespace: str | None) -> Mapping[str, Any] | None: ...


@dataclass
class PeeringGate:
    """Is this replica the active one? (standalone: always)

    ``clusterwide``: one ClusterKopfPeering decides for every namespace; otherwise
    each namespace's KopfPeering decides for its own ScaledModels. Refreshed by
    :meth:`refresh` (blocking I/O, run in a thread); an unreadable peering object
    keeps the last answer, and a replica that never read one stays paused."""

    source: PeersSource | None = None
    identity: str = ""
    priority: int = 0
    clusterwide: bool = True
    clock: Callable[[], float] = time.time
    _active: dict[str | None, bool] = field(default_factory=dict)

    def active(self, namespace: str) -> bool:
        if self.source is None:
            return True
        return self._active.get(None if self.clusterwide else namespace, False)

    def refresh(self, namespaces: Iterable[str]) -> None:
        if self.source is None:
            return
        keys: set[str | None] = {None} if self.clusterwide else set(namespaces)
        for key in keys:
            try:
                peers = self.source.peers(key)
            except Exception as e:  # keep the last answer; Kopf has the same view
                log.warning("reading peering %s failed: %s", key or "(cluster)", e)
                continue
            self._active[key] = peering_active(peers, self.identity, self.priority,
                                               self.clock())
        for key in list(self._active):
            if key not in keys:
                del self._active[key]


@dataclass
class TickLoop:
    """Decide again for every owned ScaledModel once per ``intervalSeconds``.

    ``entries``: the (slim) bodies of the owned ScaledModels, read at every wake;
    ``tick``: reconcile one body (blocking; runs in ``executor``) and ``due``: has
    its interval passed since its last decision (cheap, runs in the loop).
    ``gone(uid, namespace, name)`` is called once for each model that left
    ``entries`` (deleted: without a finalizer there is no deletion handler)."""

    entries: Callable[[], Iterable[Mapping[str, Any]]]
    tick: Callable[[Mapping[str, Any]], object]
    due: Callable[[Mapping[str, Any]], bool]
    resolution: float = 1.0
    concurrency: int = 4
    gate: PeeringGate = field(default_factory=PeeringGate)
    gate_refresh_seconds: float = 5.0
    executor: Executor | None = None
    clock: Callable[[], float] = time.time
    gone: Callable[[str, str, str], object] | None = None
    # Run one body now, off its slot (a nudge); None: nudges run ``tick``.
    notice: Callable[[Mapping[str, Any]], object] | None = None
    _inflight: set[str] = field(default_factory=set)
    _running: set[str] = field(default_factory=set)
    _nudged: set[str] = field(default_factory=set)
    _queue: asyncio.Queue[tuple[Mapping[str, Any], bool]] | None = None
    nudges: int = 0
    _known: dict[str, tuple[str, str]] = field(default_factory=dict)
    ticks: int = 0

    def scan(self, before: float, now: float) -> list[Mapping[str, Any]]:
        """The bodies whose tick slot passed in ``(before, now]`` and that are due,
        not already queued, and ours to act on."""
        out = []
        known: dict[str, tuple[str, str]] = {}
        for body in self.entries():
            meta = body.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if not uid:
                continue
            known[uid] = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if uid in self._inflight:
                continue
            if not crossed_slot(before, now, uid, interval_of(body)):
                continue
            if not self.gate.active(str(meta.get("namespace") or "")):
                continue
            if not self.due(body):
                continue
            out.append(body)
        self._forget_gone(known)
        return out

    def _forget_gone(self, known: dict[str, tuple[str, str]]) -> None:
        if self.gone is not None:
            for uid in self._known.keys() - known.keys():
                ns, name = self._known[uid]
                try:
                    self.gone(uid, ns, name)
                except Exception:
                    log.exception("forgetting %s/%s failed", ns, name)
        self._known = known

    def nudge(self, uids: Iterable[str]) -> int:
        """Queue these models' decisions now (call from the event loop's thread).

        A model already queued (not yet started) is left as it is: that run reads the
        Nodes after the nudge. One running now is queued again when it ends. Models
        not owned (not in ``entries``) or on a standby replica are ignored. Returns
        how many were queued now."""
        self._nudged.update(u for u in uids if u)
        return self._queue_nudged()

    def _queue_nudged(self) -> int:
        if not self._nudged or self._queue is None:
            return 0
        queued = 0
        for body in self.entries():
            meta = body.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if uid not in self._nudged:
                continue
            if uid in self._running:
                continue  # queued again when it ends
            self._nudged.discard(uid)
            if uid in self._inflight:
                continue  # queued, not started: it will read the Nodes as they are now
            if not self.gate.active(str(meta.get("namespace") or "")):
                continue
            self._inflight.add(uid)
            self._queue.put_nowait((body, True))
            queued += 1
        # Nudges for models this process does not own (any more) are dropped.
        self._nudged &= self._running
        self.nudges += queued
        return queued

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Mapping[str, Any], bool]] = asyncio.Queue()
        self._queue = queue
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        try:
            await self._refresh_gate(loop)
            gate_at = self.clock()
            before = self.clock()
            while True:
                await asyncio.sleep(self.resolution)
                now = self.clock()
                if now - gate_at >= self.gate_refresh_seconds:
                    gate_at = now
                    await self._refresh_gate(loop)
                for body in self.scan(before, now):
                    self._inflight.add(str(body["metadata"]["uid"]))
                    queue.put_nowait((body, False))
                self._queue_nudged()
                before = now
        finally:
            self._queue = None
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _refresh_gate(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.gate.source is None:
            return
        namespaces = {str((b.get("metadata") or {}).get("namespace") or "")
                      for b in self.entries()}
        await loop.run_in_executor(self.executor, self.gate.refresh, namespaces)

    async def _worker(self, queue: asyncio.Queue[tuple[Mapping[str, Any], bool]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            body, nudged = await queue.get()
            uid = str(body["metadata"]["uid"])
            run = self.notice if nudged and self.notice is not None else self.tick
            self._running.add(uid)
            try:
                await loop.run_in_executor(self.executor, run, body)
                self.ticks += 1
            except Exception:
                meta = body["metadata"]
                log.exception("tick of %s/%s failed", meta.get("namespace"), meta.get("name"))
            finally:
                self._running.discard(uid)
                self._inflight.discard(uid)
                if uid in self._nudged:
                    self._queue_nudged()

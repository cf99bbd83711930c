"""The operator-wide tick loop and its pure parts (shards, tick slots, peering rule)."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tritonscale.core.fleet import (
    Shard,
    crossed_slot,
    interval_of,
    peering_active,
    phase,
    shard_of,
)
from tritonscale.handlers.ticker import PeeringGate, TickLoop

UIDS = [f"6f1c2d3e-{i:04x}-4a5b-8c9d-{i * 7919:012x}" for i in range(2000)]


def model(uid: str, ns: str = "ml", interval: Any = 15) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": ns, "name": f"m-{uid[-6:]}"},
            "spec": {"scaling": {"intervalSeconds": interval}}}


def test_shards_split_evenly_and_stably() -> None:
    counts = collections.Counter(shard_of(u, 4) for u in UIDS)
    assert set(counts) == {0, 1, 2, 3}
    assert all(400 < c < 600 for c in counts.values())
    assert [shard_of(u, 4) for u in UIDS[:50]] == [shard_of(u, 4) for u in UIDS[:50]]
    shards = [Shard(i, 4) for i in range(4)]
    assert all(sum(s.owns(u) for s in shards) == 1 for u in UIDS)
    assert Shard().owns(None) and not Shard(0, 2).owns(None)
    for bad in ((0, 0), (2, 2), (-1, 2)):
        with pytest.raises(ValueError, match="shard"):
            Shard(*bad)


def test_ticks_are_spread_over_the_interval() -> None:
    """2,000 models with a 15 s interval: each second about 133 slots pass, never a
    wave of all of them; each model exactly once per interval."""
    per_second = [sum(crossed_slot(t, t + 1, u, 15) for u in UIDS) for t in range(30)]
    assert sum(per_second[:15]) == 2000 and sum(per_second[15:]) == 2000
    assert max(per_second) < 200 and min(per_second) > 80
    assert all(0 <= phase(u, 15) < 15 for u in UIDS)


def test_interval_of_untrusted_spec() -> None:
    assert interval_of(model("u", interval=30)) == 30
    assert interval_of(model("u", interval=0.1)) == 1.0
    for bad in ("x", None, float("nan"), float("inf"), [1]):
        assert interval_of(model("u", interval=bad)) == 15.0
    assert interval_of({"spec": "garbage"}) == 15.0


def _peer(prio: int, ago: float, lifetime: int = 60) -> dict[str, Any]:
    seen = datetime.now(UTC) - timedelta(seconds=ago)
    return {"priority": prio, "lastseen": seen.isoformat(), "lifetime": lifetime}


def test_peering_rule_matches_kopf() -> None:
    now = datetime.now(UTC).timestamp()
    me = "me@host/1"
    assert peering_active({me: _peer(5, 0)}, me, 5, now)
    assert not peering_active({me: _peer(5, 0), "o": _peer(9, 1)}, me, 5, now)
    assert not peering_active({"o": _peer(5, 1)}, me, 5, now)  # equal: both pause
    assert peering_active({"o": _peer(3, 1)}, me, 5, now)
    assert peering_active({"o": _peer(9, 120)}, me, 5, now)  # dead peer
    assert not peering_active(None, me, 5, now)  # no peering object: paused, as Kopf
    assert peering_active({"o": "garbage", "p": {"lastseen": "x"}}, me, 5, now)


class Peers:
    def __init__(self, peers: Mapping[str, Any] | None) -> None:
        self.value = peers
        self.asked: list[str | None] = []

    def peers(self, namespace: str | None) -> Mapping[str, Any] | None:
        self.asked.append(namespace)
        if self.value is None:
            raise OSError("connection refused")
        return self.value


def test_gate_clusterwide_and_namespaced() -> None:
    src = Peers({"other": _peer(9, 1)})
    gate = PeeringGate(source=src, identity="me", priority=1)
    assert not gate.active("ml")  # never read: paused
    gate.refresh(["ml", "b"])
    assert src.asked == [None] and not gate.active("ml")
    src.value = {"other": _peer(0, 1)}
    gate.refresh([])
    assert gate.active("ml")
    src.value = None  # unreadable: keep the last answer
    gate.refresh([])
    assert gate.active("ml")
    ns_gate = PeeringGate(source=Peers({}), identity="me", priority=1, clusterwide=False)
    ns_gate.refresh(["a"])
    assert ns_gate.active("a") and not ns_gate.active("b")
    assert PeeringGate().active("anything")  # standalone


class SimClock:
    """Simulated seconds: +``step`` at every reading (the loop reads it once a wake)
    up to ``stop``, so what the loop does depends on how many wakes it had, not on
    the machine's load."""

    def __init__(self, step: float, stop: float) -> None:
        self.t = 0.0
        self.step = step
        self.stop = stop

    def __call__(self) -> float:
        self.t = min(self.stop, self.t + self.step)
        return self.t


def _run(loops: list[TickLoop], clock: SimClock) -> None:
    async def main() -> None:
        tasks = [asyncio.create_task(x.run()) for x in loops]
        while clock.t < clock.stop or any(x._inflight for x in loops):
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_loop_ticks_each_model_once_per_interval_in_worker_threads() -> None:
    """The real loop: 200 models, interval 1 s, 2.5 simulated seconds -> every model
    ticks 2 or 3 times (its slot boundaries in that span), in worker threads."""
    models = [model(u, interval=1) for u in UIDS[:200]]
    ticked: collections.Counter[str] = collections.Counter()
    threads: set[str] = set()
    lock = threading.Lock()

    def tick(body: Mapping[str, Any]) -> None:
        with lock:
            ticked[body["metadata"]["uid"]] += 1
            threads.add(threading.current_thread().name)

    clock = SimClock(0.02, stop=2.5)
    loop = TickLoop(entries=lambda: models, tick=tick, due=lambda b: True,
                    resolution=0.01, concurrency=3, clock=clock)
    _run([loop], clock)
    assert set(ticked) == {m["metadata"]["uid"] for m in models}
    assert set(ticked.values()) <= {2, 3}
    assert loop.ticks == sum(ticked.values())
    assert threading.main_thread().name not in threads


def test_loop_in_standby_does_not_tick_and_survives_failures() -> None:
    models = [model(u, interval=1) for u in UIDS[:20]]
    calls: list[str] = []

    def tick(body: Mapping[str, Any]) -> None:
        calls.append(body["metadata"]["uid"])
        raise RuntimeError("boom")

    clock = SimClock(0.02, stop=2.5)
    standby = TickLoop(entries=lambda: models, tick=tick, due=lambda b: True,
                       resolution=0.01, clock=clock,
                       gate=PeeringGate(source=Peers({"o": _peer(9, 0)}), identity="me"))
    failing = TickLoop(entries=lambda: models, tick=tick, due=lambda b: True,
                       resolution=0.01, clock=clock)
    _run([standby, failing], clock)
    assert standby.ticks == 0 and failing.ticks == 0
    assert len(calls) >= 2 * len(models)  # kept ticking after failures


def test_models_that_leave_the_index_are_forgotten_once() -> None:
    models = [model(u) for u in UIDS[:3]]
    gone: list[tuple[str, str, str]] = []
    loop = TickLoop(entries=lambda: list(models), tick=lambda b: None, due=lambda b: True,
                    gone=lambda *a: gone.append(a))
    loop.scan(0.0, 1.0)
    removed = models.pop(1)
    loop.scan(1.0, 2.0)
    loop.scan(2.0, 3.0)
    meta = removed["metadata"]
    assert gone == [(meta["uid"], "ml", meta["name"])]


def test_a_nudge_runs_the_model_now_once_and_after_a_running_one() -> None:
    """Interval 3600 s: no slot passes in the test, so every run is a nudge's. A
    nudged model runs through ``notice`` within one wake; nudged again while queued
    it runs once; nudged while running it runs again after; a uid not owned is
    ignored; nudges before the loop runs are kept for its first wake."""
    models = [model(u, interval=3600) for u in UIDS[:3]]
    a, b, c = (m["metadata"]["uid"] for m in models)
    runs: list[tuple[str, str]] = []
    release = threading.Event()

    def tick(body: Mapping[str, Any]) -> None:
        runs.append(("tick", body["metadata"]["uid"]))

    def notice(body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        runs.append(("notice", uid))
        if uid == b and not release.is_set():
            release.wait(5)  # b is "running" while the test nudges it again

    clock = SimClock(0.001, stop=1.0)  # far from any 3600-s slot (phases spread it)
    loop = TickLoop(entries=lambda: models, tick=tick, due=lambda body: True,
                    resolution=0.01, concurrency=2, clock=clock, notice=notice)
    assert loop.nudge([c]) == 0  # not running yet: kept

    async def main() -> None:
        task = asyncio.create_task(loop.run())
        for _ in range(500):
            await asyncio.sleep(0.01)
            if ("notice", c) in runs:
                break
        assert ("notice", c) in runs  # the pre-run nudge, at the first wake
        # Queued twice at once: one run.
        assert loop.nudge([a, a, "not-ours"]) == 1
        assert loop.nudge([a]) == 0  # already queued or running
        # b runs (blocked inside notice); nudged again meanwhile: runs once more after.
        assert loop.nudge([b]) == 1
        for _ in range(500):
            await asyncio.sleep(0.01)
            if ("notice", b) in runs:
                break
        assert loop.nudge([b]) == 0  # running: re-queued when it ends
        release.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if runs.count(("notice", b)) == 2 and not loop._inflight:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert runs.count(("notice", a)) == 1, runs
    assert runs.count(("notice", b)) == 2, runs
    assert runs.count(("notice", c)) == 1, runs
    assert not [r for r in runs if r[0] == "tick"], runs  # no slot passed
    assert loop.nudges == 4


def test_a_standby_replica_ignores_nudges() -> None:
    models = [model(u, interval=3600) for u in UIDS[:2]]
    runs: list[str] = []
    clock = SimClock(0.001, stop=0.2)
    standby = TickLoop(entries=lambda: models, tick=lambda body: None,
                       due=lambda body: True, resolution=0.01, clock=clock,
                       notice=lambda body: runs.append(body["metadata"]["uid"]),
                       gate=PeeringGate(source=Peers({"o": _peer(9, 0)}), identity="me"))

    async def main() -> None:
        task = asyncio.create_task(standby.run())
        await asyncio.sleep(0.05)
        assert standby.nudge([m["metadata"]["uid"] for m in models]) == 0
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert runs == [] and standby.nudges == 0

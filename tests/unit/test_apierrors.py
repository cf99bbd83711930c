"""API failures: conflicts retry soon, transient ones back off with jitter, permanent
ones set a condition and one event and wait for a spec change."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.harness.fakes import Clock, FakeKube, kube_with_example

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core.placement import initial_placement
from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Decision, Observation
from tritonscale.handlers import apierrors
from tritonscale.handlers.apierrors import Backoff, Kind, classify
from tritonscale.handlers.reconcile import ReconcileError, Reconciler

NS, NAME, UID = "ml", "resnet50", "uid-1"


@pytest.mark.parametrize(("status", "kind"), [
    (None, Kind.TRANSIENT), (409, Kind.CONFLICT), (429, Kind.TRANSIENT),
    (500, Kind.TRANSIENT), (503, Kind.TRANSIENT), (504, Kind.TRANSIENT),
    (401, Kind.TRANSIENT), (408, Kind.TRANSIENT),
    (400, Kind.PERMANENT), (403, Kind.PERMANENT), (404, Kind.PERMANENT),
    (405, Kind.PERMANENT), (422, Kind.PERMANENT),
])
def test_classify(status: int | None, kind: Kind) -> None:
    assert classify(KubeAPIError(status, "R")) is kind


def test_non_api_failure_is_transient() -> None:
    assert classify(None) is Kind.TRANSIENT


def test_backoff_grows_is_capped_and_jittered() -> None:
    b = Backoff(base=1.0, cap=60.0, floor=0.1)
    top = [b.delay(Kind.TRANSIENT, n, rand=lambda lo, hi: hi) for n in range(1, 10)]
    assert top == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    low = [b.delay(Kind.TRANSIENT, n, rand=lambda lo, hi: lo) for n in range(1, 4)]
    assert low == [0.1, 0.1, 0.1]
    assert b.delay(Kind.CONFLICT, 1, rand=lambda lo, hi: hi) == 0.2
    assert b.delay(Kind.CONFLICT, 50, rand=lambda lo, hi: hi) == 2.0
    assert b.delay(Kind.TRANSIENT, 10**6, rand=lambda lo, hi: hi) == 60.0
    samples = {b.delay(Kind.TRANSIENT, 5) for _ in range(50)}
    assert len(samples) > 40 and all(0.1 <= s <= 16 for s in samples)


# -- the reconciler ---------------------------------------------------------------


def interim(spec: ScaledModelSpec, obs: Observation, state: Any, now: float) -> Decision:
    """The simple, predictable interim rule, injected as the Reconciler's policy."""
    return initial_placement(spec, obs.unavailable_pools)


@pytest.fixture
def kube() -> FakeKube:
    return kube_with_example(NS, UID)


def _body(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.scaledmodels[(NS, NAME)])


def _ready(kube: FakeKube) -> dict[str, Any]:
    conds = kube.scaledmodels[(NS, NAME)].get("status", {}).get("conditions", [])
    (c,) = [c for c in conds if c["type"] == "Ready"]
    return dict(c)


def test_permanent_failure_sets_condition_once_and_waits_for_a_spec_change(
    kube: FakeKube,
) -> None:
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, policy=interim)
    kube.fail("apply", "Service", KubeAPIError(403, "Forbidden", "services is forbidden"))
    out = r.reconcile(_body(kube))  # no raise: retrying cannot help
    assert out.failure and "not retried until the spec changes" in out.failure
    ready = _ready(kube)
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    assert "services is forbidden" in ready["message"]
    assert [e[1] for e in kube.events] == ["Forbidden"]
    assert kube.deployments == {}

    # The same generation: no API call at all, however often asked, for 5 minutes...
    kube.reset_calls()
    for _ in range(59):
        clock.t += 5
        assert not r.due(_body(kube))
        r.reconcile(_body(kube))
    assert kube.calls == []
    # ...then a quiet re-check (the same error: no new event).
    clock.t += 5
    kube.fail("apply", "Service", KubeAPIError(403, "Forbidden", "services is forbidden"))
    assert r.due(_body(kube))
    r.reconcile(_body(kube))
    assert kube.events == [] and kube.deployments == {}

    # A spec change (Kopf's update handler) is tried at once and converges.
    kube.scaledmodels[(NS, NAME)]["metadata"]["generation"] = 2
    r.reconcile(_body(kube))
    assert kube.deployments and kube.services
    assert _ready(kube)["reason"] != "Forbidden"


@pytest.mark.parametrize(("status", "ceiling"), [(500, 1.0), (None, 1.0), (429, 1.0),
                                                 (409, 0.2)])
def test_transient_failures_back_off_with_one_event_per_streak(
    kube: FakeKube, status: int | None, ceiling: float
) -> None:
    clock = Clock()
    r = Reconciler(kube=kube, clock=clock, policy=interim)
    delays = []
    for _ in range(4):
        kube.fail("apply", "Service", KubeAPIError(status, "Err", "boom"))
        with pytest.raises(ReconcileError) as ei:
            r.reconcile(_body(kube))
        delays.append(ei.value.delay)
        assert isinstance(ei.value.__cause__, KubeAPIError)
        assert not r.due(_body(kube))  # the timer waits for the backoff
        clock.t += ei.value.delay
        assert r.due(_body(kube))
    assert 0 < delays[0] <= ceiling
    assert max(delays) <= ceiling * 8
    warnings = [e for e in kube.events if e[0] == "Warning"]
    if status is None:
        # No answer at all: no status patch or event would get through either.
        assert warnings == [] and kube.status_patches == []
    else:
        assert [e[1] for e in warnings] == ["ApplyFailed"]  # once, not per retry
    r.reconcile(_body(kube))
    assert kube.deployments and r._failures == {}


def test_no_answer_ends_the_pass_at_once(kube: FakeKube) -> None:
    """A stalled API server: after the first call without an answer nothing else is
    tried in that pass (each would wait for another timeout under the lock)."""
    r = Reconciler(kube=kube, clock=Clock(), policy=interim)
    kube.fail("event", "", KubeAPIError(None, "post event", "timeout"))
    with pytest.raises(ReconcileError):
        r.reconcile(_body(kube))
    names = [c[0] for c in kube.calls]
    assert names[-1] == "event" and "patch_status" not in names


def test_blocked_is_forgotten_with_the_model(kube: FakeKube) -> None:
    r = Reconciler(kube=kube, clock=Clock(), policy=interim)
    kube.fail("apply", "Service", KubeAPIError(422, "Invalid", "spec.ports: Invalid"))
    r.reconcile(_body(kube))
    assert UID in r._blocked and isinstance(r._blocked[UID], apierrors.Blocked)
    assert _ready(kube)["reason"] == "Invalid"
    r.forget(UID, NS, NAME)
    assert r._blocked == {}

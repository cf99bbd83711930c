"""Interruption notices from the Nodes: the taint rule (core/interruption.py), the
bounded, cached reads (handlers/interruption.py) and what the reconciler does with
them (observation, status, event). The API is the one layer faked here; the same
path runs on a real kube-apiserver in tests/e2e/test_interruption.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.harness.fakes import Clock, FakeKube, kube_with_example, load_example

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core import interruption as ir
from tritonscale.core.spec import ScaledModelSpec, parse_manifest
from tritonscale.core.types import Observation
from tritonscale.handlers.interruption import NodeNotices
from tritonscale.handlers.reconcile import Reconciler

NS, NAME, UID = "ml", "resnet50", "uid-1"


def node(name: str, *taints: dict[str, str], **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": list(taints)}}


def pod(pool: str, on: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"tritonscale.io/pool": pool}}, "spec": {"nodeName": on}}


def spec_() -> ScaledModelSpec:
    return parse_manifest(load_example("resnet50.yaml"))[2]


DISRUPTED = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}


@pytest.mark.parametrize("taint, shown", [
    (DISRUPTED, "karpenter.sh/disrupted:NoSchedule"),
    ({"key": "karpenter.sh/disruption", "value": "disrupting", "effect": "NoSchedule"},
     "karpenter.sh/disruption=disrupting:NoSchedule"),
    ({"key": "aws-node-termination-handler/spot-itn", "value": "1700000000",
      "effect": "NoSchedule"}, "aws-node-termination-handler/spot-itn=1700000000:NoSchedule"),
    ({"key": "cloud.google.com/impending-node-termination", "effect": "NoSchedule"},
     "cloud.google.com/impending-node-termination:NoSchedule"),
])
def test_known_interruption_taints(taint: dict[str, str], shown: str) -> None:
    assert ir.interruption_taint(node("n", taint)) == shown


@pytest.mark.parametrize("n", [
    node("n"),
    node("n", {"key": "nvidia.com/gpu", "effect": "NoSchedule"}),
    node("n", {"key": "aws-node-termination-handler/rebalance-recommendation",
               "effect": "PreferNoSchedule"}),  # a recommendation, not a reclaim
    {"metadata": {"name": "n"}, "spec": {"taints": "karpenter.sh/disrupted"}},  # malformed
    {"metadata": {"name": "n"}, "spec": {"taints": [None, 3, {"key": 7}]}},
    {},
])
def test_other_or_malformed_nodes_carry_no_notice(n: dict[str, Any]) -> None:
    assert ir.interruption_taint(n) is None


def test_a_pool_is_noticed_only_where_the_models_pods_run() -> None:
    spec = spec_()
    tainted = {"t4-spot": {"a": "karpenter.sh/disrupted:NoSchedule"}}
    assert ir.noticed_pools(spec, tainted, {"t4-spot": {"b"}}) == {}  # not our node
    got = ir.noticed_pools(spec, tainted, {"t4-spot": {"a", "b"}})
    assert got == {"t4-spot": "node a tainted karpenter.sh/disrupted:NoSchedule by Karpenter"}
    # Pods unknown (listing failed): any tainted node of the pool counts.
    assert set(ir.noticed_pools(spec, tainted, None)) == {"t4-spot"}
    assert ir.node_selector(spec.pool("t4-spot")) == ",".join(
        f"{k}={v}" for k, v in spec.pool("t4-spot").node_selector)


class Lister:
    """Nodes by label selector (``k=v,...``; ``""``: all), counting the calls."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.calls: list[str] = []
        self.fail = False

    def __call__(self, selector: str) -> list[dict[str, Any]]:
        self.calls.append(selector)
        if self.fail:
            raise KubeAPIError(403, "Forbidden", 'nodes is forbidden: cannot list resource "nodes"')
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        return [n for n in self.nodes
                if want.items() <= n["metadata"]["labels"].items()]


def _spot_selector(spec: ScaledModelSpec) -> dict[str, str]:
    return dict(spec.pool("t4-spot").node_selector)


def test_node_reads_are_cached_per_selector_and_pods_listed_only_on_a_taint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = spec_()
    labels = _spot_selector(spec)
    nodes = Lister([node("s1", **labels), node("s2", **labels)])
    pod_calls: list[tuple[str, str]] = []
    pods = [pod("t4-spot", "s1")]

    def list_pods(ns: str, name: str) -> list[dict[str, Any]]:
        pod_calls.append((ns, name))
        return pods

    clock = Clock()
    notices = NodeNotices(nodes, list_pods, ttl_seconds=10.0, clock=clock)
    assert notices.observe(NS, NAME, spec) == {}
    assert notices.observe(NS, "other-model", spec) == {}  # same selectors: cached
    assert len(nodes.calls) == len({ir.node_selector(p) for p in spec.node_pools})
    assert pod_calls == []  # nothing tainted: no pod listing
    nodes.nodes[0]["spec"]["taints"] = [DISRUPTED]
    assert notices.observe(NS, NAME, spec) == {}  # cached for the TTL
    clock.t += 10.0
    got = notices.observe(NS, NAME, spec)
    assert set(got) == {"t4-spot"} and "node s1" in got["t4-spot"]
    assert pod_calls == [(NS, NAME)]
    # The replicas moved away: the pool stays noticed while s1 is still tainted...
    pods[:] = [pod("t4-ondemand", "o1")]
    clock.t += 10.0
    assert set(notices.observe(NS, NAME, spec)) == {"t4-spot"}
    # ...and a tainted node that never hosted the model's pods does not count.
    nodes.nodes[1]["spec"]["taints"] = [DISRUPTED]
    assert "and 1 more" not in notices.observe(NS, NAME, spec)["t4-spot"]
    # s1 gone: s2 never hosted ours, so no notice.
    nodes.nodes.pop(0)
    clock.t += 10.0
    assert notices.observe(NS, NAME, spec) == {}
    # A failed read (RBAC without nodes) is logged and means "no notice".
    nodes.fail = True
    clock.t += 10.0
    with caplog.at_level("WARNING"):
        assert notices.observe(NS, NAME, spec) == {}
    assert "Forbidden" in caplog.text


@pytest.fixture
def kube() -> FakeKube:
    return kube_with_example(NS, UID)


class Fixed:
    def __init__(self, obs: Observation) -> None:
        self.obs = obs

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        return self.obs


class Notices:
    def __init__(self) -> None:
        self.now: dict[str, str] = {}

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> dict[str, str]:
        return dict(self.now)


def test_the_reconciler_replaces_a_noticed_pool_make_before_break(kube: FakeKube) -> None:
    """decide (the default policy) with a pool under notice: the replacement is created
    beside the old Deployment, which stays until the replacement is Ready; status
    lists the notice and one InterruptionNotice event names the pool and the taint."""
    clock = Clock()
    notices = Notices()
    r = Reconciler(kube=kube, signals=Fixed(Observation(rps=50.0, latency_ms=5.0)),
                   interruptions=notices, clock=clock)

    def body() -> dict[str, Any]:
        return copy.deepcopy(kube.scaledmodels[(NS, NAME)])

    r.reconcile(body())
    (old,) = kube.deployment_names()
    kube.set_ready(old)
    pool = kube.deployments[(NS, old)]["metadata"]["labels"]["tritonscale.io/pool"]
    why = "node s1 tainted karpenter.sh/disrupted:NoSchedule by Karpenter"
    notices.now = {pool: why}
    kube.events.clear()
    clock.t += 15
    out = r.reconcile(body())
    (new,) = out.created
    assert out.deleted == () and kube.deployments[(NS, old)]["spec"]["replicas"] == 1
    assert pool not in new
    st = kube.scaledmodels[(NS, NAME)]["status"]
    assert st["interruptionNotices"] == [{"pool": pool, "reason": why}]
    assert pool in st["lastDecision"]["message"] and why in st["lastDecision"]["message"]
    ev = [(t, m) for t, reason, m in kube.events if reason == "InterruptionNotice"]
    assert len(ev) == 1 and ev[0][0] == "Warning", kube.events
    assert pool in ev[0][1] and "karpenter.sh/disrupted" in ev[0][1]
    # Still noticed, replacement not Ready: the old one stays, no second event.
    clock.t += 15
    out = r.reconcile(body())
    assert old in kube.deployment_names() and out.deleted == ()
    assert sum(1 for _, reason, _ in kube.events if reason == "InterruptionNotice") == 1
    # Replacement Ready: the old Deployment goes.
    kube.set_ready(new)
    clock.t += 15
    out = r.reconcile(body())
    assert out.deleted == (old,)
    assert kube.deployment_names() == [new]
    # The notice ends (the nodes are gone): status says so.
    notices.now = {}
    clock.t += 15
    r.reconcile(body())
    assert kube.scaledmodels[(NS, NAME)]["status"]["interruptionNotices"] == []


def test_a_new_taint_drops_the_cached_lists_of_the_selectors_the_node_matches() -> None:
    spec = spec_()
    labels = _spot_selector(spec)
    nodes = Lister([node("s1", **labels)])
    notices = NodeNotices(nodes, lambda ns, name: [pod("t4-spot", "s1")], ttl_seconds=60.0,
                          clock=Clock())
    assert notices.observe(NS, NAME, spec) == {}
    nodes.nodes[0]["spec"]["taints"] = [DISRUPTED]
    assert notices.observe(NS, NAME, spec) == {}  # cached for 60 s
    dropped = notices.invalidate(nodes.nodes[0]["metadata"]["labels"])
    # The spot pool's selector and any empty one; not the other pools' selectors.
    want = {ir.node_selector(p) for p in spec.node_pools
            if ir.selector_matches(ir.node_selector(p), labels)}
    assert dropped == len(want) >= 1
    assert set(notices.observe(NS, NAME, spec)) == {"t4-spot"}  # seen at once
    assert notices.invalidate({"unrelated": "x"}) == len(
        [p for p in spec.node_pools if not p.node_selector])


def test_models_on_a_node_by_their_pools_selectors_untrusted_spec() -> None:
    def sm(uid: str, pools: Any) -> dict[str, Any]:
        return {"metadata": {"uid": uid}, "spec": {"nodePools": pools}}

    labels = {"pool": "spot", "zone": "a"}
    bodies = [
        sm("match", [{"nodeSelector": {"pool": "od"}}, {"nodeSelector": {"pool": "spot"}}]),
        sm("any-node", [{"name": "p"}]),  # no selector: every node
        sm("other", [{"nodeSelector": {"pool": "od"}}]),
        sm("partial", [{"nodeSelector": {"pool": "spot", "zone": "b"}}]),
        sm("bad-sel", [{"nodeSelector": ["pool=spot"]}, "garbage"]),
        sm("bad-val", [{"nodeSelector": {"pool": 1}}]),
        {"metadata": {}, "spec": {"nodePools": [{}]}},
        {"metadata": {"uid": "no-spec"}},
    ]
    assert ir.models_on_node(bodies, labels) == ["match", "any-node"]
    assert ir.selector_matches("pool=spot", labels)
    assert ir.selector_matches("", labels)
    assert not ir.selector_matches("pool=spot,zone=b", labels)


def test_a_notice_decision_replans_without_learning_or_moving_the_slot(
    kube: FakeKube,
) -> None:
    """Reconciler.notice (the tick loop's nudge): decides between two interval steps,
    orders the replacement, keeps what the steps learn (forecast, correction, burst
    history) as the last step left it, and the next step keeps its slot."""
    clock = Clock()
    notices = Notices()
    signals = Fixed(Observation(rps=50.0, latency_ms=5.0))
    r = Reconciler(kube=kube, signals=signals, interruptions=notices, clock=clock)

    def body() -> dict[str, Any]:
        return copy.deepcopy(kube.scaledmodels[(NS, NAME)])

    r.reconcile(body())
    (old,) = kube.deployment_names()
    kube.set_ready(old)
    clock.t += 15
    assert r.tick(body()) is not None
    learnt = copy.deepcopy(kube.scaledmodels[(NS, NAME)]["status"]["autoscaler"])
    pool = kube.deployments[(NS, old)]["metadata"]["labels"]["tritonscale.io/pool"]
    notices.now = {pool: "node s1 tainted karpenter.sh/disrupted:NoSchedule by Karpenter"}
    # Other signals than the step's: the notice decision would learn from them.
    signals.obs = Observation(rps=120.0, latency_ms=40.0)
    clock.t += 4
    assert not r.due(body())  # the slot is 11 s away
    out = r.notice(body())
    assert out is not None and out.decided
    (new,) = out.created
    assert pool not in new and old in kube.deployment_names()  # make-before-break
    state = kube.scaledmodels[(NS, NAME)]["status"]["autoscaler"]
    for key in ir.LEARNT_STATE_KEYS:
        assert state.get(key) == learnt.get(key), key
    assert state["target"] and pool not in {p for _v, p, _n in state["target"]}
    assert state.get("forecast") is not None
    # The next regular step is still 15 s after the last one, not after the notice.
    clock.t += 10
    assert not r.due(body())
    clock.t += 1
    assert r.due(body())


def test_the_node_handler_nudges_the_models_that_may_run_there_once_per_taint() -> None:
    """handlers/lifecycle.py on_node, called as Kopf calls it: a newly tainted node
    drops the matching cached Node lists and nudges the models whose pools' selectors
    match it; later events of the same taint do nothing; once the taint is gone a
    new one nudges again."""
    import asyncio
    from types import SimpleNamespace

    from tritonscale.handlers import lifecycle
    from tritonscale.handlers.ticker import TickLoop

    spec = spec_()
    labels = _spot_selector(spec)
    doc = load_example("resnet50.yaml")
    doc["metadata"]["uid"] = UID
    other = {"metadata": {"uid": "uid-2"},
             "spec": {"nodePools": [{"nodeSelector": {"elsewhere": "yes"}}]}}
    nudged: list[list[str]] = []

    class Loop(TickLoop):
        def nudge(self, uids: Any) -> int:
            nudged.append(sorted(uids))
            return len(nudged[-1])

    lister = Lister([node("s1", **labels)])
    notices = NodeNotices(lister, lambda ns, name: [pod("t4-spot", "s1")],
                          ttl_seconds=60.0, clock=Clock())
    memo = SimpleNamespace(
        reconciler=Reconciler(kube=FakeKube(), interruptions=notices),
        tick_loop=Loop(entries=list, tick=lambda b: None, due=lambda b: True))
    index = {UID: [doc], "uid-2": [other]}
    assert notices.observe(NS, NAME, spec) == {}  # cached: untainted
    tainted = node("s1", DISRUPTED, **labels)

    def event(type_: str | None, body: dict[str, Any]) -> None:
        if lifecycle.node_of_interest(body=body, memo=memo):
            asyncio.run(lifecycle.on_node(type=type_, body=body, memo=memo,
                                          scaledmodels=index))

    event(None, node("s1", **labels))  # untainted: filtered out
    assert nudged == []
    lister.nodes[0] = tainted
    event("MODIFIED", tainted)
    assert nudged == [[UID]]
    assert set(notices.observe(NS, NAME, spec)) == {"t4-spot"}  # the cache was dropped
    event("MODIFIED", tainted)  # the same taint again (a status update)
    assert nudged == [[UID]]
    event("MODIFIED", node("s1", **labels))  # taint removed: remembered as gone
    event("MODIFIED", tainted)
    assert nudged == [[UID], [UID]]
    event("DELETED", tainted)
    assert "s1" not in memo.noticed_nodes

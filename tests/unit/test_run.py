"""``tritonscale run`` flags reach Kopf; the Kopf handlers are registered and thin."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import pytest

from tritonscale.commands import run as runcmd


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    runcmd.add_arguments(p)
    return p.parse_args(list(argv))


def test_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runcmd.NAMESPACES_ENV, raising=False)
    assert runcmd.scope_kwargs(_args()) == {"clusterwide": True, "namespaces": ()}
    assert runcmd.scope_kwargs(_args("-A")) == {"clusterwide": True, "namespaces": ()}
    assert runcmd.scope_kwargs(_args("-n", "a", "--namespace", "b")) == {
        "clusterwide": False, "namespaces": ["a", "b"],
    }
    monkeypatch.setenv(runcmd.NAMESPACES_ENV, "x, y")
    assert runcmd.scope_kwargs(_args())["namespaces"] == ["x", "y"]
    with pytest.raises(SystemExit):
        _args("-A", "-n", "a")


def test_peering() -> None:
    assert runcmd.peering_kwargs(_args()) == {"standalone": True}
    assert runcmd.peering_kwargs(_args("--peering", "ts", "--priority", "10")) == {
        "standalone": False, "peering_name": "ts", "priority": 10,
    }


def test_run_starts_kopf_with_reconciler(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from tritonscale.adapters import kube
    from tritonscale.handlers.reconcile import Reconciler

    seen: dict[str, Any] = {}
    class StubKube:
        def list_pods(self, namespace: str, name: str) -> list[Any]:
            return []

        def list_nodes(self, selector: str) -> list[Any]:
            return []

    monkeypatch.setattr(kube.KubeAdapter, "from_environment",
                        classmethod(lambda cls, **kw: StubKube()))
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    args = _args("-n", "ml", "--peering", "ts", "--liveness", "http://0.0.0.0:8081/healthz",
                 "--metrics-port", "0", "--pool-stall-seconds", "15")
    assert runcmd.run(args) == 0
    assert seen["namespaces"] == ["ml"] and seen["clusterwide"] is False
    assert seen["peering_name"] == "ts" and seen["standalone"] is False
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"
    rec = seen["memo"].reconciler
    assert isinstance(rec, Reconciler)
    assert type(rec.signals).__name__ == "SpecSignalSource"
    assert type(rec.interruptions).__name__ == "NodeNotices"  # nodes' taints
    assert type(rec.listeners[0]).__name__ == "MetricsListener"
    assert rec.pool_stall_floor_seconds == 15.0
    assert _args().pool_stall_seconds == 120.0
    assert seen["memo"].scan_cluster is False  # exact namespace: no Namespace listing


def test_namespace_scanning_only_for_patterns() -> None:
    """Kopf lists Namespaces (a 403 under namespaced RBAC, retried ~55 s) only when a
    pattern needs it; exact names and cluster-wide runs need no listing."""
    def scans(*flags: str) -> bool:
        return runcmd.scans_namespaces(runcmd.scope_kwargs(_args(*flags)))

    assert not scans("-A")
    assert not scans("-n", "ml", "-n", "ml-staging")
    assert scans("-n", "ml-*")
    assert scans("-n", "team-?")
    assert scans("-n", "ml,ml-staging")
    assert scans("-n", "!kube-system")
    assert scans("-n", "ml", "-n", "dev-*")


def test_handlers_registered() -> None:
    """No timers or daemons (Kopf would force its finalizer on every ScaledModel) and
    no handler that needs a finalizer: deletion never waits for the operator."""
    import kopf

    from tritonscale.handlers import lifecycle

    registry = kopf.get_default_registry()
    changing = {h.id: h for h in registry._changing.get_all_handlers()}
    assert {"on_create", "on_update/spec", "on_resume"} == set(changing)
    assert not any(h.requires_finalizer for h in changing.values())
    assert list(registry._spawning.get_all_handlers()) == []
    # on_node: a Node's interruption taint nudges the models' decisions (no finalizer:
    # event handlers never add one).
    assert {"on_deployment", "on_owned_service", "on_node"} == {
        h.id for h in registry._watching.get_all_handlers()}
    assert {"scaledmodels", "deployments_by_model"} <= {
        h.id for h in registry._indexing.get_all_handlers()}
    assert {"configure", "start_ticking", "stop_ticking", "reconciler"} <= {
        h.id for h in registry._activities.get_all_handlers()}
    assert lifecycle.plain({"a": [{"b": (1, 2)}]}) == {"a": [{"b": [1, 2]}]}


def test_startup_settings() -> None:
    import kopf

    from tritonscale.handlers import lifecycle

    settings = kopf.OperatorSettings()
    lifecycle.configure(settings=settings, memo=kopf.Memo(max_workers=8, peering_lifetime=7))
    assert settings.execution.max_workers == 8
    assert settings.posting.level == logging.WARNING
    assert settings.peering.lifetime == 7
    assert settings.scanning.disabled is False  # cluster scans stay on by default
    exact = kopf.OperatorSettings()
    lifecycle.configure(settings=exact, memo=kopf.Memo(scan_cluster=False))
    assert exact.scanning.disabled is True
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.consistency_timeout == lifecycle.CONSISTENCY_TIMEOUT_SECONDS
    # The API server sends only our Deployments and Services on the watch streams.
    selectors = settings.watching.label_selectors
    ours = "app.kubernetes.io/managed-by=tritonscale,tritonscale.io/scaledmodel"
    for group, plural in (("apps", "deployments"), ("", "services")):
        assert selectors.collect(kopf.Resource(group, "v1", plural)) == [ours], plural
    assert selectors.collect(kopf.Resource("", "v1", "configmaps")) == []
    assert selectors.collect(kopf.Resource("tritonscale.io", "v1alpha1", "scaledmodels")) == []


def test_shard_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """--shard/--shards reach the handlers' filters through the memo (no environment)."""
    import kopf

    from tritonscale.adapters import kube
    from tritonscale.core.fleet import Shard
    from tritonscale.handlers import lifecycle

    class StubKube:
        def list_pods(self, namespace: str, name: str) -> list[Any]:
            return []

        def list_nodes(self, selector: str) -> list[Any]:
            return []

    seen: dict[str, Any] = {}
    monkeypatch.setattr(kube.KubeAdapter, "from_environment",
                        classmethod(lambda cls, **kw: StubKube()))
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    args = _args("-A", "--metrics-port", "0", "--liveness", "none", "--shards", "3",
                 "--shard", "2", "--tick-seconds", "0.5", "--peering", "ts-2")
    assert runcmd.run(args) == 0
    memo = seen["memo"]
    assert memo.shard == Shard(2, 3) and memo.tick_seconds == 0.5
    assert memo.gate.priority == seen["priority"] > 0  # random: identical replicas elect one
    assert memo.gate.identity == str(seen["identity"])
    owned = [u for u in (f"uid-{i}" for i in range(300)) if lifecycle.owned_model(u, memo)]
    assert 60 < len(owned) < 140
    dep_meta = {"ownerReferences": [{"kind": "ScaledModel", "uid": owned[0]}]}
    assert lifecycle.owned_deployment(dep_meta, memo)
    other = next(f"x{i}" for i in range(99) if not Shard(2, 3).owns(f"x{i}"))
    assert not lifecycle.owned_deployment(
        {"ownerReferences": [{"kind": "ScaledModel", "uid": other}]}, memo)
    for bad in (("--shards", "0"), ("--shards", "2", "--shard", "2")):
        with pytest.raises(SystemExit, match="shard"):
            runcmd.run(_args("-A", "--metrics-port", "0", "--liveness", "none", *bad))


def test_handlers_read_deployments_from_the_index() -> None:
    import kopf
    from tests.harness.fakes import FakeKube, load_example

    from tritonscale.handlers import lifecycle
    from tritonscale.handlers.reconcile import Reconciler

    kube = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    kube.add_scaledmodel(doc)
    memo = kopf.Memo(reconciler=Reconciler(kube=kube))
    log = logging.getLogger("test")
    asyncio.run(lifecycle.on_create(body=doc, memo=memo, logger=log))  # no index: lists
    assert ("list_deployments", "ml/resnet50") in kube.calls
    dep = kube.deployments[("ml", "resnet50-int8-t4-spot")]
    slim = lifecycle._slim(dep)
    assert slim["metadata"]["labels"]["tritonscale.io/variant"] == "int8"
    assert "tritonscale.io/spec-hash" in slim["metadata"]["annotations"]
    index = {("ml", "resnet50"): [slim]}
    kube.reset_calls()
    kube.forbid("list_deployments", "apply", "delete_deployment")
    body = kube.scaledmodels[("ml", "resnet50")]
    asyncio.run(lifecycle.on_update(body=body, memo=memo, logger=log,
                                    deployments_by_model=index))
    asyncio.run(lifecycle.on_deployment(type="MODIFIED", body=dep, memo=memo,
                                        deployments_by_model=index))
    assert ("list_deployments", "ml/resnet50") not in kube.calls


def test_temporary_error_on_api_failure() -> None:
    import kopf
    from tests.harness.fakes import FakeKube, load_example

    from tritonscale.handlers import lifecycle
    from tritonscale.handlers.reconcile import Reconciler

    kube = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    kube.add_scaledmodel(doc)
    kube.fail("apply", "Deployment/")
    memo = kopf.Memo(reconciler=Reconciler(kube=kube))
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(lifecycle.on_create(body=doc, memo=memo, logger=logging.getLogger("t")))


def test_prometheus_rate_window_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """--prometheus-rate-window reaches the Prometheus client's rate() range (default 60)."""
    import kopf

    from tritonscale.adapters import kube
    from tritonscale.core.spec import PrometheusSource

    class StubKube:
        def list_pods(self, namespace: str, name: str) -> list[Any]:
            return []

        def list_nodes(self, selector: str) -> list[Any]:
            return []

    seen: dict[str, Any] = {}
    monkeypatch.setattr(kube.KubeAdapter, "from_environment",
                        classmethod(lambda cls, **kw: StubKube()))
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    src = PrometheusSource(url="http://prometheus:9090")
    for extra, window in (((), 60), (("--prometheus-rate-window", "10"), 10)):
        args = _args("-A", "--metrics-port", "0", "--liveness", "none", *extra)
        assert runcmd.run(args) == 0
        client = seen["memo"].reconciler.signals._prometheus_factory(src)
        assert client.window_s == window
        assert f"[{window}s]" in client.rate_expr("ns", "m")


def test_security_flags_reach_the_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    """--allow-prometheus-url (or its env), --prometheus-max-timeout and --api-timeout."""
    import kopf

    from tritonscale.adapters import kube
    from tritonscale.core.spec import PrometheusSource

    class StubKube:
        def list_pods(self, namespace: str, name: str) -> list[Any]:
            return []

        def list_nodes(self, selector: str) -> list[Any]:
            return []

    seen: dict[str, Any] = {}
    monkeypatch.setattr(kube.KubeAdapter, "from_environment",
                        classmethod(lambda cls, **kw: seen.update(kube=kw) or StubKube()))
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    monkeypatch.delenv(runcmd.ALLOWED_PROMETHEUS_ENV, raising=False)
    ok = PrometheusSource(url="http://prom:9090", timeout_seconds=60)
    meta = PrometheusSource(url="http://169.254.169.254")
    base = ("-A", "--metrics-port", "0", "--liveness", "none")

    def factory(*extra: str) -> Any:
        assert runcmd.run(_args(*base, *extra)) == 0
        return seen["memo"].reconciler.signals._prometheus_factory

    f = factory("--allow-prometheus-url", "http://prom:9090", "--api-timeout", "4",
                "--prometheus-max-timeout", "7")
    assert f(ok).allowed and not f(meta).allowed and f(ok).timeout_s == 7
    assert seen["kube"]["timeout_seconds"] == 4
    monkeypatch.setenv(runcmd.ALLOWED_PROMETHEUS_ENV, "http://other:9090, http://prom:9090")
    f = factory()
    assert f(ok).allowed and not f(meta).allowed
    monkeypatch.delenv(runcmd.ALLOWED_PROMETHEUS_ENV)
    assert factory()(meta).allowed  # no allowlist configured: anything valid (warned)
    assert runcmd.run(_args(*base, "--allow-prometheus-url", "prom:9090")) == 2
    assert runcmd.run(_args(*base, "--api-timeout", "0")) == 2


def test_spec_changes_have_a_lane_of_their_own() -> None:
    """create/update/resume reconcile in memo.spec_executor, Deployment events in
    memo.background_executor (the tick loop's): a spec change never queues behind ticks."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import kopf
    from tests.harness.fakes import FakeKube, load_example

    from tritonscale.handlers import lifecycle
    from tritonscale.handlers.reconcile import Reconciler

    kube = FakeKube()
    doc = load_example("resnet50.yaml")
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    kube.add_scaledmodel(doc)
    rec = Reconciler(kube=kube)
    threads: list[str] = []
    reconcile, refresh = rec.reconcile, rec.refresh

    def spy_reconcile(*a: Any, **kw: Any) -> Any:
        threads.append(threading.current_thread().name)
        return reconcile(*a, **kw)

    def spy_refresh(*a: Any, **kw: Any) -> Any:
        threads.append(threading.current_thread().name)
        return refresh(*a, **kw)

    rec.reconcile = spy_reconcile  # type: ignore[method-assign]
    rec.refresh = spy_refresh  # type: ignore[method-assign]
    with ThreadPoolExecutor(1, thread_name_prefix="spec-lane") as spec, \
            ThreadPoolExecutor(1, thread_name_prefix="bg-lane") as bg:
        memo = kopf.Memo(reconciler=rec, spec_executor=spec, background_executor=bg)
        log = logging.getLogger("test")
        for handler in (lifecycle.on_create, lifecycle.on_update, lifecycle.on_resume):
            asyncio.run(handler(body=doc, memo=memo, logger=log))
        dep = kube.deployments[("ml", "resnet50-int8-t4-spot")]
        dep = {**dep, "status": {"readyReplicas": 1}}
        asyncio.run(lifecycle.on_deployment(type="MODIFIED", body=dep, memo=memo))
    assert [t.split("_")[0] for t in threads] == ["spec-lane"] * 3 + ["bg-lane"]


def test_lane_sizes_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    for flag in ("--spec-workers", "--tick-workers"):
        assert runcmd.run(_args("-A", "--metrics-port", "0", flag, "0")) == 2


def test_kopf_event_handler_success_lines_are_dropped() -> None:
    """Kopf logs "Handler 'on_deployment' succeeded." at INFO after every watch event
    of our Deployments and Services; ``tritonscale run`` (not -v) drops those lines
    only: other handlers' lines and every warning stay."""
    import kopf

    from tritonscale.handlers import lifecycle

    registry = kopf.get_default_registry()
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert set(lifecycle.EVENT_HANDLERS) <= watching  # the ids Kopf's lines name
    logger = logging.getLogger("tritonscale-test-kopf-objects")
    lifecycle.quiet_event_handlers(logger)
    lifecycle.quiet_event_handlers(logger)
    assert len(logger.filters) == 1
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.info("Handler 'on_deployment' succeeded.")
    logger.info("Handler 'on_owned_service' succeeded.")
    logger.info("Handler 'on_create' succeeded.")
    logger.warning("Handler 'on_deployment' succeeded.")
    logger.error("Handler 'on_deployment' failed with an exception")
    assert seen == ["Handler 'on_create' succeeded.", "Handler 'on_deployment' succeeded.",
                    "Handler 'on_deployment' failed with an exception"]


def test_bench_scale_fake_kube_is_complete() -> None:
    """benchmarks/bench_scale.py's in-memory API has every method of the port the
    reconciler calls (a missing one would break the benchmark only on the path
    that needs it, e.g. list_backend_services with weighted routing)."""
    import inspect

    from tests.harness.benchmarks import load_benchmark

    from tritonscale.handlers.ports import KubeAPI

    mod = load_benchmark("bench_scale")
    port = {n for n, _ in inspect.getmembers(KubeAPI, inspect.isfunction)
            if not n.startswith("_")}
    assert port and port - set(dir(mod._MemKube)) == set()
    assert mod._MemKube().list_backend_services("bench-00", "sm-00000") == []

"""Faults on the real control plane: a stalled API server, a conflict storm, a 403, a
foreign object of our name, and an SSRF attempt through spec.metrics.prometheus.url.

Each test has its own namespace and KWOK node pools, and its own operator process
(``tritonscale run --namespace NS``) so that what it breaks stays in the test.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.harness.e2e import (
    RELEASE,
    apply,
    condition,
    converged,
    deployment_names,
    dump_state,
    get_sm,
    isolate_pools,
    load_example,
    scratch_namespace,
    to_yaml,
)
from tests.harness.k8s import Cluster, wait_for
from tests.harness.operator import OperatorProcess, Operators

pytestmark = pytest.mark.e2e

SM = "resnet50"
INTERVAL_SECONDS = 2
SECRET = "AKIA-E2E-SECRET-" + secrets.token_hex(8)


@pytest.fixture
def ns(cluster: Cluster, chart_release: Any) -> Iterator[str]:
    with scratch_namespace(cluster, "fault") as name:
        yield name


def _manifest(cluster: Cluster, ns: str, pools: tuple[str, ...] = ("t4-spot",)
              ) -> dict[str, Any]:
    m = load_example(namespace=ns)
    m["spec"]["scaling"]["intervalSeconds"] = INTERVAL_SECONDS
    m["spec"]["metrics"] = {"source": "none"}
    isolate_pools(cluster, m, ns.split("-")[-1], pools=list(pools), startup_seconds=5)
    return m


def _apply(cluster: Cluster, manifest: dict[str, Any]) -> None:
    # One ScaledModel per Triton model name and namespace (the operator refuses a
    # second with ModelNameConflict): each serves a model named after itself.
    manifest["spec"]["model"]["name"] = manifest["metadata"]["name"]
    apply(cluster, manifest)


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(
    cluster: Cluster, operator_kubeconfig: Path, ns: str, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    ops = Operators(cluster.log_dir, request.node.name)

    def start(*extra: str, kubeconfig: Path | None = None) -> OperatorProcess:
        return ops.start(kubeconfig or operator_kubeconfig, *extra, namespaces=[ns])

    yield start
    ops.stop_all()


def _events(cluster: Cluster, ns: str, reason: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={SM}")["items"]
    return [e for e in items if reason is None or e["reason"] == reason]


def _wait_converged(cluster: Cluster, ns: str, op: OperatorProcess, timeout: float = 90,
                    pool: str = "t4-spot") -> None:
    wait_for(lambda: converged(cluster, ns, SM, [f"{SM}-int8-{pool}"]), timeout=timeout,
             interval=0.5, what=f"{ns}/{SM} converged",
             on_timeout=lambda: dump_state(cluster, ns, op))


# -- (a) a stalled API server ----------------------------------------------------------


class StallingProxy:
    """A TCP proxy in front of the kube-apiserver. ``stall()``: new connections are
    accepted and never answered, open ones stop forwarding; ``resume()`` undoes it."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit("//", 1)[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        while self._stalled.is_set() and not self._stop.is_set():
            time.sleep(0.05)  # accepted, never answered
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._socks.append(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if self._stalled.is_set():
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    pair[src].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


def test_stalled_api_server_releases_the_lock_within_the_timeout(
    cluster: Cluster, ns: str, operator_kubeconfig: Path, start_operator: OperatorFactory
) -> None:
    api_timeout = 3.0
    proxy = StallingProxy(cluster.server)
    try:
        cfg = yaml.safe_load(operator_kubeconfig.read_text())
        for c in cfg["clusters"]:
            c["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        kubeconfig = cluster.log_dir / f"proxied-{ns}.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(cfg))
        op = start_operator(f"--api-timeout={api_timeout:g}", kubeconfig=kubeconfig)
        manifest = _manifest(cluster, ns)
        _apply(cluster, manifest)
        _wait_converged(cluster, ns, op)

        before = op.log_text()
        proxy.stall()
        time.sleep(4 * api_timeout + 2)  # several decisions, each writing status
        proxy.resume()
        stalled_log = op.log_text()[len(before):]
        took = [float(m) for m in re.findall(
            rf"reconcile of {ns}/{SM} failed after ([0-9.]+) s", stalled_log)]
        assert took, f"no failed reconcile logged while stalled:\n{stalled_log[-3000:]}"
        # Every pass (including its wait for the model's lock) ended within the timeout.
        assert max(took) <= api_timeout + 1.5, took
        assert "timeout" in stalled_log

        # The lock is free: the next decisions of the same model go through again.
        resumed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))

        def decided_again() -> bool:
            sm = get_sm(cluster, ns, SM)
            observed = ((sm.get("status") or {}).get("observed") or {}).get("time", "")
            return observed > resumed and condition(sm, "Ready").get("status") == "True"

        wait_for(decided_again, timeout=60, interval=0.5,
                 what="a successful decision after the stall",
                 on_timeout=lambda: dump_state(cluster, ns, op))
        _wait_converged(cluster, ns, op)
        op.check_alive()
        assert "Traceback" not in op.log_text()
    finally:
        proxy.close()


# -- (b) a conflict storm ----------------------------------------------------------------


def test_concurrent_writer_storm_converges(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    """Another writer keeps bumping the resourceVersion of the ScaledModel and of its
    Deployments while the operator converges and moves the model to another pool: it
    still converges, with no failed apply."""
    api = cluster.api_client()
    from kubernetes import client

    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    stop = threading.Event()
    writes = [0]

    def storm() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            patch = {"metadata": {"annotations": {"e2e.tritonscale.io/storm": str(i)}}}
            try:
                custom.patch_namespaced_custom_object(
                    "tritonscale.io", "v1alpha1", ns, "scaledmodels", SM, patch)
                writes[0] += 1
                for d in apps.list_namespaced_deployment(ns).items:
                    apps.patch_namespaced_deployment(d.metadata.name, ns, patch)
                    writes[0] += 1
            except client.ApiException:
                pass  # not created yet / conflicts of our own: keep storming
            time.sleep(0.02)

    op = start_operator()
    manifest = _manifest(cluster, ns, pools=("t4-spot", "t4-ondemand"))
    _apply(cluster, manifest)
    t = threading.Thread(target=storm, daemon=True)
    t.start()
    try:
        # Generous timeouts: the storm floods the operator with Deployment events (one
        # CI run needed more than 90 s for the pool move). (It lists no namespaces:
        # with exact namespaces, tritonscale run turns Kopf's namespace scan off.)
        _wait_converged(cluster, ns, op, timeout=240)
        # Move the model (make-before-break onto the other pool) during the storm.
        manifest["spec"]["nodePools"] = [p for p in manifest["spec"]["nodePools"]
                                         if p["name"] != "t4-spot"]
        _apply(cluster, manifest)
        _wait_converged(cluster, ns, op, timeout=240, pool="t4-ondemand")
    finally:
        stop.set()
        t.join(timeout=10)
    assert writes[0] > 50, writes
    _wait_converged(cluster, ns, op, pool="t4-ondemand")
    assert deployment_names(cluster, ns, SM) == [f"{SM}-int8-t4-ondemand"]
    assert _events(cluster, ns, "ApplyFailed") == []
    op.check_alive()
    assert "Traceback" not in op.log_text()


# -- (c) a 403 sets the condition once -----------------------------------------------------


def test_forbidden_sets_the_condition_once(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    """RBAC denies the operator one verb (patching Services): Ready=False (Forbidden)
    and ONE event, not one per retry."""
    (role,) = cluster.get_json(
        "clusterroles", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    rules = copy.deepcopy(role["rules"])
    for r in rules:
        if "services" in r.get("resources", ()) and "" in r.get("apiGroups", ()):
            r["verbs"] = [v for v in r["verbs"] if v not in ("patch", "create", "update")]
    name = f"tritonscale-deny-{ns}"
    objs = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "denied", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": "denied", "namespace": ns}]},
    ]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(to_yaml(o) for o in objs))
    try:
        op = start_operator(kubeconfig=cluster.service_account_kubeconfig(ns, "denied"))
        _apply(cluster, _manifest(cluster, ns))
        wait_for(lambda: condition(get_sm(cluster, ns, SM), "Ready").get("reason") == "Forbidden",
                 timeout=60, interval=0.5, what="Ready=False (Forbidden)",
                 on_timeout=lambda: dump_state(cluster, ns, op))
        ready = condition(get_sm(cluster, ns, SM), "Ready")
        assert ready["status"] == "False" and "forbidden" in ready["message"].lower()
        time.sleep(10 * INTERVAL_SECONDS)  # ten decision intervals
        forbidden = _events(cluster, ns, "Forbidden")
        assert len(forbidden) == 1 and forbidden[0].get("count", 1) == 1, forbidden
        assert deployment_names(cluster, ns, SM) == []
        assert "Traceback" not in op.log_text()
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found")


# -- (d) a Service of our name owned by someone else ----------------------------------------


def test_foreign_service_of_the_same_name_is_left_untouched(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    owner = cluster.get_json("serviceaccount", "default", "-n", ns)
    theirs = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": SM, "namespace": ns, "labels": {"app": "theirs"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount",
                                 "name": "default", "uid": owner["metadata"]["uid"]}],
        },
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster.kubectl("apply", "-f", "-", input=to_yaml(theirs))
    before = cluster.get_json("service", SM, "-n", ns)
    op = start_operator()
    _apply(cluster, _manifest(cluster, ns))
    wait_for(lambda: condition(get_sm(cluster, ns, SM), "Ready").get(
                 "reason") == "OwnershipConflict",
             timeout=60, interval=0.5, what="Ready=False (OwnershipConflict)",
             on_timeout=lambda: dump_state(cluster, ns, op))
    time.sleep(5 * INTERVAL_SECONDS)
    ready = condition(get_sm(cluster, ns, SM), "Ready")
    assert ready["status"] == "False" and f"Service/{SM}" in ready["message"]
    after = cluster.get_json("service", SM, "-n", ns)
    for key in ("labels", "ownerReferences", "resourceVersion"):
        assert after["metadata"].get(key) == before["metadata"].get(key), key
    assert after["spec"]["selector"] == {"app": "theirs"}
    assert deployment_names(cluster, ns, SM) == []  # nothing else changed for the model
    assert len(_events(cluster, ns, "OwnershipConflict")) == 1

    # Their Service goes away: the model converges on its own.
    cluster.kubectl("delete", "service", SM, "-n", ns)
    _wait_converged(cluster, ns, op)


# -- (e) the SSRF attempt -------------------------------------------------------------------


class Hostile:
    """A local "Prometheus" answering a secret, as a 302 to /stolen or as a 403."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                body = f'{{"status":"success","data":"{SECRET}"}}'.encode()
                self.send_response(outer.status)
                self.send_header("Location", f"http://127.0.0.1:{outer.port}/stolen/{SECRET}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _with_prometheus(manifest: dict[str, Any], name: str, url: str) -> dict[str, Any]:
    m = copy.deepcopy(manifest)
    m["metadata"]["name"] = name
    m["spec"]["metrics"] = {"source": "prometheus", "prometheus": {"url": url,
                                                                   "timeoutSeconds": 2}}
    return m


def test_ssrf_reads_nothing_back_and_follows_no_redirect(
    cluster: Cluster, ns: str, start_operator: OperatorFactory
) -> None:
    redirect, forbidden, elsewhere = Hostile(302), Hostile(403), Hostile(200)
    try:
        op = start_operator(f"--allow-prometheus-url={redirect.url}",
                            f"--allow-prometheus-url={forbidden.url}")
        base = _manifest(cluster, ns)
        cases = {"ssrf-redirect": (redirect, "HTTP 302 from Prometheus (redirects are not "
                                             "followed)"),
                 "ssrf-forbidden": (forbidden, "HTTP 403 from Prometheus"),
                 "ssrf-elsewhere": (elsewhere, "not on the operator's list of allowed")}
        for name, (server, _) in cases.items():
            _apply(cluster, _with_prometheus(base, name, server.url))

        def signals(name: str) -> dict[str, Any]:
            return condition(get_sm(cluster, ns, name), "SignalsAvailable")

        for name, (_, says) in cases.items():
            wait_for(lambda n=name, s=says: s in signals(n).get("message", ""),  # type: ignore[misc]
                     timeout=60, interval=0.5, what=f"{name}: SignalsAvailable says {says!r}",
                     on_timeout=lambda: dump_state(cluster, ns, op))
            assert signals(name)["status"] == "False"
        time.sleep(3 * INTERVAL_SECONDS)
        everything = json.dumps([
            cluster.get_json("scaledmodels", "-n", ns),
            cluster.get_json("events", "-n", ns),
        ])
        assert SECRET not in everything
        assert redirect.paths and all(p.startswith("/api/v1/query?") for p in redirect.paths)
        assert not any("stolen" in p for p in redirect.paths + forbidden.paths)
        assert forbidden.paths
        assert elsewhere.paths == []  # not allowed: never contacted
        assert SECRET not in op.log_text()
    finally:
        for s in (redirect, forbidden, elsewhere):
            s.close()

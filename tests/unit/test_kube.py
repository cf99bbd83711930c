"""The kube adapter's translation to the kubernetes client, with stubbed API classes."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from typing import Any, ClassVar

import pytest
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.harness.net import HUNG_HOST

from tritonscale.adapters import resolve
from tritonscale.adapters.kube import APPLY_CONTENT_TYPE, KubeAdapter, KubeAPIError
from tritonscale.adapters.resolve import HostLookupTimeout


class RawResponse:
    """What the client returns with ``_preload_content=False`` (urllib3's response)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.released = False

    def release_conn(self) -> None:
        self.released = True


class Stub:
    """Records calls; returns or raises what the test queued per method (as the raw
    JSON response the adapter asks for)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.results: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            res = self.results.get(name)
            if isinstance(res, Exception):
                raise res
            assert kwargs.get("_preload_content") is False, "the adapter decodes the JSON"
            if res is None:
                return RawResponse(b"")
            return RawResponse(json.dumps(client.ApiClient().sanitize_for_serialization(res))
                               .encode())

        return call


@pytest.fixture
def adapter() -> tuple[KubeAdapter, Stub, Stub, Stub]:
    a = KubeAdapter(client.ApiClient())
    apps, core, custom = Stub(), Stub(), Stub()
    a._apps, a._core, a._custom = apps, core, custom
    return a, apps, core, custom


def _api_error(status: int, message: str) -> ApiException:
    e = ApiException(status=status, reason="Reason")
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


DEP = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "sm-v-p", "namespace": "ml"}, "spec": {"replicas": 1},
}


def test_apply_deployment_is_server_side_apply(adapter: Any) -> None:
    a, apps, _, _ = adapter
    apps.results["patch_namespaced_deployment"] = {"metadata": {"name": "sm-v-p"}}
    assert a.apply(DEP) == {"metadata": {"name": "sm-v-p"}}
    name, args, kwargs = apps.calls[0]
    assert name == "patch_namespaced_deployment"
    assert args[:2] == ("sm-v-p", "ml") and args[2] == DEP
    assert kwargs == {
        "field_manager": "tritonscale", "force": True, "_content_type": APPLY_CONTENT_TYPE,
        "_request_timeout": (5.0, 10.0), "_preload_content": False,
    }


def test_every_call_has_a_client_side_timeout(adapter: Any) -> None:
    a, apps, core, custom = adapter
    a.timeout = (2.0, 3.0)
    apps.results["list_namespaced_deployment"] = client.V1DeploymentList(items=[])
    core.results["list_namespaced_pod"] = client.V1PodList(items=[])
    a.list_deployments("ml", "sm")
    a.list_pods("ml", "sm")
    a.get("Service", "ml", "sm")
    a.get("Deployment", "ml", "sm")
    custom.results["get_namespaced_custom_object"] = {"metadata": {}}
    a.get_scaledmodel("ml", "sm")
    a.apply(DEP)
    a.delete_deployment("ml", "x")
    a.patch_status("ml", "sm", {"a": 1})
    a.event({"namespace": "ml", "name": "sm"}, "Normal", "R", "m")
    calls = apps.calls + core.calls + custom.calls
    assert len(calls) == 9
    assert all(kw.get("_request_timeout") == (2.0, 3.0) for _, _, kw in calls), calls
    assert KubeAdapter(client.ApiClient(), timeout_seconds=30).timeout == (5.0, 30)
    with pytest.raises(ValueError):
        KubeAdapter(client.ApiClient(), timeout_seconds=0)


@pytest.mark.parametrize("exc", [
    urllib3.exceptions.MaxRetryError(
        None, "/x", urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out")),  # type: ignore[arg-type]
    urllib3.exceptions.MaxRetryError(
        None, "/x", urllib3.exceptions.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
    urllib3.exceptions.ProtocolError("Connection aborted."),
    urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"),  # type: ignore[arg-type]
    TimeoutError("timed out"),
])
def test_transport_errors_become_kube_api_errors(adapter: Any, exc: Exception) -> None:
    a, apps, _, _ = adapter
    apps.results["patch_namespaced_deployment"] = exc
    with pytest.raises(KubeAPIError) as ei:
        a.apply(DEP)
    assert ei.value.status is None and ei.value.retryable


def test_apply_service_and_unknown_kind(adapter: Any) -> None:
    a, _, core, _ = adapter
    svc = {"kind": "Service", "metadata": {"name": "sm", "namespace": "ml"}}
    a.apply(svc)
    assert core.calls[0][0] == "patch_namespaced_service"
    with pytest.raises(ValueError):
        a.apply({"kind": "Secret", "metadata": {"name": "x", "namespace": "ml"}})


def test_api_errors_translated(adapter: Any) -> None:
    a, apps, _, _ = adapter
    apps.results["patch_namespaced_deployment"] = _api_error(422, "spec.replicas: Invalid")
    with pytest.raises(KubeAPIError) as ei:
        a.apply(DEP)
    assert ei.value.status == 422 and "spec.replicas: Invalid" in str(ei.value)
    assert not ei.value.retryable
    apps.results["patch_namespaced_deployment"] = _api_error(503, "etcd unavailable")
    with pytest.raises(KubeAPIError) as ei2:
        a.apply(DEP)
    assert ei2.value.retryable
    apps.results["patch_namespaced_deployment"] = ConnectionResetError("reset")
    with pytest.raises(KubeAPIError) as ei3:
        a.apply(DEP)
    assert ei3.value.status is None and ei3.value.retryable


def test_list_deployments_by_label_returns_dicts(adapter: Any) -> None:
    a, apps, _, _ = adapter
    apps.results["list_namespaced_deployment"] = client.V1DeploymentList(
        items=[client.V1Deployment(metadata=client.V1ObjectMeta(name="sm-v-p"),
                                   spec=client.V1DeploymentSpec(
                                       replicas=2,
                                       selector=client.V1LabelSelector(match_labels={"a": "b"}),
                                       template=client.V1PodTemplateSpec()))]
    )
    out = a.list_deployments("ml", "sm")
    assert out[0]["metadata"]["name"] == "sm-v-p"
    assert out[0]["spec"]["replicas"] == 2
    assert apps.calls[0][2]["label_selector"] == "tritonscale.io/scaledmodel=sm"


def test_list_backend_services_by_label(adapter: Any) -> None:
    a, _, core, _ = adapter
    core.results["list_namespaced_service"] = client.V1ServiceList(
        items=[client.V1Service(metadata=client.V1ObjectMeta(name="sm-a-b--p"))])
    assert [s["metadata"]["name"] for s in a.list_backend_services("ml", "sm")] == ["sm-a-b--p"]
    name, args, kwargs = core.calls[0]
    assert name == "list_namespaced_service" and args == ("ml",)
    assert kwargs["label_selector"] == "tritonscale.io/scaledmodel=sm,tritonscale.io/route-backend"
    assert kwargs["_request_timeout"] == (5.0, 10.0)


def test_delete_ignores_not_found(adapter: Any) -> None:
    a, apps, _, _ = adapter
    apps.results["delete_namespaced_deployment"] = _api_error(404, "not found")
    a.delete_deployment("ml", "gone")
    apps.results["delete_namespaced_deployment"] = _api_error(403, "forbidden")
    with pytest.raises(KubeAPIError):
        a.delete_deployment("ml", "x")


def test_get_scaledmodel_none_when_missing(adapter: Any) -> None:
    a, _, _, custom = adapter
    custom.results["get_namespaced_custom_object"] = _api_error(404, "nope")
    assert a.get_scaledmodel("ml", "sm") is None
    custom.results["get_namespaced_custom_object"] = {"metadata": {"name": "sm"}}
    assert a.get_scaledmodel("ml", "sm") == {"metadata": {"name": "sm"}}


def test_patch_status_is_merge_patch(adapter: Any) -> None:
    a, _, _, custom = adapter
    a.patch_status("ml", "sm", {"ready": "1/1"})
    name, args, kwargs = custom.calls[0]
    assert name == "patch_namespaced_custom_object_status"
    assert args == ("tritonscale.io", "v1alpha1", "ml", "scaledmodels", "sm",
                    {"status": {"ready": "1/1"}})
    assert kwargs["_content_type"] == "application/merge-patch+json"


def test_event_body(adapter: Any) -> None:
    a, _, core, _ = adapter
    involved = {"apiVersion": "tritonscale.io/v1alpha1", "kind": "ScaledModel",
                "namespace": "ml", "name": "sm", "uid": "u"}
    a.event(involved, "Normal", "ScaledUp", "x" * 2000)
    name, args, _ = core.calls[0]
    assert name == "create_namespaced_event" and args[0] == "ml"
    ev = args[1]
    assert ev["involvedObject"] == involved
    assert ev["reason"] == "ScaledUp" and ev["type"] == "Normal"
    assert len(ev["message"]) == 1024
    assert ev["metadata"]["generateName"] == "sm."
    assert ev["source"]["component"] == "tritonscale"


def test_from_environment_pool_covers_the_workers(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection pool is sized by the caller (run.py: workers + 8), not the
    client's 5 x CPUs default that made 16 handler threads churn TLS connections."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # load_kube_config replaces the client's default Configuration: restore it after.
    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
    a = KubeAdapter.from_environment(pool_size=24)
    assert a._client.configuration.connection_pool_maxsize == 24
    assert a._client.rest_client.pool_manager.connection_pool_kw["maxsize"] == 24
    assert a._client.configuration.host == "https://127.0.0.1:1"


def test_raw_answers_are_decoded_and_the_connection_released(adapter: Any) -> None:
    """The adapter reads the raw JSON (no typed models), returns plain dicts, gives the
    connection back to the pool, and an unparseable answer is a KubeAPIError."""
    a, apps, _, _ = adapter
    responses: list[RawResponse] = []

    def answer(data: bytes) -> Any:
        def call(*args: Any, **kwargs: Any) -> RawResponse:
            assert kwargs["_preload_content"] is False
            responses.append(RawResponse(data))
            return responses[-1]
        return call

    apps.read_namespaced_deployment = answer(
        b'{"metadata": {"name": "d", "creationTimestamp": "2026-01-01T00:00:00Z"}}')
    got = a.get("Deployment", "ml", "d")
    assert got == {"metadata": {"name": "d", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    apps.read_namespaced_deployment = answer(b"<html>proxy error</html>")
    with pytest.raises(KubeAPIError) as ei:
        a.get("Deployment", "ml", "d")
    assert ei.value.status is None and ei.value.retryable
    assert [r.released for r in responses] == [True, True]


# -- the API server's host name: looked up with a deadline ------------------------------


def _kubeconfig(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, server: str,
                ca: Any = None) -> None:
    kubeconfig = tmp_path / "config"
    cluster = {"server": server, **({"certificate-authority": str(ca)} if ca else {})}
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)


# The fixture's resolver hangs 30 s; two bounded lookups of 1 s (one urllib3 reconnect)
# end far sooner even on a starved machine.
HUNG_S = 30.0
BOUNDED_S = 12.0


def test_a_hung_resolver_never_holds_an_api_call(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, hung_resolver: Any
) -> None:
    """A kubeconfig naming the API server by host name: urllib3 looked it up with no
    deadline, so a DNS server dropping queries held every reconcile (and its model's
    lock) until glibc gave up. Now the lookup is bounded by the connect timeout and
    the error names it."""
    from tritonscale.adapters.peering import PeeringReader

    _kubeconfig(tmp_path, monkeypatch, f"https://{HUNG_HOST}:6443")
    a = KubeAdapter.from_environment(timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(KubeAPIError, match="host name lookup timed out") as info:
        a.list_deployments("ml", "sm")
    assert info.value.retryable
    assert time.monotonic() - started < BOUNDED_S < HUNG_S
    # The peering reader shares the client setup (the default configuration).
    reader = PeeringReader(None, "p")
    reader_timeout = 1.0
    monkeypatch.setattr("tritonscale.adapters.peering.REQUEST_TIMEOUT_SECONDS", reader_timeout)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as err:
        reader.peers("ml")
    assert isinstance(err.value.reason, HostLookupTimeout)
    assert time.monotonic() - started < BOUNDED_S


class _Deployments(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a one-Deployment list; records the Host headers."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Host", ""))
        body = b'{"kind": "DeploymentList", "items": [{"metadata": {"name": "d"}}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("cert_names", [None, ("localhost",), ("elsewhere.example",)])
def test_a_host_name_that_resolves_is_still_served(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, cert_names: tuple[str, ...] | None
) -> None:
    """The bounded lookup connects to the resolved address but keeps the name: in the
    Host header, and for TLS as the name the certificate must carry (a certificate
    for localhost with no IP address passes; one for another name is refused)."""
    from tests.harness.k8s.pki import Pki

    seen: ClassVar[list[str]] = []
    handler = type("Handler", (_Deployments,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    scheme, ca = "http", None
    if cert_names is not None:
        pki = Pki(tmp_path / "pki")
        leaf = pki.issue("server", cert_names[0], server=True, dns_names=cert_names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme, ca = "https", pki.ca.cert
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _kubeconfig(tmp_path, monkeypatch, f"{scheme}://localhost:{port}", ca)
        a = KubeAdapter.from_environment(timeout_seconds=5.0)
        pools = a._client.rest_client.pool_manager.pool_classes_by_scheme
        assert pools["https"].ConnectionCls is resolve.BoundedHTTPSConnection
        if cert_names == ("elsewhere.example",):
            with pytest.raises(KubeAPIError, match=r"SSL|certificate"):
                a.list_deployments("ml", "sm")
            assert seen == []
            return
        assert a.list_deployments("ml", "sm") == [{"metadata": {"name": "d"}}]
        assert seen == [f"localhost:{port}"]
    finally:
        server.shutdown()
        server.server_close()


def test_lookups_of_a_hung_name_cost_bounded_threads(
    hung_resolver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolve, "MAX_PENDING_PER_HOST", 2)

    def lookups() -> int:
        return sum(t.name == f"lookup {HUNG_HOST}" for t in threading.enumerate())

    for _ in range(2):
        with pytest.raises(resolve.LookupTimeout, match=r"took over 0\.2 s"):
            resolve.addresses(HUNG_HOST, 443, 0.2)
    assert lookups() == 2
    started = time.monotonic()
    with pytest.raises(resolve.LookupTimeout, match="still hang"):
        resolve.addresses(HUNG_HOST, 443, 5.0)
    assert time.monotonic() - started < 0.5 and lookups() == 2
    # Literals need no lookup; other names are not held up by the hung one.
    assert resolve.addresses("127.0.0.1", 443, 0.001) == ["127.0.0.1"]
    assert "127.0.0.1" in resolve.addresses("localhost", 443, 5.0)
    # The resolver answers at last: the threads end, and the name's answer is its own.
    hung_resolver.set()
    deadline = time.monotonic() + 10
    while lookups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lookups() == 0
    with pytest.raises(socket.gaierror):
        resolve.addresses(HUNG_HOST, 443, 5.0)

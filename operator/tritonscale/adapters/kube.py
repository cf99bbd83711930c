"""The Kubernetes adapter: the only module of the operator that talks to the API.

Everything it sends is built elsewhere (``core/render.py``, ``core/status.py``);
it returns plain dicts and raises :class:`KubeAPIError` for every API failure, so
callers and the tests' recording fake share one error type.

Writes of Deployments and Services use server-side apply with the field manager
``tritonscale`` (``force=True``: the operator owns every field it sets); status is
a JSON merge patch on the ``status`` subresource.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import urllib3.exceptions
from urllib3.util.retry import Retry

from tritonscale.adapters import resolve
from tritonscale.core.api import GROUP, LABEL_SM, MANAGER, PLURAL, VERSION
from tritonscale.core.routing import (
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    LABEL_BACKEND,
    ROUTE_PLURALS,
)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# Client-side timeout of every API call (``tritonscale run --api-timeout``).
DEFAULT_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0

log = logging.getLogger(__name__)


class KubeAPIError(Exception):
    """An API call failed. ``status`` is the HTTP status (None: no response)."""

    def __init__(self, status: int | None, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status or 'no response'} {reason}: {message}".strip())

    @property
    def retryable(self) -> bool:
        """Transient: worth retrying later (network, conflicts, throttling, server)."""
        return self.status is None or self.status in (409, 429) or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404


def _message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return body[:500]
        if isinstance(data, Mapping):
            return str(data.get("message", ""))[:500]
    return ""


def _transport(exc: BaseException) -> str:
    """A short text for a failure without an HTTP response."""
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the real cause
    inner = reason if isinstance(reason, BaseException) else exc
    if isinstance(inner, resolve.HostLookupTimeout):
        return "host name lookup timed out"
    if isinstance(inner, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timeout"
    return f"{type(inner).__name__}: {inner}"[:300]


def bounded_api_client(configuration: Any = None) -> Any:
    """A ``kubernetes`` ApiClient (default: the loaded default configuration) whose
    connections look the API server's host name up with a deadline (the connect
    timeout): urllib3's lookup has none, and a kubeconfig naming a host, not an IP,
    whose DNS server drops queries would hold every caller for minutes."""
    from kubernetes import client

    api = client.ApiClient(configuration or client.Configuration.get_default_copy())
    resolve.bounded_pools(api.rest_client.pool_manager)
    return api


class KubeAdapter:
    """Deployments, Services, ScaledModel status and Events through the ``kubernetes`` client."""

    def __init__(
        self,
        api_client: Any = None,
        component: str = MANAGER,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        from kubernetes import client

        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        # Every call gets a client-side (connect, read) timeout: a stalled API server
        # must not hold a model's lock (and a worker) for longer than this.
        self.timeout = (min(CONNECT_TIMEOUT_SECONDS, timeout_seconds), timeout_seconds)
        self._client = api_client or bounded_api_client()
        self._apps = client.AppsV1Api(self._client)
        self._core = client.CoreV1Api(self._client)
        self._custom = client.CustomObjectsApi(self._client)
        self._component = component
        self._instance = os.environ.get("POD_NAME") or socket.gethostname()

    @classmethod
    def from_environment(
        cls, pool_size: int = 32, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> KubeAdapter:
        """In-cluster service account if present, else the local kubeconfig.

        ``pool_size`` keeps-alive that many connections; it must cover the handler
        threads calling concurrently (the client's default, 5 x CPUs, is 10 on two
        cores: with 16 workers every surplus call opened and threw away a TLS
        connection, "Connection pool is full, discarding connection")."""
        from kubernetes import client
        from kubernetes import config as _config

        config: Any = _config  # untyped module
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        cfg = client.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = max(1, pool_size)
        # urllib3 would retry a timed-out GET three times (4 x the timeout under the
        # lock); the reconciler retries with backoff instead. One reconnect is kept for
        # a pooled connection the server closed.
        cfg.retries = Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)
        return cls(bounded_api_client(cfg), timeout_seconds=timeout_seconds)

    # -- plumbing ---------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the client; the answer is the response's JSON as plain dicts and lists.

        The client's own decoding (typed models, validated, then turned back into dicts
        by ``sanitize_for_serialization``) cost about a sixth of the operator's CPU at
        2,000 ScaledModels; ``_preload_content=False`` hands back the raw response."""
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", self.timeout)
        kwargs["_preload_content"] = False
        try:
            response = fn(*args, **kwargs)
            try:
                data = response.data
            finally:
                response.release_conn()
            return json.loads(data) if data else None
        except ApiException as e:
            raise KubeAPIError(e.status or None, str(e.reason or what), _message(e.body)) from e
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as e:
            # No response: connection errors, timeouts (urllib3's MaxRetryError,
            # ReadTimeoutError, ProtocolError, ...), unparseable answers.
            raise KubeAPIError(None, what, _transport(e)) from e

    # -- reads --------------------------------------------------------------------

    def _list(self, what: str, fn: Callable[..., Any], namespace: str,
              selector: str) -> list[dict[str, Any]]:
        """The items of a namespaced list call with a label selector."""
        res = self._call(what, fn, namespace, label_selector=selector)
        return [dict(i) for i in (res or {}).get("items") or []]

    def list_deployments(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        """Deployments labelled as belonging to ``scaledmodel``."""
        return self._list("list deployments", self._apps.list_namespaced_deployment,
                          namespace, f"{LABEL_SM}={scaledmodel}")

    def list_backend_services(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        """Per-placement Services (weighted routing) labelled as ``scaledmodel``'s."""
        return self._list("list services", self._core.list_namespaced_service, namespace,
                          f"{LABEL_SM}={scaledmodel},{LABEL_BACKEND}")

    def list_pods(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        """Triton pods of ``scaledmodel`` (for the direct-scrape signal source)."""
        return self._list("list pods", self._core.list_namespaced_pod, namespace,
                          f"{LABEL_SM}={scaledmodel}")

    def list_nodes(self, selector: str) -> list[dict[str, Any]]:
        """Nodes matching the label ``selector`` (cluster-scoped; ``""``: all), for
        their interruption taints (handlers/interruption.py)."""
        res = self._call("list nodes", self._core.list_node, label_selector=selector)
        return [dict(i) for i in (res or {}).get("items") or []]

    def get_scaledmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self._call(
                "get scaledmodel",
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except KubeAPIError as e:
            if e.not_found:
                return None
            raise
        return dict(obj) if isinstance(obj, Mapping) else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live Deployment, Service or ConfigMap ``name``, or None if absent."""
        fn: Any
        if kind == "Deployment":
            fn = self._apps.read_namespaced_deployment
        elif kind == "Service":
            fn = self._core.read_namespaced_service
        elif kind == "ConfigMap":
            fn = self._core.read_namespaced_config_map
        elif kind in ROUTE_PLURALS:
            try:
                route = self._call(
                    f"get {kind}", self._custom.get_namespaced_custom_object, GATEWAY_GROUP,
                    GATEWAY_VERSION, namespace, ROUTE_PLURALS[kind], name,
                )
            except KubeAPIError as e:
                if e.not_found:  # also when the Gateway API CRDs are not installed
                    return None
                raise
            return dict(route) if isinstance(route, Mapping) else None
        else:
            raise ValueError(f"cannot read kind {kind!r}")
        try:
            res = self._call(f"get {kind}", fn, name, namespace)
        except KubeAPIError as e:
            if e.not_found:
                return None
            raise
        return dict(res) if isinstance(res, Mapping) else None

    # -- writes -------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a rendered Deployment, Service, ConfigMap or route."""
        kind = obj.get("kind")
        meta = obj["metadata"]
        kwargs = {
            "field_manager": self._component,
            "force": True,
            "_content_type": APPLY_CONTENT_TYPE,
        }
        fn: Any
        if kind == "Deployment":
            fn = self._apps.patch_namespaced_deployment
        elif kind == "Service":
            fn = self._core.patch_namespaced_service
        elif kind == "ConfigMap":
            fn = self._core.patch_namespaced_config_map
        elif kind in ROUTE_PLURALS:
            # Gateway API routes: no typed client; the custom-objects API with SSA.
            group, version = str(obj["apiVersion"]).split("/", 1)
            res = self._call(
                f"apply {kind}", self._custom.patch_namespaced_custom_object, group, version,
                meta["namespace"], ROUTE_PLURALS[str(kind)], meta["name"], dict(obj), **kwargs,
            )
            return dict(res) if isinstance(res, Mapping) else {}
        else:
            raise ValueError(f"cannot apply kind {kind!r}")
        res = self._call(f"apply {kind}", fn, meta["name"], meta["namespace"], dict(obj), **kwargs)
        return dict(res) if isinstance(res, Mapping) else {}

    def delete_deployment(self, namespace: str, name: str) -> None:
        from kubernetes import client

        try:
            self._call(
                "delete deployment",
                self._apps.delete_namespaced_deployment,
                name,
                namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except KubeAPIError as e:
            if not e.not_found:
                raise

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete a per-placement Service (weighted routing); absent is fine."""
        try:
            self._call("delete service", self._core.delete_namespaced_service, name, namespace)
        except KubeAPIError as e:
            if not e.not_found:
                raise

    def delete_configmap(self, namespace: str, name: str) -> None:
        """Delete a cascade's ConfigMap (spec.cascade removed); absent is fine."""
        try:
            self._call("delete configmap", self._core.delete_namespaced_config_map, name,
                       namespace)
        except KubeAPIError as e:
            if not e.not_found:
                raise

    def delete_route(self, kind: str, namespace: str, name: str) -> None:
        """Delete an HTTPRoute/GRPCRoute; absent (or no Gateway API CRDs) is fine."""
        try:
            self._call(f"delete {kind}", self._custom.delete_namespaced_custom_object,
                       GATEWAY_GROUP, GATEWAY_VERSION, namespace, ROUTE_PLURALS[kind], name)
        except KubeAPIError as e:
            if not e.not_found:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """JSON merge patch of ``status`` (None values delete keys)."""
        self._call(
            "patch status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``involved`` (apiVersion, kind, namespace, name, uid)."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        namespace = str(involved["namespace"])
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": {
                k: involved[k]
                for k in ("apiVersion", "kind", "namespace", "name", "uid")
                if k in involved
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("post event", self._core.create_namespaced_event, namespace, body)

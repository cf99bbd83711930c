"""Reads Kopf's peering objects, so the tick loop knows whether this replica acts.

Kopf pauses its own handlers when a peer with a higher (or equal) priority is alive,
but the operator-wide tick loop is our asyncio task, not a Kopf handler: it reads
the same peering object (``kopf.dev/v1`` ClusterKopfPeering, or KopfPeering per
namespace) and applies the same rule (:func:`tritonscale.core.fleet.peering_active`).
"""

from __future__ import annotations

from typing import Any

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
REQUEST_TIMEOUT_SECONDS = 10.0


class PeeringReader:
    """``status`` of one peering object (None when it does not exist)."""

    def __init__(self, api_client: Any, name: str) -> None:
        """``api_client`` None: a client from the loaded default configuration (the
        kube adapter's ``from_environment`` loads it)."""
        from kubernetes import client

        from tritonscale.adapters.kube import bounded_api_client

        if api_client is None:  # host name lookups with a deadline (adapters/resolve.py)
            api_client = bounded_api_client()
        self._custom = client.CustomObjectsApi(api_client)
        self.name = name

    def peers(self, namespace: str | None) -> dict[str, Any] | None:
        """The peers (identity -> info) of the cluster-wide (``namespace`` None) or the
        namespaced peering object; None when it is missing. API errors raise."""
        from kubernetes.client.exceptions import ApiException

        try:
            if namespace is None:
                obj = self._custom.get_cluster_custom_object(
                    PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", self.name,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            else:
                obj = self._custom.get_namespaced_custom_object(
                    PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", self.name,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        status = obj.get("status") if isinstance(obj, dict) else None
        return dict(status) if isinstance(status, dict) else {}

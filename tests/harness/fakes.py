"""A recording fake of the kube adapter (``tritonscale.handlers.ports.KubeAPI``).

It keeps Deployments, Services and ScaledModels in memory, records every call,
fails loudly on anything it does not implement or a test has forbidden, and can
inject :class:`KubeAPIError` on chosen calls.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tritonscale.adapters.kube import KubeAPIError
from tritonscale.core.api import LABEL_SM
from tritonscale.core.routing import LABEL_BACKEND

ROOT = Path(__file__).resolve().parents[2]

WRITES = ("apply", "delete_deployment", "delete_service", "delete_configmap", "delete_route",
          "patch_status", "event")


class Clock:
    """A clock the test sets by hand (``clock.t = ...``), injected where the code
    reads the time."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def load_example(name: str = "resnet50.yaml") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return doc


def _merge(dst: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """JSON merge patch (RFC 7386), as the API server applies it: a null removes
    the key, also inside a sub-object the patch creates (it is merged into {});
    lists and scalars replace."""
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, Mapping):
            sub = dst.get(k)
            if not isinstance(sub, dict):
                sub = {}
                dst[k] = sub
            _merge(sub, v)
        else:
            dst[k] = copy.deepcopy(v)


class FakeKube:
    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.routes: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.route_crds_missing = False
        self.missing_route_kinds: set[str] = set()
        self.scaledmodels: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self._failures: list[tuple[str, str, KubeAPIError]] = []
        self._forbidden: set[str] = set()

    # -- test controls --------------------------------------------------------------

    def fail(self, method: str, match: str = "", error: KubeAPIError | None = None) -> None:
        """The next call of ``method`` whose target contains ``match`` raises ``error``."""
        self._failures.append((method, match, error or KubeAPIError(500, "InternalError")))

    def forbid(self, *methods: str) -> None:
        self._forbidden.update(methods)

    def allow_all(self) -> None:
        self._forbidden.clear()

    def reset_calls(self) -> None:
        self.calls.clear()
        self.status_patches.clear()
        self.events.clear()

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] in WRITES]

    def set_ready(self, name: str, ready: int | None = None, namespace: str = "ml") -> None:
        d = self.deployments[(namespace, name)]
        d.setdefault("status", {})["readyReplicas"] = (
            d["spec"]["replicas"] if ready is None else ready
        )

    def deployment_names(self) -> list[str]:
        return sorted(n for _, n in self.deployments)

    def add_scaledmodel(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.scaledmodels[(meta["namespace"], meta["name"])] = obj
        return obj

    def _enter(self, method: str, target: str) -> None:
        if method in self._forbidden:
            raise AssertionError(f"unexpected call {method}({target})")
        self.calls.append((method, target))
        for i, (m, match, err) in enumerate(self._failures):
            if m == method and match in target:
                del self._failures[i]
                raise err

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"FakeKube has no {name!r}: unexpected API use")

    # -- KubeAPI ---------------------------------------------------------------------

    @staticmethod
    def _labelled(store: Mapping[tuple[str, str], dict[str, Any]], namespace: str,
                  scaledmodel: str, *also: str) -> list[dict[str, Any]]:
        """Copies of ``store``'s objects in ``namespace`` labelled as ``scaledmodel``'s
        and carrying the labels ``also`` (the real adapter's label selectors)."""
        out = []
        for (ns, _), obj in sorted(store.items()):
            labels = obj["metadata"].get("labels") or {}
            if ns == namespace and labels.get(LABEL_SM) == scaledmodel and all(
                    k in labels for k in also):
                out.append(copy.deepcopy(obj))
        return out

    def list_deployments(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        self._enter("list_deployments", f"{namespace}/{scaledmodel}")
        return self._labelled(self.deployments, namespace, scaledmodel)

    def list_backend_services(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]:
        self._enter("list_backend_services", f"{namespace}/{scaledmodel}")
        return self._labelled(self.services, namespace, scaledmodel, LABEL_BACKEND)

    def get_scaledmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get_scaledmodel", f"{namespace}/{name}")
        obj = self.scaledmodels.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._enter("get", f"{kind}/{namespace}/{name}")
        if kind in ("HTTPRoute", "GRPCRoute"):
            if self.route_crds_missing:
                return None
            obj = self.routes.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None
        store = {"Deployment": self.deployments, "Service": self.services,
                 "ConfigMap": self.configmaps}[kind]
        obj = store.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        self._enter("apply", f"{obj['kind']}/{meta['namespace']}/{meta['name']}")
        if obj["kind"] == "Deployment":
            old = self.deployments.get(key)
            new = copy.deepcopy(dict(obj))
            ready = ((old or {}).get("status") or {}).get("readyReplicas", 0)
            new["status"] = {"readyReplicas": min(ready, new["spec"]["replicas"])}
            self.deployments[key] = new
            return copy.deepcopy(new)
        if obj["kind"] == "Service":
            self.services[key] = copy.deepcopy(dict(obj))
            return copy.deepcopy(dict(obj))
        if obj["kind"] == "ConfigMap":
            self.configmaps[key] = copy.deepcopy(dict(obj))
            return copy.deepcopy(dict(obj))
        if obj["kind"] in ("HTTPRoute", "GRPCRoute"):
            if self.route_crds_missing or obj["kind"] in self.missing_route_kinds:
                raise KubeAPIError(404, "NotFound", "the server could not find the requested "
                                   "resource")
            self.routes[(obj["kind"], *key)] = copy.deepcopy(dict(obj))
            return copy.deepcopy(dict(obj))
        raise AssertionError(f"unexpected kind {obj['kind']}")

    def delete_deployment(self, namespace: str, name: str) -> None:
        self._enter("delete_deployment", f"{namespace}/{name}")
        self.deployments.pop((namespace, name), None)

    def delete_service(self, namespace: str, name: str) -> None:
        self._enter("delete_service", f"{namespace}/{name}")
        self.services.pop((namespace, name), None)

    def delete_configmap(self, namespace: str, name: str) -> None:
        self._enter("delete_configmap", f"{namespace}/{name}")
        self.configmaps.pop((namespace, name), None)

    def delete_route(self, kind: str, namespace: str, name: str) -> None:
        self._enter("delete_route", f"{kind}/{namespace}/{name}")
        self.routes.pop((kind, namespace, name), None)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._enter("patch_status", f"{namespace}/{name}")
        self.status_patches.append(copy.deepcopy(dict(status)))
        obj = self.scaledmodels.setdefault(
            (namespace, name), {"metadata": {"namespace": namespace, "name": name}}
        )
        _merge(obj.setdefault("status", {}), status)

    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self._enter("event", f"{involved['namespace']}/{involved['name']}")
        self.events.append((type_, reason, message))


def kube_with_example(namespace: str, uid: str, name: str = "resnet50.yaml") -> FakeKube:
    """A FakeKube holding the example ScaledModel ``name`` (examples/), put in
    ``namespace`` with ``uid`` at generation 1."""
    k = FakeKube()
    doc = load_example(name)
    doc["metadata"].update(namespace=namespace, uid=uid, generation=1)
    k.add_scaledmodel(doc)
    return k

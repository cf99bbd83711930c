"""Never adopt or overwrite an object the operator did not create.

Server-side apply with ``force`` takes over any object of the same name: its
selector is replaced and our controller ownerReference added, so deleting the
ScaledModel would garbage-collect somebody else's Service. So before an object is
applied, the live one (if any) must carry both marks of ours:

- the label ``app.kubernetes.io/managed-by: tritonscale``, and
- a *controller* ownerReference to this ScaledModel's uid.

Anything else is a :class:`Conflict`: the reconciler then changes nothing in the
cluster for the model and reports ``Ready=False`` (reason ``OwnershipConflict``)
naming the object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tritonscale.core.api import LABEL_MANAGED_BY, MANAGER

MANAGED_BY = LABEL_MANAGED_BY
REASON = "OwnershipConflict"


class Getter(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def is_ours(obj: Mapping[str, Any], uid: str) -> bool:
    """Labelled managed-by tritonscale and controlled by the ScaledModel ``uid``."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY) != MANAGER:
        return False
    return any(
        isinstance(ref, Mapping) and ref.get("controller") is True and ref.get("uid") == uid
        for ref in meta.get("ownerReferences") or ()
    )


@dataclass(frozen=True)
class Conflict:
    kind: str
    namespace: str
    name: str

    @property
    def object(self) -> str:
        return f"{self.kind}/{self.name}"

    def message(self, scaledmodel: str) -> str:
        return (
            f"{self.object} already exists in namespace {self.namespace} and was not "
            f"created by ScaledModel {scaledmodel} (it lacks the {MANAGED_BY}={MANAGER} "
            f"label or a controller ownerReference to it); it is left untouched and "
            f"nothing is applied for this model: delete or rename that object, or "
            f"rename the ScaledModel"
        )


def conflicts(kube: Getter, uid: str, wanted: Iterable[Mapping[str, Any]]) -> list[Conflict]:
    """The objects of ``wanted`` (rendered, about to be applied) whose live namesake
    exists and is not ours. One GET per object; raises the adapter's errors."""
    out: list[Conflict] = []
    for obj in wanted:
        meta = obj["metadata"]
        kind, ns, name = str(obj["kind"]), str(meta["namespace"]), str(meta["name"])
        live = kube.get(kind, ns, name)
        if live is not None and not is_ours(live, uid):
            out.append(Conflict(kind, ns, name))
    return out

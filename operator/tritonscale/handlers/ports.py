"""What the handlers need from the outside world, as small protocols.

``Policy`` is :func:`tritonscale.core.autoscale.decide`; ``KubeAPI`` is implemented
by :class:`tritonscale.adapters.kube.KubeAdapter` (and by the recording fake in the
tests); ``SignalSource`` by the Prometheus and Triton
adapters. Both raise or return plain values; neither knows about Kopf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tritonscale.core.spec import ScaledModelSpec
from tritonscale.core.types import Decision, Observation


class KubeAPI(Protocol):
    def list_deployments(self, namespace: str, scaledmodel: str) -> list[dict[str, Any]]: ...

    def list_backend_services(
        self, namespace: str, scaledmodel: str
    ) -> list[dict[str, Any]]: ...

    def get_scaledmodel(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete_deployment(self, namespace: str, name: str) -> None: ...

    def delete_service(self, namespace: str, name: str) -> None: ...

    def delete_configmap(self, namespace: str, name: str) -> None: ...

    def delete_route(self, kind: str, namespace: str, name: str) -> None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    def event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None: ...


class Policy(Protocol):
    """The decision step: :func:`tritonscale.core.autoscale.decide` (the default).

    ``state`` is ``status.autoscaler`` as last written (untrusted JSON, or None).
    The operator applies ``Decision.placements`` as they are, so the policy alone
    owns holding, make-before-break and which placements may exist.
    """

    def __call__(
        self, spec: ScaledModelSpec, obs: Observation, state: Mapping[str, Any] | None,
        now: float,
    ) -> Decision: ...


class SignalSource(Protocol):
    """Reads load and latency for one ScaledModel.

    Never raises: failures come back as an :class:`Observation` with ``rps=None``
    and ``error`` set (KEDA's rule: a failing source has one defined meaning).
    """

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation: ...


class InterruptionSource(Protocol):
    """Pools of a ScaledModel under a spot interruption notice, each with why
    (:class:`tritonscale.handlers.interruption.NodeNotices`). Never raises."""

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Mapping[str, str]: ...


class NoInterruptions:
    """No node information: no pool is ever under notice."""

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Mapping[str, str]:
        return {}


class NullSignalSource:
    """No signals: load is unknown, so the plan is held (or the interim rule applies)."""

    def __init__(self, reason: str = "no signal source is configured") -> None:
        self.reason = reason

    def observe(self, namespace: str, name: str, spec: ScaledModelSpec) -> Observation:
        return Observation(rps=None, error=self.reason)

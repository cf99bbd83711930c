"""A real, local Kubernetes control plane for tests.

etcd, kube-apiserver (Node,RBAC authorization, service-account token signing,
TLS everywhere), kube-controller-manager, kube-scheduler and KWOK, which plays
the kubelet for fake nodes: pods bound to nodes annotated ``kwok.x-k8s.io/node:
fake`` become Running and Ready. Every process runs in its own process group and
logs to ``<workdir>/logs/<component>.log``.

Typical use::

    cluster = Cluster(k8s_binaries(), workdir)
    cluster.start()
    cluster.add_node_pool("a100", gpus_per_node=8, count=2, taints=[...])
    cluster.kubectl("get", "nodes")
    cluster.stop()
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml
from tests.harness.net import free_port

from .pki import CertFiles, Pki

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

#: Annotation by which KWOK selects the nodes it manages
#: (``--manage-nodes-with-annotation-selector``).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Label put on every node made by :meth:`Cluster.add_node_pool`, valued with the pool's name.
NODE_POOL_LABEL = "tritonscale.io/e2e-node-pool"
#: Extended resource name of NVIDIA GPUs, as the NVIDIA device plugin advertises it.
GPU_RESOURCE = "nvidia.com/gpu"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: Controllers kube-controller-manager runs: enough for workloads, garbage collection,
#: namespaces, service accounts and node lifecycle; nothing that needs a cloud.
CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "resourcequota-controller",
    "horizontal-pod-autoscaler-controller",
)


class ClusterError(RuntimeError):
    """The control plane failed to start, or a command against it failed."""


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it returns True; raise :class:`ClusterError` after ``timeout`` s.

    Exceptions from the predicate count as "not yet" and the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    client: CertFiles | None = None,
    token: str | None = None,
    namespace: str | None = None,
    cluster_name: str = "tritonscale-e2e",
) -> Path:
    """Write a self-contained kubeconfig (certificates embedded) and return its path."""
    credentials: dict[str, str] = {}
    if client is not None:
        credentials["client-certificate-data"] = _b64(client.cert_pem())
        credentials["client-key-data"] = _b64(client.key_pem())
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": cluster_name, "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class Component:
    """One control-plane process."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str]) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"+ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # own process group, killed as a whole
            preexec_fn=_die_with_parent(os.getpid()),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=grace)
            else:
                _killpg(proc.pid, signal.SIGKILL)  # strays left in its group
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGKILL when the test process dies.

    Teardown does not run when pytest itself is killed (a CI timeout, SIGKILL);
    without this an orphaned etcd/kube-apiserver would run on. Linux only.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_PR_SET_PDEATHSIG = 1


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """A pod (as a JSON dict) is Running and its Ready condition is True."""
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )


@dataclass(frozen=True)
class NodePool:
    """Fake nodes made by :meth:`Cluster.add_node_pool`."""

    name: str
    node_names: tuple[str, ...]
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...]
    gpus_per_node: int


class Cluster:
    """A local control plane; :meth:`start` it, then :meth:`stop` it (or use ``with``)."""

    def __init__(self, bin_dir: Path, workdir: Path, *, name: str = "tritonscale-e2e") -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.name = name
        self.log_dir = workdir / "logs"
        self.pki_dir = workdir / "pki"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.components: list[Component] = []
        self.server = ""
        self.etcd_url = ""
        self._pki: Pki | None = None
        self._admin: CertFiles | None = None
        self._ports: dict[str, int] = {}
        self._api_client: ApiClient | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ca_file(self) -> Path:
        assert self._pki is not None, "cluster not started"
        return self._pki.ca.cert

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def start(self, timeout: float = 180.0) -> None:
        """Start every component and wait until the cluster serves workloads."""
        for sub in (self.log_dir, self.pki_dir, self.workdir / "etcd"):
            sub.mkdir(parents=True, exist_ok=True)
        self._ports = {
            n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")
        }
        self.server = f"https://127.0.0.1:{self._ports['apiserver']}"
        self.etcd_url = f"http://127.0.0.1:{self._ports['etcd']}"
        self._make_pki()
        deadline = time.monotonic() + timeout
        try:
            self._start_component("etcd", self._etcd_argv())
            wait_for(
                self._etcd_healthy,
                timeout=self._left(deadline),
                what="etcd /health",
                on_timeout=self._diagnostics,
            )
            self._start_component("kube-apiserver", self._apiserver_argv())
            wait_for(
                self._apiserver_ready,
                timeout=self._left(deadline),
                what="kube-apiserver /readyz",
                on_timeout=self._diagnostics,
            )
            self._start_component("kube-controller-manager", self._kcm_argv())
            self._start_component("kube-scheduler", self._scheduler_argv())
            self._start_component("kwok", self._kwok_argv())
            for comp, port in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
                wait_for(
                    functools.partial(self._https_ok, self._ports[port], "/healthz"),
                    timeout=self._left(deadline),
                    what=f"{comp} /healthz",
                    on_timeout=self._diagnostics,
                )
            # The service-account controller works once "default" gets its ServiceAccount.
            wait_for(
                lambda: self._has_default_service_account("default"),
                timeout=self._left(deadline),
                what="ServiceAccount default/default (kube-controller-manager)",
                on_timeout=self._diagnostics,
            )
            self._check_alive()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component (reverse start order), killing whole process groups."""
        if self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]
            self._api_client = None
        for comp in reversed(self.components):
            comp.stop()

    @staticmethod
    def _left(deadline: float) -> float:
        return max(1.0, deadline - time.monotonic())

    def _start_component(self, name: str, argv: list[str]) -> Component:
        comp = Component(name=name, argv=argv, log_path=self.log_dir / f"{name}.log")
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env["HOME"] = str(self.workdir)  # kwok/kubectl/helm state stays inside the workdir
        comp.start(env)
        self.components.append(comp)
        return comp

    def _check_alive(self) -> None:
        dead = [c for c in self.components if not c.alive()]
        if dead:
            raise ClusterError(
                "component(s) exited: "
                + ", ".join(c.name for c in dead)
                + "\n"
                + self._diagnostics()
            )

    def dead_components(self) -> list[str]:
        """Names of components whose process has exited."""
        return [c.name for c in self.components if not c.alive()]

    def _diagnostics(self, lines: int = 25) -> str:
        parts = [f"component logs in {self.log_dir}"]
        for comp in self.components:
            state = (
                "running"
                if comp.alive()
                else f"EXITED {comp.process.returncode if comp.process else '?'}"
            )
            parts.append(f"--- {comp.name} ({state}), last {lines} lines:\n{comp.tail(lines)}")
        return "\n".join(parts)

    def logs_summary(self, lines: int = 30) -> str:
        """The log directory and the tail of every component's log, for failure reports."""
        return self._diagnostics(lines)

    # ------------------------------------------------------------------ PKI

    def _make_pki(self) -> None:
        pki = Pki(self.pki_dir)
        self._pki = pki
        pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP),
        )
        self._admin = pki.issue(
            "admin", "kubernetes-admin", organizations=("system:masters",), client=True
        )
        pki.service_account_keys()
        # Front proxy (aggregation layer) with its own CA, as kubeadm sets it up: the API
        # server then publishes the request-header CA that delegating components
        # (controller manager, scheduler, aggregated API servers) expect.
        Pki(self.pki_dir / "front-proxy").issue(
            "front-proxy-client", "front-proxy-client", client=True
        )
        ca_pem = pki.ca.cert_pem()
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_pem=ca_pem,
            user="admin",
            client=self._admin,
            cluster_name=self.name,
        )
        for user in ("kube-controller-manager", "kube-scheduler"):
            cert = pki.issue(user, f"system:{user}", client=True)
            write_kubeconfig(
                self.workdir / f"{user}.kubeconfig",
                server=self.server,
                ca_pem=ca_pem,
                user=user,
                client=cert,
                cluster_name=self.name,
            )

    # ------------------------------------------------------------------ argv

    def _etcd_argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
        return [
            self.bin("etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # throw-away data: no fsync keeps a 2-core box responsive
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        d = self.pki_dir
        return [
            self.bin("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._ports['apiserver']}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--requestheader-client-ca-file={d / 'front-proxy' / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={d / 'front-proxy' / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={d / 'front-proxy' / 'front-proxy-client.key'}",
            "--authorization-mode=Node,RBAC",
            # /readyz, /healthz and /version stay public, as on kubeadm clusters.
            "--anonymous-auth=true",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
            "DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,Priority,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",  # fewer moving parts on a 2-core box
            "--profiling=false",
            "--v=1",
        ]

    def _component_common(self, user: str, port: str) -> list[str]:
        kubeconfig = self.workdir / f"{user}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self._ports[port]}",
            f"--cert-dir={self.workdir / (user + '-certs')}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _kcm_argv(self) -> list[str]:
        d = self.pki_dir
        return [
            self.bin("kube-controller-manager"),
            *self._component_common("kube-controller-manager", "kcm"),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={d / 'ca.crt'}",
            f"--cluster-signing-cert-file={d / 'ca.crt'}",
            f"--cluster-signing-key-file={d / 'ca.key'}",
            f"--cluster-name={self.name}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--controllers=" + ",".join(CONTROLLERS),
        ]

    def _scheduler_argv(self) -> list[str]:
        return [self.bin("kube-scheduler"), *self._component_common("kube-scheduler", "scheduler")]

    def _kwok_argv(self) -> list[str]:
        return [
            self.bin("kwok"),
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",  # keep Leases fresh, as kwokctl does
            "--cidr=10.244.0.1/16",
            "--node-ip=10.244.0.1",
        ]

    # ------------------------------------------------------------------ readiness probes

    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        assert self._pki is not None and self._admin is not None
        ctx = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        ctx.load_cert_chain(str(self._admin.cert), str(self._admin.key))
        return ctx

    def _etcd_healthy(self) -> bool:
        self._check_alive()
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=5) as resp:
            return bool(json.load(resp).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        self._check_alive()
        req = urllib.request.Request(f"{self.server}/readyz")
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl_context()) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False

    def _https_ok(self, port: int, path: str) -> bool:
        self._check_alive()
        url = f"https://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(
            url, timeout=5, context=self._ssl_context(verify=False)
        ) as resp:
            return bool(resp.status == 200)

    def _has_default_service_account(self, namespace: str) -> bool:
        self._check_alive()
        return (
            self.kubectl(
                "get", "serviceaccount", "default", "-n", namespace, check=False
            ).returncode
            == 0
        )

    # ------------------------------------------------------------------ clients

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl (admin kubeconfig unless another is given)."""
        return self._run_tool(
            "kubectl", args, check=check, input=input, kubeconfig=kubeconfig, timeout=timeout
        )

    def helm(
        self,
        *args: str,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's helm (admin kubeconfig unless another is given)."""
        return self._run_tool(
            "helm", args, check=check, input=None, kubeconfig=kubeconfig, timeout=timeout
        )

    def _run_tool(
        self,
        tool: str,
        args: Sequence[str],
        *,
        check: bool,
        input: str | None,
        kubeconfig: Path | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env.setdefault("HELM_CACHE_HOME", str(self.workdir / "helm" / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(self.workdir / "helm" / "config"))
        env.setdefault("HELM_DATA_HOME", str(self.workdir / "helm" / "data"))
        argv = [self.bin(tool), *args]
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{tool} {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def api_client(self, kubeconfig: Path | None = None) -> ApiClient:
        """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (default: admin).

        The admin client is cached and closed by :meth:`stop`; close others yourself.
        """
        from kubernetes import config as kube_config

        if kubeconfig is not None:
            new: ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig)
            )
            return new
        if self._api_client is None:
            self._api_client = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig)
            )
        return self._api_client

    def apply(
        self,
        manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]] | str,
        namespace: str | None = None,
    ) -> None:
        """``kubectl apply`` a manifest given as YAML text, a dict or a list of dicts."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, Mapping):
            text = yaml.safe_dump(dict(manifest))
        else:
            text = yaml.safe_dump_all([dict(m) for m in manifest])
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        self.kubectl(*args, input=text)

    def get_json(self, *args: str) -> Any:
        """``kubectl get ... -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_established(self, *crds: str, timeout: float = 60.0) -> None:
        """Wait until each CustomResourceDefinition (by name) is Established.

        Polled rather than ``kubectl wait --for=condition=Established``: right after a
        (re)create the CRD has no ``status.conditions`` yet, and kubectl 1.34 then
        fails at once ("accessor error: <nil>") instead of waiting."""

        def established(name: str) -> bool:
            conds = self.get_json("crd", name).get("status", {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conds)

        wait_for(lambda: all(established(c) for c in crds), timeout=timeout,
                 what=f"CRDs Established: {', '.join(crds)}")

    # ------------------------------------------------------------------ namespaces

    def create_namespace(
        self, name: str, *, labels: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> str:
        """Create a namespace and wait for its ``default`` ServiceAccount (pods need it)."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )
        wait_for(
            lambda: self._has_default_service_account(name),
            timeout=timeout,
            what=f"ServiceAccount {name}/default",
            on_timeout=self._diagnostics,
        )
        return name

    def delete_namespace(self, name: str, *, wait: bool = False, timeout: float = 120.0) -> None:
        self.kubectl(
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            f"--wait={str(wait).lower()}",
            f"--timeout={int(timeout)}s",
        )

    # ------------------------------------------------------------------ node pools

    def add_node_pool(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        gpus_per_node: int = 0,
        count: int = 1,
        cpu: str = "16",
        memory: str = "64Gi",
        *,
        pods: int = 110,
        wait_ready: bool = True,
        timeout: float = 60.0,
    ) -> NodePool:
        """Create ``count`` fake nodes ``<name>-<i>`` managed by KWOK.

        Each node carries ``labels`` plus ``tritonscale.io/e2e-node-pool=<name>``, the
        usual ``kubernetes.io/*`` labels, ``taints`` (dicts with key, value, effect),
        and capacity = allocatable = ``cpu``, ``memory``, ``pods`` and, when
        ``gpus_per_node`` > 0, ``nvidia.com/gpu``. Waits for every node to be Ready.
        """
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
            raise ValueError(f"node pool name {name!r} is not a DNS label")
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
        if gpus_per_node:
            resources[GPU_RESOURCE] = str(gpus_per_node)
        node_names = tuple(f"{name}-{i}" for i in range(count))
        all_labels = dict(labels or {})
        nodes = []
        for node in node_names:
            node_labels = {
                "type": "kwok",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node,
                NODE_POOL_LABEL: name,
                **all_labels,
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node,
                        "labels": node_labels,
                        "annotations": {
                            KWOK_NODE_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {"taints": [dict(t) for t in taints]},
                    "status": {
                        "capacity": resources,
                        "allocatable": resources,
                        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
                    },
                }
            )
        # `create`, not `apply`: a node of the same name left by another pool is an error.
        self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(nodes))
        if wait_ready:
            wait_for(
                lambda: self._nodes_ready(name, node_names),
                timeout=timeout,
                what=f"nodes of pool {name} Ready (kwok)",
                on_timeout=self._diagnostics,
            )
        return NodePool(
            name=name,
            node_names=node_names,
            labels=all_labels,
            taints=tuple(dict(t) for t in taints),
            gpus_per_node=gpus_per_node,
        )

    def _nodes_ready(self, pool: str, names: Sequence[str]) -> bool:
        self._check_alive()
        # A selector, not names: `kubectl get nodes NAME -o json` returns a bare object.
        items = self.get_json("nodes", "-l", f"{NODE_POOL_LABEL}={pool}")["items"]
        ready = {
            item["metadata"]["name"]
            for item in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in item.get("status", {}).get("conditions", [])
            )
        }
        return ready == set(names)

    def ready_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching label ``selector`` that are Running with condition Ready=True."""
        pods: list[dict[str, Any]] = self.get_json("pods", "-n", namespace, "-l", selector)["items"]
        return [p for p in pods if pod_is_ready(p)]

    def wait_for_ready_pods(
        self, namespace: str, selector: str, count: int, *, timeout: float = 90.0
    ) -> list[dict[str, Any]]:
        """Wait until exactly ``count`` pods matching ``selector`` are Running and Ready."""
        wait_for(
            lambda: len(self.ready_pods(namespace, selector)) == count,
            timeout=timeout,
            what=f"{count} ready pods {selector!r} in {namespace}",
            on_timeout=self._diagnostics,
        )
        return self.ready_pods(namespace, selector)

    def delete_node_pool(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Delete every node of pool ``name``. Their pods are then removed by the pod GC."""
        selector = f"{NODE_POOL_LABEL}={name}"
        self.kubectl(
            "delete",
            "nodes",
            "-l",
            selector,
            f"--wait={str(wait).lower()}",
            f"--timeout={int(timeout)}s",
        )

    # ------------------------------------------------------------------ service accounts

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        expiration_seconds: int = 3600,
        audiences: Sequence[str] = (),
    ) -> str:
        """Mint a bound token for ServiceAccount ``namespace/name`` (TokenRequest API)."""
        from kubernetes import client

        spec = client.V1TokenRequestSpec(
            audiences=list(audiences) or [SERVICE_ACCOUNT_ISSUER],
            expiration_seconds=expiration_seconds,
        )
        body = client.AuthenticationV1TokenRequest(spec=spec)
        result = client.CoreV1Api(self.api_client()).create_namespaced_service_account_token(
            name, namespace, body
        )
        if result.status is None or not result.status.token:
            raise ClusterError(f"TokenRequest for {namespace}/{name} returned no token")
        return str(result.status.token)

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600, path: Path | None = None
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The ServiceAccount must exist. Its default namespace is ``namespace``.
        """
        token = self.service_account_token(namespace, name, expiration_seconds=expiration_seconds)
        target = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        assert self._pki is not None
        return write_kubeconfig(
            target,
            server=self.server,
            ca_pem=self._pki.ca.cert_pem(),
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
            cluster_name=self.name,
        )

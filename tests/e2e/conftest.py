"""Fixtures for end-to-end tests against a real local control plane (marker ``e2e``).

Session scope: one cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK) for the whole run. Missing binaries are built by
``hack/k8s-binaries.sh``; if that fails the fixture errors, it never skips.

Environment:
  TRITONSCALE_E2E_WORKDIR  where the cluster's workdir (logs, PKI, kubeconfigs)
                           goes; default a fresh temp dir.
  TRITONSCALE_E2E_KEEP=1   keep the workdir even when every test passed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.harness.k8s import BinariesError, Cluster, ClusterError, k8s_binaries  # noqa: E402

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

_CLUSTER_KEY = pytest.StashKey[Cluster]()
_FAILED_KEY = pytest.StashKey[bool]()
_BINARIES_KEY = pytest.StashKey["Path | BinariesError"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against a real local Kubernetes control plane"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Obtain the binaries before any test runs when e2e tests are selected.

    A cold build takes tens of minutes; doing it here keeps it out of the per-test
    timeout (pytest-timeout counts session-fixture setup against the first test).
    A failure is kept and raised by the ``k8s_bin_dir`` fixture: tests error, not skip.
    """
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("e2e") for item in session.items):
        fd, name = tempfile.mkstemp(prefix="k8s-binaries-", suffix=".log")
        os.close(fd)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "e2e: obtaining Kubernetes binaries via hack/k8s-binaries.sh "
                f"(instant when cached, tens of minutes cold; progress: {name})"
            )
        try:
            session.stash[_BINARIES_KEY] = k8s_binaries(log_path=Path(name))
        except BinariesError as exc:
            session.stash[_BINARIES_KEY] = exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        item.session.stash[_FAILED_KEY] = True
        cluster = item.session.stash.get(_CLUSTER_KEY, None)
        if cluster is not None:
            report.sections.append(("kubernetes component logs", cluster.logs_summary()))


def _workdir() -> Path:
    base = os.environ.get("TRITONSCALE_E2E_WORKDIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="cluster-", dir=base))
    return Path(tempfile.mkdtemp(prefix="tritonscale-e2e-"))


@pytest.fixture(scope="session")
def k8s_bin_dir(request: pytest.FixtureRequest) -> Path:
    """Directory with etcd, kube-*, kubectl, kwok and helm (built on first use)."""
    found = request.session.stash.get(_BINARIES_KEY, None)
    if isinstance(found, BinariesError):
        raise found
    return found if found is not None else k8s_binaries()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, k8s_bin_dir: Path) -> Iterator[Cluster]:
    """A running control plane shared by the session."""
    # One retry with fresh ports: a port picked as free can be taken before the
    # component binds it when other runs share the machine.
    for attempt in (1, 2):
        workdir = _workdir()
        c = Cluster(k8s_bin_dir, workdir)
        try:
            c.start()
            break
        except ClusterError:
            sys.stderr.write(
                f"\nkubernetes control plane failed to start (attempt {attempt}); "
                f"logs kept in {c.log_dir}\n"
            )
            if attempt == 2:
                raise
    request.session.stash[_CLUSTER_KEY] = c
    try:
        yield c
    finally:
        c.stop()
        failed = request.session.stash.get(_FAILED_KEY, False)
        if failed or os.environ.get("TRITONSCALE_E2E_KEEP") == "1":
            sys.stderr.write(f"\nkubernetes component logs kept in {c.log_dir}\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    """Path of the admin (system:masters) kubeconfig."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Callable[..., str]:
    """``kubectl(*args, input=None, check=True) -> stdout`` with the admin kubeconfig."""

    def run(*args: str, input: str | None = None, check: bool = True) -> str:
        return cluster.kubectl(*args, input=input, check=check).stdout

    return run


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> ApiClient:
    """An admin ``kubernetes.client.ApiClient``."""
    return cluster.api_client()


@pytest.fixture(scope="session")
def service_account_kubeconfig(cluster: Cluster) -> Callable[[str, str], Path]:
    """``service_account_kubeconfig(namespace, name) -> Path`` (TokenRequest-minted token)."""
    return cluster.service_account_kubeconfig


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (with its default ServiceAccount), deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{secrets.token_hex(3)}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name, wait=False)


# -- the operator chart and node pools shared by the user-flow tests ------------------


@pytest.fixture(scope="session")
def chart_release(cluster: Cluster) -> Any:
    """The tritonscale chart, ``helm install``-ed once (see ``tests/harness/e2e.py``)."""
    from tests.harness.e2e import install_chart

    return install_chart(cluster)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, chart_release: Any) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount (its RBAC only)."""
    return cluster.service_account_kubeconfig(
        chart_release.namespace, chart_release.service_account
    )


@pytest.fixture(scope="session")
def example_pools(cluster: Cluster) -> list[Any]:
    """KWOK nodes for every node pool of examples/resnet50.yaml, labelled and tainted
    as its nodeSelectors and tolerations expect."""
    from tests.harness.e2e import add_example_pools, load_example

    return add_example_pools(cluster, load_example(namespace="default"))

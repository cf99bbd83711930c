"""Start and stop the real servers the ``tests/real`` suite runs against.

Nothing here is mocked: :class:`TritonServer` runs the ``tritonserver`` binary that the
``nvidia-pytriton`` wheel ships (2.51, CPU capable, Python backend), and
:class:`PrometheusServer` runs Debian's ``/usr/bin/prometheus``.  Both are started on free
loopback ports, waited for through their readiness endpoints (never a blind sleep), and
keep their logs in a directory the caller chooses.

A missing binary raises :class:`ServerSetupError`; the fixtures let that error fail
the tests instead of skipping them (run ``hack/install-triton-prometheus.sh``).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tests.harness.net import free_port

from tritonscale.core.render import metrics_args

MODELS_DIR = Path(__file__).resolve().parent / "models"
PROMETHEUS_BIN = os.environ.get("TRITONSCALE_PROMETHEUS_BIN", "/usr/bin/prometheus")
INSTALL_HINT = "run hack/install-triton-prometheus.sh"


class ServerSetupError(RuntimeError):
    """A real server could not be found or started."""


class PortTaken(ServerSetupError):
    """The server exited because another process holds one of its ports."""


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """GET ``url``; its HTTP status, or ``None`` when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError, http.client.HTTPException):
        # HTTPException: something else answers there (free_port's race: another
        # process's gRPC port, speaking HTTP/2), not this server yet.
        return None


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel's tritonserver, its backends and Python backend stub live."""

    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    def stub(self) -> Path:
        tag = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / tag / "triton_python_backend_stub"


def find_triton() -> TritonInstall:
    """Locate the ``nvidia-pytriton`` wheel's tritonserver without importing pytriton.

    Only the wheel's files are used (not its Python package), so it can be installed
    with ``--no-deps`` and leave the project's own numpy alone.
    """
    override = os.environ.get("TRITONSCALE_TRITON_ROOT")
    if override:
        root = Path(override)
    else:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerSetupError(f"nvidia-pytriton is not installed ({INSTALL_HINT})")
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    install = TritonInstall(root=root, libs=root.parent.parent / "nvidia_pytriton.libs")
    for needed in (install.binary, install.stub(), root / "backends" / "python"):
        if not needed.exists():
            raise ServerSetupError(f"{needed} is missing ({INSTALL_HINT})")
    return install


def stub_bin() -> Path:
    """``bin`` directory of the Python whose numpy the Python backend stub imports.

    The stub ignores PYTHONPATH and embeds the ``python3`` it finds first on PATH
    (taking its prefix, venv included).  The 2.51 stub mis-marshals output tensors under
    numpy 2.x ("output tensor shape does not match size of output"), so the installer
    makes a small venv with numpy<2 (``TRITONSCALE_STUB_VENV`` overrides).  Without it,
    the running interpreter is used if its numpy is older than 2.
    """
    override = os.environ.get("TRITONSCALE_STUB_VENV")
    tag = f"{sys.version_info.major}.{sys.version_info.minor}"
    cache = Path(os.environ.get("TRITONSCALE_CACHE", Path.home() / ".cache" / "tritonscale"))
    venv = Path(override) if override else cache / f"triton-stub-venv-py{tag}"
    if (venv / "bin" / "python3").exists():
        return venv / "bin"
    try:
        numpy_major = int(importlib.metadata.version("numpy").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        numpy_major = -1
    if 0 <= numpy_major < 2:
        return Path(sys.executable).parent
    raise ServerSetupError(f"no numpy<2 venv for the Python backend stub: {venv} ({INSTALL_HINT})")


def stub_environment(install: TritonInstall, base: Mapping[str, str]) -> dict[str, str]:
    """Environment under which the Python backend stub embeds a Python with numpy<2.

    The stub links ``libpython3.X.so``: LD_LIBRARY_PATH makes it load the running
    interpreter's library (not the system one) next to the wheel's bundled libraries,
    and :func:`stub_bin` goes first on PATH so it finds numpy.
    """
    env = dict(base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [p for p in (libdir, str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(ld)
    env["PATH"] = os.pathsep.join([str(stub_bin()), env.get("PATH", "")])
    for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(var, None)
    return env


def write_model(
    repo: Path,
    name: str,
    *,
    base_ms: float,
    per_item_ms: float,
    max_batch: int = 8,
    queue_delay_us: int = 2000,
) -> None:
    """Copy the ``sleepy`` test model into ``repo/name`` with the given timing."""
    _copy_model("sleepy", repo, name, max_batch=max_batch, queue_delay_us=queue_delay_us,
                params={"base_ms": base_ms, "per_item_ms": per_item_ms})


def _copy_model(
    template: str,
    repo: Path,
    name: str,
    *,
    max_batch: int,
    queue_delay_us: int,
    params: Mapping[str, object],
    batching_extra: str = "",
) -> None:
    """Copy the test model ``template`` into ``repo/name``: its config renamed, with
    ``max_batch``, the batcher's queue delay (``batching_extra`` appended to the
    ``dynamic_batching`` block) and the string ``params`` set."""
    src = MODELS_DIR / template
    dst = repo / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = (src / "config.pbtxt").read_text()
    cfg = re.sub(rf'name: "{template}"', f'name: "{name}"', cfg)
    cfg = re.sub(r"max_batch_size: \d+", f"max_batch_size: {max_batch}", cfg)
    cfg = re.sub(
        r"max_queue_delay_microseconds: \d+",
        f"max_queue_delay_microseconds: {queue_delay_us}{batching_extra}",
        cfg,
    )
    for key, value in params.items():
        cfg = re.sub(rf'(key: "{key}"\s*value: {{ string_value: )"[^"]*"', rf'\g<1>"{value}"', cfg)
    (dst / "config.pbtxt").write_text(cfg)


@dataclass
class TritonServer:
    """One real ``tritonserver`` process serving models from a temp repository."""

    workdir: Path
    models: Sequence[str]
    install: TritonInstall = field(default_factory=find_triton)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # More --model-repository directories (a cascade's router, mounted from a ConfigMap).
    extra_repositories: Sequence[Path] = ()
    # More flags, after the harness's own (the last value of a flag wins).
    extra_args: Sequence[str] = ()

    @property
    def repo(self) -> Path:
        return self.workdir / "models"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    @property
    def url(self) -> str:
        """host:port as tritonclient wants it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _backends(self) -> Path:
        """A temp copy of the wheel's backends with the matching stub beside the
        Python backend (never written into the wheel or the repository)."""
        dst = self.workdir / "backends"
        if not dst.exists():
            shutil.copytree(self.install.root / "backends", dst)
            stub = dst / "python" / "triton_python_backend_stub"
            shutil.copy2(self.install.stub(), stub)
            stub.chmod(0o755)
        return dst

    def start(self, timeout: float = 90.0, attempts: int = 3) -> TritonServer:
        """Start and wait until ready. free_port's ports were free a moment ago; when
        another process took one meanwhile, Triton exits saying so, and it is started
        again on fresh ports (at most ``attempts`` times)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout)
            except PortTaken:
                if attempt == attempts:
                    raise
                self.http_port, self.grpc_port, self.metrics_port = (
                    free_port(), free_port(), free_port())
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> TritonServer:
        self.repo.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.install.binary),
            f"--model-repository={self.repo}",
            *[f"--model-repository={r}" for r in self.extra_repositories],
            f"--backend-directory={self._backends()}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            "--allow-gpu-metrics=false",
            # The operator's own summary flags (core/render.py), for a p99 SLO.
            *metrics_args(99.0),
            "--metrics-interval-ms=500",
            "--exit-timeout-secs=3",
            "--log-verbose=0",
            *self.extra_args,
        ]
        env = stub_environment(self.install, os.environ)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        ready = f"http://{self.url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "already in use" in tail(self.log_path, 5):
                    raise PortTaken(tail(self.log_path, 5))
                raise ServerSetupError(
                    f"tritonserver exited with {self.proc.returncode}; log {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if http_status(ready) == 200 and http_status(self.metrics_url) == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerSetupError(
            f"tritonserver not ready after {timeout}s; log {self.log_path}:\n" + tail(self.log_path)
        )

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM the server's process group (it and its backend stubs), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass(frozen=True)
class ScrapeTarget:
    """One Triton metrics endpoint and the labels Prometheus attaches to its series."""

    address: str  # host:port
    labels: Mapping[str, str]
    job: str = "triton"


@dataclass
class PrometheusServer:
    """One real Prometheus process scraping the given targets every second."""

    workdir: Path
    targets: Sequence[ScrapeTarget]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def scrape_configs(self) -> list[dict[str, object]]:
        jobs: dict[str, list[dict[str, object]]] = {}
        for t in self.targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
        return [{"job_name": job, "static_configs": cfgs} for job, cfgs in jobs.items()]

    def config(self) -> dict[str, object]:
        return {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "900ms",
            },
            "scrape_configs": self.scrape_configs(),
        }

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        if not Path(PROMETHEUS_BIN).exists():
            raise ServerSetupError(f"{PROMETHEUS_BIN} is missing ({INSTALL_HINT})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False, allow_unicode=True))
        args = [
            PROMETHEUS_BIN,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=2h",
            "--log.level=info",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerSetupError(
                    f"prometheus exited with {self.proc.returncode}; log {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if http_status(f"{self.url}/-/ready") == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerSetupError(
            f"prometheus not ready after {timeout}s; log {self.log_path}:\n" + tail(self.log_path)
        )

    def stop(self, grace: float = 8.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def prometheus_query(url: str, expr: str, timeout: float = 2.0) -> list[dict[str, object]]:
    """Run an instant query directly (test plumbing, independent of the adapter)."""
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=timeout) as resp:
        body = json.loads(resp.read())
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def wait_until_scraped(prom: PrometheusServer, targets: int, timeout: float = 30.0) -> None:
    """Wait until Prometheus has scraped ``targets`` targets successfully.

    Prometheus hands static targets to its scrape loops about 5 s after start, so
    this is the real readiness point for tests that read data.
    """
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = len(prometheus_query(prom.url, "up == 1"))
        except (OSError, ValueError, KeyError):
            seen = 0
        if seen >= targets:
            return
        time.sleep(0.2)
    raise ServerSetupError(
        f"prometheus scraped {seen}/{targets} targets after {timeout}s; log {prom.log_path}:\n"
        + tail(prom.log_path)
    )


def write_ledger_model(
    repo: Path,
    name: str,
    ledger: Path,
    *,
    base_ms: float = 0.0,
    max_batch: int = 2,
    queue_delay_us: int = 1000,
    queue_timeout_us: int | None = None,
) -> None:
    """Copy the ``ledger`` test model into ``repo/name``: it records in ``ledger`` the
    ids of the requests it computes. ``queue_timeout_us``: a dynamic-batching queue
    policy that rejects a request still queued that long after it arrived
    (``default_queue_policy { timeout_action: REJECT ... allow_timeout_override }``)."""
    policy = ""
    if queue_timeout_us is not None:
        policy = (
            "\n  default_queue_policy {\n    timeout_action: REJECT\n"
            f"    default_timeout_microseconds: {queue_timeout_us}\n"
            "    allow_timeout_override: true\n  }"
        )
    _copy_model("ledger", repo, name, max_batch=max_batch, queue_delay_us=queue_delay_us,
                params={"base_ms": base_ms, "ledger_path": ledger}, batching_extra=policy)

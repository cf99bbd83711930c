"""The tritonscale operator as a local subprocess, for e2e tests and benchmarks.

The operator is started exactly as a user would start it outside the cluster,
``python -m tritonscale run ...``, with ``KUBECONFIG`` pointing at the kubeconfig
it must use (in the e2e tests: a token of the Helm chart's ServiceAccount, so the
chart's RBAC is what the operator runs with). Its output goes to a log file that
is kept with the cluster's logs and shown when a test fails.

Typical use::

    op = OperatorProcess(kubeconfig, log_dir / "operator.log")
    op.start()                  # waits for Kopf's /healthz
    op.metrics()                # text of GET /metrics
    op.stats()                  # CPU seconds and memory (RSS, peak) from /proc
    op.kill()                   # SIGKILL, as an OOM kill or node loss would
    op.start()                  # a new process, same ports and log file
    op.stop()                   # SIGTERM, then SIGKILL after a grace period
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.harness.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_SRC = REPO_ROOT / "operator"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStats:
    """CPU seconds (user, system) and memory (KiB) of one process, from /proc."""

    user_s: float
    system_s: float
    rss_kib: int
    hwm_kib: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s


def proc_stats(pid: int) -> ProcStats:
    """``/proc/<pid>/stat`` utime+stime and ``/proc/<pid>/status`` VmRSS/VmHWM."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields after "(comm) ": state is index 0, utime is field 14 of the full line.
    utime, stime = int(fields[11]), int(fields[12])
    mem: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0])
    return ProcStats(utime / CLK_TCK, stime / CLK_TCK, mem.get("VmRSS", 0), mem.get("VmHWM", 0))


class OperatorError(RuntimeError):
    """The operator process did not start, or exited unexpectedly."""


class OperatorProcess:
    """One ``tritonscale run`` process (restartable) with its own ports and log file.

    ``namespaces`` empty means ``--all-namespaces``. ``extra_args`` are appended
    to the command line (for example ``["--pool-stall-seconds", "10"]``).
    ``workdir`` instead of ``log_path``: the log is ``<workdir>/operator.log``.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path | None = None,
        *,
        workdir: Path | None = None,
        namespaces: Sequence[str] = (),
        tick_seconds: float = 1.0,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        if log_path is None:
            if workdir is None:
                raise ValueError("OperatorProcess needs log_path or workdir")
            log_path = workdir / "operator.log"
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = tuple(namespaces)
        self.tick_seconds = tick_seconds
        self.extra_args = tuple(extra_args)
        self.python = python
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ command

    @property
    def argv(self) -> list[str]:
        scope = [f"--namespace={n}" for n in self.namespaces] or ["--all-namespaces"]
        return [
            self.python,
            "-m",
            "tritonscale",
            "run",
            *scope,
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            f"--metrics-port={self.metrics_port}",
            f"--tick-seconds={self.tick_seconds:g}",
            "--log-format=full",
            *self.extra_args,
        ]

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # Never let an in-cluster config or another kubeconfig leak in.
            if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(OPERATOR_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        env["POD_NAME"] = "e2e-local-operator"
        env.pop("TRITONSCALE_NAMESPACES", None)  # the scope comes from the flags only
        return env

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start the process and wait until Kopf's liveness endpoint answers 200."""
        if self.alive():
            raise OperatorError("operator already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.starts += 1
        self._log.write(f"\n+ (start #{self.starts}) {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise OperatorError(
                    f"operator exited with {self.returncode} during startup:\n{self.tail()}"
                )
            if self.healthy():
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise OperatorError(
                    f"operator /healthz did not answer within {timeout:.0f} s:\n{self.tail()}"
                )
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stats(self) -> ProcStats:
        """CPU time and memory of the running process."""
        return proc_stats(self.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None, "operator not started"
        return self.process.pid

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye (as an OOM kill or a lost node)."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close_log("killed with SIGKILL")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=30)
        else:
            self._signal(signal.SIGKILL)  # strays left in its process group
        self._close_log(f"stopped (exit {self.process.returncode})")

    def _close_log(self, what: str) -> None:
        if self._log is not None:
            self._log.write(f"+ {what}\n".encode())
            self._log.close()
            self._log = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ endpoints

    def _get(self, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode("utf-8", "replace")

    def healthy(self) -> bool:
        try:
            return self._get(self.health_port, "/healthz", timeout=2.0)[0] == 200
        except OSError:
            return False

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        """The Prometheus exposition of ``GET /metrics`` (raises unless 200)."""
        status, body = self._get(self.metrics_port, "/metrics")
        if status != 200:
            raise OperatorError(f"GET {self.metrics_url} returned {status}: {body[:500]}")
        return body

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise OperatorError(f"operator exited with {self.returncode}:\n{self.tail()}")


# -- operators a test starts ------------------------------------------------------------


def stop_and_show(op: OperatorProcess, lines: int = 40) -> None:
    """Stop ``op`` and print its log's tail (pytest shows it with a failing test)."""
    op.stop()
    print(f"\n--- operator log {op.log_path} (tail)\n{op.tail(lines)}")


@contextlib.contextmanager
def running(op: OperatorProcess, lines: int = 40) -> Iterator[OperatorProcess]:
    """``op`` started for the ``with`` block, then stopped with its log's tail shown."""
    op.start()
    try:
        yield op
    finally:
        stop_and_show(op, lines)


class Operators:
    """The operator processes one test starts, each logging to
    ``<log_dir>/operator-<test>[-<tag>].log``; :meth:`stop_all` stops them all."""

    def __init__(self, log_dir: Path, test: str, lines: int = 40) -> None:
        self.log_dir = log_dir
        self.test = test[:60]
        self.lines = lines
        self.started: list[OperatorProcess] = []

    def start(self, kubeconfig: Path, *extra: str, tag: str = "",
              namespaces: Sequence[str] = ()) -> OperatorProcess:
        name = f"operator-{self.test}" + (f"-{tag}" if tag else "")
        op = OperatorProcess(kubeconfig, self.log_dir / f"{name}.log",
                             namespaces=namespaces, extra_args=extra)
        op.start()
        self.started.append(op)
        return op

    def stop_all(self) -> None:
        for op in self.started:
            stop_and_show(op, self.lines)

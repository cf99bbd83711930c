"""A small runner for the operator as a subprocess (``python -m tritonscale run``).

Used by the closed-loop test and the scale benchmark. It starts the operator with a
given kubeconfig and scope, waits for its metrics endpoint, reads its CPU time and
memory from ``/proc`` and stops it (SIGTERM, then SIGKILL) with its whole process
group. The log goes to ``<workdir>/operator.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_SRC = REPO_ROOT / "operator"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class OperatorProcess:
    """``tritonscale run`` against ``kubeconfig``; ``namespaces`` empty = cluster-wide."""

    kubeconfig: Path
    workdir: Path
    namespaces: Sequence[str] = ()
    tick_seconds: float = 1.0
    workers: int = 16
    extra_args: Sequence[str] = ()
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)] or ["--all-namespaces"]
        return [
            sys.executable,
            "-m",
            "tritonscale",
            "run",
            *scope,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--tick-seconds",
            str(self.tick_seconds),
            "--workers",
            str(self.workers),
            "--log-format",
            "plain",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(OPERATOR_SRC), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("TRITONSCALE_NAMESPACES", None)
        with self.log_path.open("ab") as log:
            log.write(f"+ {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            if self._ok(f"http://127.0.0.1:{self.liveness_port}/healthz"):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"operator not live after {timeout:.0f} s:\n{self.tail()}")

    @staticmethod
    def _ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> ProcStats:
        assert self.proc is not None
        return proc_stats(self.proc.pid)

    def metrics_text(self, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=timeout) as resp:
            return str(resp.read().decode())

    def stop(self, grace: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

"""Locate (or build) the control-plane binaries through ``hack/k8s-binaries.sh``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "hack" / "k8s-binaries.sh"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


class BinariesError(RuntimeError):
    """The binaries could not be found nor built."""


def k8s_binaries(timeout: float = 3600.0, log_path: Path | None = None) -> Path:
    """Return the directory holding :data:`BINARIES`, building them on a cold cache.

    A cold build takes tens of minutes (see the script's header); later calls take
    about a second. The script's progress goes to ``log_path`` (default: a temp
    file). Raises :class:`BinariesError` (never skips) when that fails.
    """
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="k8s-binaries-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                ["bash", str(SCRIPT)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BinariesError(
                f"{SCRIPT} did not finish within {timeout:.0f} s; its log: {log_path}"
            ) from exc
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise BinariesError(
            f"{SCRIPT} failed with exit code {proc.returncode} (log: {log_path}):\n{tail}"
        )
    directory = Path(lines[-1])
    missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
    if missing:
        raise BinariesError(f"{SCRIPT} printed {directory}, which lacks {', '.join(missing)}")
    log_path.unlink(missing_ok=True)
    return directory

"""Locate (or build) the control-plane binaries through ``hack/k8s-binaries.sh``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def k8s_binaries(timeout: float = 3600.0) -> Path:
    """Return the directory holding :data:`BINARIES`, building them on a cold cache.

    A cold build takes tens of minutes (see the script's header); later calls take
    about a second. Raises :class:`BinariesError` (never skips) when that fails.
    """
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired as exc:
        raise BinariesError(f"{SCRIPT} did not finish within {timeout:.0f} s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.splitlines()[-40:])
        raise BinariesError(f"{SCRIPT} failed with exit code {proc.returncode}:\n{tail}")
    directory = Path(lines[-1])
    missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
    if missing:
        raise BinariesError(f"{SCRIPT} printed {directory}, which lacks {', '.join(missing)}")
    return directory

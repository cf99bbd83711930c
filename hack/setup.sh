#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine; idempotent and
# quick when already done. Used by hack/test.sh and .ci/run.
#   - a virtual environment .venv with tritonscale (editable) and its dev extras
#   - Prometheus (Debian package) and the nvidia-pytriton wheel (real tritonserver)
#   - the Kubernetes binaries (etcd, kube-apiserver, ..., kwok, helm), built from
#     their Go modules and cached outside the repository
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.tritonscale-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

if [ -x hack/install-triton-prometheus.sh ]; then
  VIRTUAL_ENV="$ROOT/.venv" hack/install-triton-prometheus.sh
fi

if [ -x hack/k8s-binaries.sh ]; then
  bindir=$(hack/k8s-binaries.sh | tail -n 1)
  echo "kubernetes binaries: $bindir"
fi

# Gateway API CRDs (weighted routing e2e), from the sigs.k8s.io/gateway-api Go module.
if [ -x hack/gateway-api-crds.sh ]; then
  crds=$(hack/gateway-api-crds.sh | tail -n 1)
  echo "gateway api crds: $crds"
fi

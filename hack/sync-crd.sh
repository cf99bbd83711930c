#!/usr/bin/env bash
# hack/sync-crd.sh: keep the chart's CRD a byte-identical copy of crds/.
#
# crds/scaledmodel.yaml is the one source of truth (the API, `kubectl apply -f crds/`,
# the packaged copy `tritonscale validate` reads). Helm installs CRDs only from the
# chart's own crds/ directory, so the chart carries a copy; this script refreshes it
# (and the generated CRD reference, docs/crd-reference.md).
#
#   hack/sync-crd.sh          copy crds/scaledmodel.yaml into the chart, regenerate docs
#   hack/sync-crd.sh --check  exit 1 if either is stale (tests/artifacts/test_chart.py does
#                             the same check)
set -euo pipefail
cd "$(dirname "$0")/.."
src=crds/scaledmodel.yaml
dst=helm/tritonscale/crds/scaledmodel.yaml
doc=docs/crd-reference.md
py=${PYTHON:-python3}
[ -f "$src" ] || { echo "sync-crd: $src does not exist" >&2; exit 1; }
if [ "${1:-}" = "--check" ]; then
  rc=0
  cmp -s "$src" "$dst" || { echo "sync-crd: $dst differs from $src (run hack/sync-crd.sh)" >&2; rc=1; }
  "$py" hack/gen-crd-docs.py --check "$src" "$doc" || rc=1
  exit $rc
fi
cp "$src" "$dst"
cp "$src" operator/tritonscale/data/scaledmodel.yaml
"$py" hack/gen-crd-docs.py "$src" "$doc"
echo "sync-crd: $dst and $doc refreshed from $src" >&2

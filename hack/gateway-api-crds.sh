#!/usr/bin/env bash
# hack/gateway-api-crds.sh: the Gateway API CRDs (standard channel) for the e2e tests.
#
# They ship inside the sigs.k8s.io/gateway-api Go module (config/crd/standard/*.yaml),
# so this fetches that module through the Go module proxy (`go mod download`, checked
# against the Go checksum database) and keeps only the CRD files, cached OUTSIDE the
# repository: ${TRITONSCALE_CACHE:-~/.cache/tritonscale}/gateway-api/<version>/standard.
# Separate from hack/k8s-binaries.sh (its cache key stays untouched). Prints the
# directory on its last line. v1.6.3 resolves with Go 1.26 (v1.7.0 needs Go 1.27).
#
#   hack/gateway-api-crds.sh            fetch (instant when cached)
#   GATEWAY_API_VERSION=v1.6.3 hack/gateway-api-crds.sh
set -euo pipefail
version=${GATEWAY_API_VERSION:-v1.6.3}
cache=${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/gateway-api/$version
out=$cache/standard
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "gateway-api-crds: go is not installed" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$out/.complete" ]; then
  modcache=$cache/go-mod
  json=$(cd "$cache" && GOMODCACHE=$modcache GOFLAGS=-modcacherw GO111MODULE=on \
    timeout 600 go mod download -json "sigs.k8s.io/gateway-api@$version")
  dir=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  src=$dir/config/crd/standard
  ls "$src"/*.yaml >/dev/null 2>&1 || { echo "gateway-api-crds: no CRDs in $src" >&2; exit 1; }
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  cp "$src"/*.yaml "$out.tmp/"
  printf '%s\n' "$json" > "$out.tmp/module.json"
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  rm -rf "$modcache"
fi
echo "$out"

#!/usr/bin/env bash
# hack/k8s-binaries.sh: provide a real Kubernetes control plane for the e2e tests.
#
# Prints, as the LAST line of stdout, a directory holding:
#   etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm
# Everything else (progress, timings) goes to stderr.
#
# Where the binaries come from, first match wins:
#   1. $KUBEBUILDER_ASSETS (the envtest convention) if it holds all seven;
#   2. $PATH, if every one of the seven is found there (a directory of symlinks is
#      made so one directory can be printed);
#   3. otherwise they are built from their Go modules with the machine's Go and
#      cached in ${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/k8s/<key>/bin,
#      outside the repository; later runs only check that each binary runs.
#   TRITONSCALE_K8S_FORCE_BUILD=1 skips 1 and 2.
#
# Pinned versions and why:
#   Kubernetes v1.34.4  (k8s.io/kubernetes; staging modules k8s.io/* v0.34.4)
#       The newest v1.34 patch the Go module proxy lists here. 1.34 asks for
#       go 1.24, so the machine's Go 1.26 builds it without a toolchain download.
#   etcd v3.6.4         (go.etcd.io/etcd/server/v3)
#       The exact version Kubernetes v1.34.4's go.mod requires (and the one kubeadm
#       1.34 deploys), so etcd shares one module graph with the kube binaries and
#       most of its packages are compiled once.
#   kwok v0.7.0         (sigs.k8s.io/kwok/cmd/kwok)
#       A release whose go.mod says go 1.24 (v0.8.0 says 1.26.0 and pulls a k8s.io
#       v0.36 graph; later ones want Go 1.27). Its default Stages (node heartbeat,
#       pod ready/complete/delete) are compiled in, so no Stage CRDs are applied.
#       It is built in its own wrapper module with its own k8s.io v0.33 graph:
#       v0.7.0 does not compile against apimachinery v0.34.
#   helm v3.19.5        (helm.sh/helm/v3/cmd/helm)
#       Helm 3 is what users run; 3.19 is the line built against k8s.io v0.34.
#
# How: `go install k8s.io/kubernetes/cmd/...@v` refuses modules with replace
# directives, so a throw-away wrapper module (under the cache dir, never committed)
# requires k8s.io/kubernetes, etcd's server and helm, and replaces every k8s.io
# staging module (required by k8s.io/kubernetes at v0.0.0) with the published
# v0.34.4; one `go build` compiles those commands so shared packages compile once.
# A second wrapper module builds kwok. GOCACHE and GOMODCACHE point into
# the cache dir; the Go build cache is removed after a successful build (set
# TRITONSCALE_K8S_KEEP_GOCACHE=1 to keep it), the module cache is kept.
# Parallelism: `go build -p ${TRITONSCALE_K8S_BUILD_JOBS:-2}`.
#
# Cold build, measured (2026-11-28) on the project's machine (2 cores, 24 GiB, Go
# 1.26.8) with an empty cache dir, GOCACHE and GOMODCACHE (`TRITONSCALE_CACHE=<new
# dir>`, so module downloads are included):
#   wall clock 58 min 30 s, but the machine was shared (load average ~10: other
#   engineers' builds and tests), and this build got 42% of the CPUs;
#   CPU time 1293 s user + 187 s sys = 24.7 CPU-minutes, i.e. about 13-16 min of
#   wall clock on two otherwise idle cores (CI runs alone on its machine);
#   peak memory 1.9 GB (linking kube-apiserver); peak disk ~7 GB (Go build cache).
#   Result: bin/ 462 MB (apiserver 98, controller-manager 89, scheduler 70,
#   kwok 64, kubectl 59, helm 59, etcd 26) + module cache 1.2 GB kept = 1.7 GB.
# Warm run (cache hit): under 1 s (each binary's version command).
set -euo pipefail

K8S_VERSION=v1.34.4
K8S_STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.4
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
CACHE_ROOT="${TRITONSCALE_CACHE:-$HOME/.cache/tritonscale}/k8s"
CACHE_DIR="${CACHE_ROOT}/${KEY}"
BIN_DIR="${CACHE_DIR}/bin"

log() { echo "k8s-binaries: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# holds_all DIR: every binary exists and is executable in DIR.
holds_all() {
  local dir=$1 b
  [ -n "$dir" ] && [ -d "$dir" ] || return 1
  for b in "${BINARIES[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

# version_of DIR BIN: print the binary's version line (fails if it does not run).
# (No `| head` here: with pipefail, SIGPIPE would turn a good binary into a failure.)
version_of() {
  local dir=$1 b=$2 out
  case "$b" in
    kubectl) out=$("$dir/kubectl" version --client 2>&1) || return 1 ;;
    helm) out=$("$dir/helm" version --short 2>&1) || return 1 ;;
    *) out=$("$dir/$b" --version 2>&1) || return 1 ;;
  esac
  printf '%s\n' "${out%%$'\n'*}"
}

# runs_all DIR: every binary answers its version command.
runs_all() {
  local dir=$1 b
  for b in "${BINARIES[@]}"; do
    if ! version_of "$dir" "$b" >/dev/null 2>&1; then
      log "$dir/$b does not run"
      return 1
    fi
  done
}

# The body is a function so bash parses it whole before running it: a checkout or
# edit of this file during a (long) build cannot corrupt the running script.
main() {
if [ "${TRITONSCALE_K8S_FORCE_BUILD:-0}" != 1 ]; then
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    if holds_all "$KUBEBUILDER_ASSETS" && runs_all "$KUBEBUILDER_ASSETS"; then
      log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
      echo "$KUBEBUILDER_ASSETS"
      exit 0
    fi
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks some of: ${BINARIES[*]}; ignoring it"
  fi
  on_path=1
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || { on_path=0; break; }; done
  if [ "$on_path" = 1 ]; then
    links="${CACHE_ROOT}/from-path"
    mkdir -p "$links"
    for b in "${BINARIES[@]}"; do ln -sfn "$(command -v "$b")" "$links/$b"; done
    if runs_all "$links"; then
      log "using binaries found on PATH (linked in $links)"
      echo "$links"
      exit 0
    fi
  fi
fi

if holds_all "$BIN_DIR" && runs_all "$BIN_DIR"; then
  log "cached: $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

# ---------------------------------------------------------------- build
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
trap 'rm -rf "${CACHE_DIR}/bin.tmp.$$"' EXIT
log "waiting for the build lock $CACHE_DIR/.lock"
flock 9
# Another process may have finished the build while we waited.
if holds_all "$BIN_DIR" && runs_all "$BIN_DIR"; then
  log "cached: $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

GO="${GO:-}"
if [ -z "$GO" ]; then
  if command -v go >/dev/null 2>&1; then GO=$(command -v go)
  elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
  else die "no Go toolchain (go on PATH or /usr/local/go/bin/go) to build ${BINARIES[*]}"
  fi
fi
go_version=$("$GO" version 2>&1) || die "$GO does not run: $go_version"
log "building with $go_version (a cold build takes 15+ min on 2 cores: see the header)"

export GOCACHE="${CACHE_ROOT}/go-build"
export GOMODCACHE="${CACHE_ROOT}/go-mod"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
export GOWORK=off

start=$(date +%s)

# Staging modules: every `k8s.io/X => ./staging/src/k8s.io/X` in k8s.io/kubernetes's go.mod.
kube_gomod=$(cd "$CACHE_DIR" && "$GO" mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[ -f "$kube_gomod" ] || die "could not download k8s.io/kubernetes@${K8S_VERSION}'s go.mod"
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$kube_gomod" | sort -u)
[ -n "$staging" ] || die "found no staging replace directives in $kube_gomod"

# write_module DIR REPLACES PKG... : a wrapper module whose tools.go imports PKG...
# (requirements are added by `go mod tidy`, pinned ones are in REQUIRE_LINES).
write_module() {
  local dir=$1 replaces=$2; shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  {
    echo "// Generated by hack/k8s-binaries.sh: throw-away wrapper to build pinned binaries."
    echo "module tritonscale.invalid/k8sbinaries"
    echo
    echo "go 1.24.0"
    echo
    echo "require ("
    printf '%s\n' "$REQUIRE_LINES"
    echo ")"
    if [ -n "$replaces" ]; then
      echo
      echo "replace ("
      printf '%s\n' "$replaces"
      echo ")"
    fi
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    local p
    for p in "$@"; do echo "	_ \"$p\""; done
    echo ")"
  } >"$dir/tools.go"
  log "resolving modules in $dir (go mod tidy)"
  (cd "$dir" && "$GO" mod tidy) >&2
}

# Module 1: the Kubernetes commands, etcd and helm share one graph (k8s.io/* v0.34.4,
# etcd v3.6.4 as Kubernetes pins it), so common packages compile once.
KUBE_PKGS=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubectl
  helm.sh/helm/v3/cmd/helm
  go.etcd.io/etcd/server/v3
)
REQUIRE_LINES=$(printf '\t%s\n' "k8s.io/kubernetes ${K8S_VERSION}" \
  "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" "helm.sh/helm/v3 ${HELM_VERSION}")
replaces=""
for m in $staging; do replaces+=$(printf '\t%s => %s %s' "$m" "$m" "$K8S_STAGING_VERSION")$'\n'; done
write_module "$CACHE_DIR/module-kube" "$replaces" "${KUBE_PKGS[@]}"

# Module 2: kwok keeps its own graph (k8s.io/* v0.33): v0.7.0 does not compile
# against apimachinery v0.34 (metav1.InitialEventsListBlueprintAnnotationKey is gone).
REQUIRE_LINES=$(printf '\t%s\n' "sigs.k8s.io/kwok ${KWOK_VERSION}")
write_module "$CACHE_DIR/module-kwok" "" sigs.k8s.io/kwok/cmd/kwok

# Version stamps, as Kubernetes' hack/lib/version.sh and helm's Makefile set them.
k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldx=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldx+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
  ldx+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done
ldx+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
ldx+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor}"
ldx+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"
kwok_ldx=" -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
jobs="${TRITONSCALE_K8S_BUILD_JOBS:-2}"

OUT="${CACHE_DIR}/bin.tmp.$$"
rm -rf "$OUT"
mkdir -p "$OUT"
build() { # build MODULE_DIR LDFLAGS_EXTRA -o TARGET PKG...
  local dir=$1 extra=$2; shift 2
  log "go build -p $jobs $*"
  (cd "$dir" && "$GO" build -p "$jobs" -trimpath -ldflags="-s -w${extra}" "$@") >&2
}
build "$CACHE_DIR/module-kube" "$ldx" -o "$OUT/" "${KUBE_PKGS[@]:0:5}"
build "$CACHE_DIR/module-kube" "$ldx" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
build "$CACHE_DIR/module-kwok" "$kwok_ldx" -o "$OUT/kwok" sigs.k8s.io/kwok/cmd/kwok

holds_all "$OUT" || die "build finished but $OUT lacks some of ${BINARIES[*]}"
runs_all "$OUT" || die "built binaries in $OUT do not run"
rm -rf "$BIN_DIR"
mv "$OUT" "$BIN_DIR"
end=$(date +%s)
for b in "${BINARIES[@]}"; do log "  $b: $(version_of "$BIN_DIR" "$b")"; done
log "built in $((end - start)) s; $(du -sh "$BIN_DIR" | cut -f1) in $BIN_DIR"
if [ "${TRITONSCALE_K8S_KEEP_GOCACHE:-0}" != 1 ]; then
  "$GO" clean -cache >/dev/null 2>&1 || true
  rm -rf "$GOCACHE"
fi
echo "$BIN_DIR"
}

main "$@"; exit $?  # one line: bash never reads past it, even if the file changed

#!/usr/bin/env bash
# Provides the envtest control plane without the internet: kube-apiserver built from the
# k8s.io/kubernetes module, etcd from Debian's etcd-server package, kubectl from the machine.
# Everything is cached under bin/envtest-<version>/ and rebuilt only when the version changes.
# Prints the assets directory (for KUBEBUILDER_ASSETS) on stdout; progress goes to stderr.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${root}/bin/envtest-${KUBE_VERSION}"
export GOTOOLCHAIN="${GOTOOLCHAIN_PIN:-go1.27.3}"
export GOFLAGS="-mod=mod"

log() { echo "envtest-assets: $*" >&2; }

mkdir -p "${assets}"

# kube-apiserver: a throwaway wrapper module requires k8s.io/kubernetes and replaces each
# staging module (required there as v0.0.0) by its published v0.<minor>.<patch> release.
if [ ! -x "${assets}/kube-apiserver" ]; then
  log "building kube-apiserver v${KUBE_VERSION} (first run only; several minutes on 2 cores)"
  wrapper="${assets}/.wrapper"
  rm -rf "${wrapper}" && mkdir -p "${wrapper}"
  staging_version="v0.${KUBE_VERSION#1.}"
  gomod_file="$(cd "${wrapper}" && go mod download -json "k8s.io/kubernetes@v${KUBE_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  {
    echo "module roomsync.local/envtest-kube-apiserver"
    echo
    echo "go 1.27"
    echo
    echo "require k8s.io/kubernetes v${KUBE_VERSION}"
    echo
    echo "replace ("
    # Every k8s.io module that k8s.io/kubernetes requires at v0.0.0 is a staging module.
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "${gomod_file}" | sort -u \
      | while read -r mod; do echo "	${mod} => ${mod} ${staging_version}"; done
    echo ")"
  } > "${wrapper}/go.mod"
  cat > "${wrapper}/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  (
    cd "${wrapper}"
    go mod tidy >&2
    ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION}"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=${KUBE_VERSION%%.*}"
    minor="${KUBE_VERSION#*.}"; minor="${minor%%.*}"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${assets}/kube-apiserver.tmp" \
      k8s.io/kubernetes/cmd/kube-apiserver >&2
  )
  mv "${assets}/kube-apiserver.tmp" "${assets}/kube-apiserver"
  rm -rf "${wrapper}"
fi

# etcd: Debian's etcd-server (3.4) is enough for envtest. CI installs it in .ci/run; here we
# only link it, or say clearly what is missing.
if [ ! -x "${assets}/etcd" ]; then
  etcd_bin="$(command -v etcd || true)"
  if [ -z "${etcd_bin}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's etcd-server"
    (apt-get install -y --no-install-recommends etcd-server >&2 \
      || { apt-get update >&2 && apt-get install -y --no-install-recommends etcd-server >&2; })
    # Debian starts the packaged service; envtest runs its own etcd.
    (systemctl stop etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || pkill -x etcd || true)
    etcd_bin="$(command -v etcd || true)"
  fi
  if [ -z "${etcd_bin}" ]; then
    log "etcd not found: install Debian's etcd-server (apt-get install etcd-server)"
    exit 1
  fi
  ln -sf "${etcd_bin}" "${assets}/etcd"
fi

if [ ! -x "${assets}/kubectl" ]; then
  kubectl_bin="$(command -v kubectl || true)"
  if [ -z "${kubectl_bin}" ]; then
    log "kubectl not found on PATH"
    exit 1
  fi
  ln -sf "${kubectl_bin}" "${assets}/kubectl"
fi

echo "${assets}"

#!/usr/bin/env bash
# Runs a command beside the services the tests use besides Go, and stops them when it ends,
# however it ends: a throwaway PostgreSQL 15 cluster on 127.0.0.1:PORT (hack/postgres.sh),
# whose URL goes to the command as ROOMSYNC_TEST_POSTGRES_URL, and, with --envtest, the envtest
# control plane's binaries (hack/envtest-assets.sh, KUBE_VERSION) as KUBEBUILDER_ASSETS.
# `make test`, `make bench` and `make soak` run their go commands through it, so the three
# set up the same way.
#
#   hack/test-services.sh [--envtest] PORT COMMAND [ARG...]
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--envtest] PORT COMMAND [ARG...]" >&2; exit 2; }
envtest=false
if [ "${1:-}" = --envtest ]; then
  envtest=true
  shift
fi
port="${1:-}"
[[ "${port}" =~ ^[0-9]+$ ]] || usage
shift
[ $# -gt 0 ] || usage

if "${envtest}"; then
  KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)
  export KUBEBUILDER_ASSETS
fi
pgdir=$(mktemp -d /tmp/roomsync-pg.XXXXXX)
trap 'hack/postgres.sh stop "${pgdir}"' EXIT
# A Ctrl-C or a kill ends the command first, then this script through its EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM
ROOMSYNC_TEST_POSTGRES_URL=$(hack/postgres.sh start "${pgdir}" "${port}")
export ROOMSYNC_TEST_POSTGRES_URL
echo "envtest assets: ${KUBEBUILDER_ASSETS:-not asked for}; PostgreSQL: ${ROOMSYNC_TEST_POSTGRES_URL}"
# Not exec: the trap stops the cluster once the command is done.
"$@"

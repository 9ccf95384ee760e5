#!/usr/bin/env bash
# Real Matrix peers for roomsync's tests: Dendrite v0.13.8 (github.com/matrix-org/dendrite,
# Apache-2.0 — never the AGPL element-hq fork) on loopback, self-signed TLS, SQLite.
#
#   hack/dendrite.sh build
#       Builds dendrite, generate-config, generate-keys, create-account into
#       bin/dendrite-v0.13.8/ once (cached by version); prints that directory.
#   hack/dendrite.sh start DIR HTTPS_PORT HTTP_PORT
#       Keys, TLS cert and config in DIR (kept across restarts of the same DIR), starts
#       dendrite in the background (PID in DIR/dendrite.pid, log in DIR/dendrite.log), waits
#       until federation (https://127.0.0.1:HTTPS_PORT) and client API (http://127.0.0.1:HTTP_PORT)
#       answer, prints the server name "127.0.0.1:HTTPS_PORT".
#   hack/dendrite.sh stop DIR [--clean]
#       TERM, then KILL after a bounded wait, the PID in DIR/dendrite.pid; --clean removes DIR.
#   hack/dendrite.sh seed DIR HTTP_PORT COUNT [--room ROOM_ID] [--join-from SERVER_NAME]
#                                              [--parallel N] [--user LOCALPART]
#       Registers (shared secret) a user, creates a public, world-readable room of version 11
#       (or uses --room; with --join-from, first joins it over federation through that server),
#       sends COUNT m.room.message events, waits until the client API shows them all, prints
#       the room ID.
#   hack/dendrite.sh event-ids DIR HTTP_PORT ROOM_ID [--user LOCALPART]
#       The room's event IDs as this Dendrite's client API shows them (/messages, dir=b, to the
#       start; state events and m.room.create included), oldest first, one a line.
#
# Everything but the results goes to stderr, so `name=$(hack/dendrite.sh start …)` works.
# Environment: DENDRITE_START_TIMEOUT (seconds, default 30), DENDRITE_STOP_TIMEOUT (default 10),
# DENDRITE_GO (the go command, default go), DENDRITE_GOTOOLCHAIN (default: the project's
# go1.27.3 — Dendrite v0.13.8 builds with it and with go1.26).
set -euo pipefail

DENDRITE_VERSION=v0.13.8
DENDRITE_MODULE=github.com/matrix-org/dendrite
DENDRITE_TOOLS=(dendrite generate-config generate-keys create-account)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bindir="${root}/bin/dendrite-${DENDRITE_VERSION}"
go_cmd="${DENDRITE_GO:-go}"
toolchain="${DENDRITE_GOTOOLCHAIN:-go1.27.3}"

log() { echo "dendrite.sh: $*" >&2; }
die() { log "$*"; exit 1; }
usage() {
  cat >&2 <<EOF
usage: $0 build
       $0 start DIR HTTPS_PORT HTTP_PORT
       $0 stop DIR [--clean]
       $0 seed DIR HTTP_PORT COUNT [--room ROOM_ID] [--join-from SERVER_NAME] [--parallel N] [--user LOCALPART]
       $0 event-ids DIR HTTP_PORT ROOM_ID [--user LOCALPART]
EOF
  exit 2
}
is_port() { [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
now_ms() { date +%s%3N; }

have_binaries() {
  local t
  for t in "${DENDRITE_TOOLS[@]}"; do
    [ -x "${bindir}/${t}" ] || return 1
  done
}

# build installs the four tools with `go install …@v0.13.8` into a temporary directory and
# renames it into place, under a lock, so concurrent callers build once and never see half a set.
# SQLite: v0.13.8 picks its driver by build tag: with cgo mattn/go-sqlite3 (used here: gcc is on
# the machine; ~100 messages/s when seeding), without cgo modernc.org/sqlite (the fallback when no
# C compiler is found; also works, ~60 messages/s). Both go1.26 and go1.27.3 build v0.13.8.
cmd_build() {
  if have_binaries; then
    echo "${bindir}"
    return
  fi
  mkdir -p "${root}/bin"
  exec 9>"${root}/bin/.dendrite-${DENDRITE_VERSION}.lock"
  flock -w 1200 9 || die "timed out waiting for another build of Dendrite"
  if have_binaries; then
    echo "${bindir}"
    return
  fi
  local cgo=1
  if ! command -v "${CC:-gcc}" >/dev/null 2>&1; then
    log "no C compiler: building with CGO_ENABLED=0 (modernc.org/sqlite)"
    cgo=0
  fi
  local tmp="${root}/bin/.dendrite-${DENDRITE_VERSION}.tmp.$$"
  rm -rf "${tmp}"
  mkdir -p "${tmp}"
  local pkgs=() t
  for t in "${DENDRITE_TOOLS[@]}"; do
    pkgs+=("${DENDRITE_MODULE}/cmd/${t}@${DENDRITE_VERSION}")
  done
  log "building Dendrite ${DENDRITE_VERSION} (GOTOOLCHAIN=${toolchain} CGO_ENABLED=${cgo}); takes 1-2 min on 2 cores"
  local t0
  t0=$(now_ms)
  # Run outside the project's module so that its go.mod cannot interfere.
  if ! (cd "${tmp}" && GOTOOLCHAIN="${toolchain}" CGO_ENABLED="${cgo}" GOBIN="${tmp}" GOFLAGS=-buildvcs=false \
    GO111MODULE=on "${go_cmd}" install "${pkgs[@]}" >&2); then
    rm -rf "${tmp}"
    die "go install of Dendrite ${DENDRITE_VERSION} failed"
  fi
  {
    echo "module: ${DENDRITE_MODULE} ${DENDRITE_VERSION}"
    echo "go: $(cd "${tmp}" && GOTOOLCHAIN="${toolchain}" "${go_cmd}" version)"
    echo "CGO_ENABLED: ${cgo}"
  } >"${tmp}/BUILDINFO"
  rm -rf "${bindir}"
  mv "${tmp}" "${bindir}"
  log "built in $(($(now_ms) - t0)) ms into ${bindir}"
  echo "${bindir}"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# ours_alive: PID runs and is the dendrite of DIR (its command line names DIR's config), so a
# stale dendrite.pid whose number the system gave to another process is never signalled.
ours_alive() {
  local pid="$1" dir="$2"
  pid_alive "${pid}" && tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "-config ${dir}/dendrite.yaml"
}
read_pid() { [ -f "$1/dendrite.pid" ] && cat "$1/dendrite.pid" || true; }

write_config() {
  local dir="$1" name="$2" secret="$3"
  # Keys checked against v0.13.8's generate-config (-ci) output and setup/config; anything not
  # named here keeps Dendrite's default.
  cat >"${dir}/dendrite.yaml" <<EOF
# Written by hack/dendrite.sh: a throwaway Dendrite ${DENDRITE_VERSION} for roomsync's tests.
version: 2
global:
  server_name: "${name}"
  private_key: ${dir}/matrix_key.pem
  key_validity_period: 168h0m0s
  database:
    connection_string: ""
  disable_federation: false
  presence:
    enable_inbound: false
    enable_outbound: false
  trusted_third_party_id_servers: []
  jetstream:
    storage_path: ${dir}/jetstream
    addresses: []
    topic_prefix: Dendrite
    in_memory: false
  metrics:
    enabled: false
  dns_cache:
    enabled: false
  server_notices:
    enabled: false
  report_stats:
    enabled: false
client_api:
  registration_disabled: true
  registration_shared_secret: "${secret}"
  guests_disabled: true
  enable_registration_captcha: false
  rate_limiting:
    enabled: false
federation_api:
  database:
    connection_string: file:${dir}/dendrite_federationapi.db
  # Peers (roomsync) run on loopback with self-signed certificates.
  disable_tls_validation: true
  # Fetch every key from its server: no notary (matrix.org is unreachable and irrelevant).
  key_perspectives: []
  prefer_direct_fetch: true
key_server:
  database:
    connection_string: file:${dir}/dendrite_keyserver.db
media_api:
  database:
    connection_string: file:${dir}/dendrite_mediaapi.db
  base_path: ${dir}/media
room_server:
  default_room_version: "11"
  database:
    connection_string: file:${dir}/dendrite_roomserver.db
sync_api:
  database:
    connection_string: file:${dir}/dendrite_syncapi.db
  search:
    enabled: false
user_api:
  bcrypt_cost: 4
  account_database:
    connection_string: file:${dir}/dendrite_userapi.db
relay_api:
  database:
    connection_string: file:${dir}/dendrite_relayapi.db
mscs:
  mscs: []
  database:
    connection_string: file:${dir}/dendrite_mscs.db
logging:
- type: std
  level: info
EOF
}

make_tls() {
  local dir="$1"
  [ -s "${dir}/tls.crt" ] && [ -s "${dir}/tls.key" ] && return
  if command -v openssl >/dev/null 2>&1; then
    # EC P-256 with an IP SAN: quick to make, and verifiable when a test pins it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "${dir}/tls.key" -out "${dir}/tls.crt" >/dev/null 2>&1 || die "openssl could not make a TLS certificate"
  else
    "${bindir}/generate-keys" -tls-cert "${dir}/tls.crt" -tls-key "${dir}/tls.key" -keysize 2048 >&2
  fi
}

cmd_start() {
  local dir="$1" https_port="$2" http_port="$3"
  is_port "${https_port}" && is_port "${http_port}" || usage
  [ "${https_port}" != "${http_port}" ] || die "HTTPS_PORT and HTTP_PORT must differ"
  have_binaries || cmd_build >/dev/null
  mkdir -p "${dir}"
  dir="$(cd "${dir}" && pwd)"
  local name="127.0.0.1:${https_port}"

  local pid
  pid="$(read_pid "${dir}")"
  if ours_alive "${pid}" "${dir}"; then
    die "a Dendrite (PID ${pid}) is already running in ${dir}; run: $0 stop ${dir}"
  fi
  rm -f "${dir}/dendrite.pid"
  # A DIR holds one server's databases: its name (and so its HTTPS port) is fixed.
  if [ -f "${dir}/server_name" ] && [ "$(cat "${dir}/server_name")" != "${name}" ]; then
    die "${dir} belongs to $(cat "${dir}/server_name"), not ${name}; use another DIR or: $0 stop ${dir} --clean"
  fi
  # Nothing may answer on our ports already, or the readiness check below would be fooled.
  local p
  for p in "${https_port}" "${http_port}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then
      die "127.0.0.1:${p} is already in use"
    fi
  done

  echo "${name}" >"${dir}/server_name"
  [ -s "${dir}/registration_shared_secret" ] ||
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"${dir}/registration_shared_secret"
  chmod 600 "${dir}/registration_shared_secret"
  [ -s "${dir}/matrix_key.pem" ] || "${bindir}/generate-keys" -private-key "${dir}/matrix_key.pem" >&2
  make_tls "${dir}"
  write_config "${dir}" "${name}" "$(cat "${dir}/registration_shared_secret")"

  local t0
  t0=$(now_ms)
  # Output to a file, never to our stdout: a caller's $(…) would otherwise wait for dendrite.
  (cd "${dir}" && exec "${bindir}/dendrite" -config "${dir}/dendrite.yaml" \
    -http-bind-address "127.0.0.1:${http_port}" \
    -https-bind-address "127.0.0.1:${https_port}" \
    -tls-cert "${dir}/tls.crt" -tls-key "${dir}/tls.key") \
    </dev/null >>"${dir}/dendrite.log" 2>&1 &
  pid=$!
  echo "${pid}" >"${dir}/dendrite.pid"
  log "dendrite ${name} started, PID ${pid}, log ${dir}/dendrite.log"

  local timeout="${DENDRITE_START_TIMEOUT:-30}" i ready=0 key=""
  for ((i = 0; i < timeout * 10; i++)); do
    if ! pid_alive "${pid}"; then
      tail -n 30 "${dir}/dendrite.log" >&2 || true
      rm -f "${dir}/dendrite.pid"
      die "dendrite exited during start-up"
    fi
    if curl -ksf --max-time 2 "https://127.0.0.1:${https_port}/_matrix/federation/v1/version" >/dev/null 2>&1 &&
      curl -sf --max-time 2 "http://127.0.0.1:${http_port}/_matrix/client/versions" >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ "${ready}" != 1 ]; then
    tail -n 30 "${dir}/dendrite.log" >&2 || true
    kill -KILL "${pid}" 2>/dev/null || true
    rm -f "${dir}/dendrite.pid"
    die "dendrite did not answer within ${timeout}s"
  fi
  # Make sure it is our server that answers: its key document names our server.
  key="$(curl -ksf --max-time 5 "https://127.0.0.1:${https_port}/_matrix/key/v2/server" || true)"
  case "${key}" in
  *"\"server_name\":\"${name}\""*) ;;
  *) die "https://127.0.0.1:${https_port} does not serve ${name}'s key: ${key}" ;;
  esac
  log "ready in $(($(now_ms) - t0)) ms"
  echo "${name}"
}

cmd_stop() {
  local dir="$1" clean="${2:-}"
  [ -z "${clean}" ] || [ "${clean}" = "--clean" ] || usage
  [ -d "${dir}" ] || { log "no ${dir}"; return 0; }
  dir="$(cd "${dir}" && pwd)"
  local pid
  pid="$(read_pid "${dir}")"
  if ours_alive "${pid}" "${dir}"; then
    kill -TERM "${pid}" 2>/dev/null || true
    local timeout="${DENDRITE_STOP_TIMEOUT:-10}" i
    for ((i = 0; i < timeout * 10; i++)); do
      pid_alive "${pid}" || break
      sleep 0.1
    done
    if pid_alive "${pid}"; then
      log "PID ${pid} still running after ${timeout}s: KILL"
      kill -KILL "${pid}" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_alive "${pid}" || break
        sleep 0.1
      done
    fi
    pid_alive "${pid}" && die "PID ${pid} survived KILL"
    log "stopped PID ${pid}"
  elif [ -n "${pid}" ]; then
    log "PID ${pid} is not ${dir}'s dendrite (any more): nothing to stop"
  else
    log "no dendrite.pid in ${dir}"
  fi
  rm -f "${dir}/dendrite.pid"
  if [ "${clean}" = "--clean" ]; then
    rm -rf "${dir}"
  fi
}

# The helper program: built once into bin/ (rebuilt when its source is newer), with the
# project's toolchain; standard library only.
seed_tool() {
  local src="${root}/hack/dendrite-seed/main.go" out="${root}/bin/dendrite-seed"
  if [ ! -x "${out}" ] || [ "${src}" -nt "${out}" ]; then
    mkdir -p "${root}/bin"
    (cd "${root}" && GOTOOLCHAIN="${toolchain}" CGO_ENABLED=0 "${go_cmd}" build -o "${out}.tmp.$$" ./hack/dendrite-seed >&2) ||
      die "building hack/dendrite-seed failed"
    mv "${out}.tmp.$$" "${out}"
  fi
  echo "${out}"
}

# client_args sets args to the helper's flags that reach the client API of the Dendrite in DIR.
client_args() {
  local dir="$1" http_port="$2"
  is_port "${http_port}" || usage
  [ -s "${dir}/registration_shared_secret" ] || die "${dir} has no registration_shared_secret: run $0 start first"
  args=(-hs "http://127.0.0.1:${http_port}" -secret-file "${dir}/registration_shared_secret")
}

cmd_seed() {
  local dir="$1" http_port="$2" count="$3"
  shift 3
  [[ "${count}" =~ ^[0-9]+$ ]] || usage
  local args=() tool
  client_args "${dir}" "${http_port}"
  while [ $# -gt 0 ]; do
    case "$1" in
    --room | --join-from | --parallel | --user)
      [ $# -ge 2 ] || usage
      args+=("-${1#--}" "$2")
      shift 2
      ;;
    *) usage ;;
    esac
  done
  tool="$(seed_tool)"
  "${tool}" seed "${args[@]}" -count "${count}"
}

cmd_event_ids() {
  local dir="$1" http_port="$2" room="$3"
  shift 3
  local args=() tool
  client_args "${dir}" "${http_port}"
  while [ $# -gt 0 ]; do
    case "$1" in
    --user)
      [ $# -ge 2 ] || usage
      args+=(-user "$2")
      shift 2
      ;;
    *) usage ;;
    esac
  done
  tool="$(seed_tool)"
  "${tool}" event-ids "${args[@]}" -room "${room}"
}

cmd="${1:-}"
case "${cmd}" in
build)
  [ $# -eq 1 ] || usage
  cmd_build
  ;;
start)
  [ $# -eq 4 ] || usage
  cmd_start "$2" "$3" "$4"
  ;;
stop)
  [ $# -ge 2 ] && [ $# -le 3 ] || usage
  cmd_stop "$2" "${3:-}"
  ;;
seed)
  [ $# -ge 4 ] || usage
  shift
  cmd_seed "$@"
  ;;
event-ids)
  [ $# -ge 4 ] || usage
  shift
  cmd_event_ids "$@"
  ;;
*)
  usage
  ;;
esac

#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests and benchmarks.
#
#   hack/postgres.sh start DIR PORT   # initdb + start on 127.0.0.1:PORT; prints the DSN on stdout
#   hack/postgres.sh restart DIR      # fast shutdown and start again, same port and data
#   hack/postgres.sh stop DIR         # fast shutdown, then removes DIR
#
# Everything but the DSN goes to stderr, so `url=$(hack/postgres.sh start …)` works.
# initdb refuses to run as root: as root, DIR is handed to the postgres user and the server
# runs as that user (the cluster is private to DIR, with trust auth on loopback only).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { die "usage: $0 start DIR PORT | restart DIR | stop DIR"; }

# Debian keeps the server binaries off PATH; prefer PG_BIN, then PATH, then the known places.
find_bin_dir() {
  if [ -n "${PG_BIN:-}" ]; then echo "${PG_BIN}"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
    if [ -x "${d}/initdb" ]; then echo "${d}"; return; fi
  done
  die "PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN"
}

# as_owner runs a command as the cluster owner: postgres when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd="${1:-}"
dir="${2:-}"
[ -n "${cmd}" ] && [ -n "${dir}" ] || usage
bin="$(find_bin_dir)"

case "${cmd}" in
start)
  port="${3:-}"
  [[ "${port}" =~ ^[0-9]+$ ]] || usage
  mkdir -p "${dir}"
  dir="$(cd "${dir}" && pwd)"
  if [ -f "${dir}/data/postmaster.pid" ] && as_owner "${bin}/pg_ctl" -D "${dir}/data" status >/dev/null 2>&1; then
    die "a cluster is already running in ${dir}; run: $0 stop ${dir}"
  fi
  rm -rf "${dir}/data"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "${dir}"
  fi
  log "initdb in ${dir}/data"
  # --no-sync: the cluster is disposable, so skip initdb's fsyncs; the server itself keeps
  # its normal durability settings so that benchmark figures mean something.
  as_owner "${bin}/initdb" -D "${dir}/data" -A trust -U postgres --no-sync -E UTF8 >"${dir}/initdb.log" 2>&1 ||
    { cat "${dir}/initdb.log" >&2; die "initdb failed"; }
  log "starting on 127.0.0.1:${port}"
  if ! as_owner "${bin}/pg_ctl" -D "${dir}/data" -l "${dir}/postgres.log" -w -t 60 \
    -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2; then
    tail -n 20 "${dir}/postgres.log" >&2 || true
    die "pg_ctl start failed (port ${port} in use?)"
  fi
  echo "postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable"
  ;;
restart)
  # pg_ctl restart starts with the options of the last start (postmaster.opts).
  as_owner "${bin}/pg_ctl" -D "${dir}/data" -l "${dir}/postgres.log" -m fast -w -t 60 restart >&2 ||
    { tail -n 20 "${dir}/postgres.log" >&2 || true; die "pg_ctl restart failed"; }
  ;;
stop)
  if [ -d "${dir}/data" ]; then
    as_owner "${bin}/pg_ctl" -D "${dir}/data" -m fast -w stop >&2 || log "pg_ctl stop failed (not running?)"
  fi
  rm -rf "${dir}"
  ;;
*)
  usage
  ;;
esac

#!/usr/bin/env bash
# roomsync against Dendrite's own backfill, on one room (`make bench-dendrite`):
#
#   hack/bench-dendrite.sh [--events N] [--runs R]
#
#   R times (default 1): Dendrite A creates a room of N events (default 2000: m.room.create
#   and the initial state, then messages); then, on that room,
#   (a) `roomsync sync` pulls the room from A into a fresh SQLite store (head discovery,
#       /backfill to m.room.create, every event's ID, hash and signature checked); timed from
#       the start of the command to its exit, so process start-up counts against roomsync;
#   (b) a fresh Dendrite B joins the room over federation through A (timed apart, not counted),
#       then a client of B pages /messages?dir=b backwards from the newest event until
#       m.room.create, 100 events a page (Dendrite's cap): every page that reaches B's backward
#       extremity makes B /backfill from A, check and store the events, and answer with them
#       (hack/dendrite.sh paginate); timed from the first page to the last.
#   and prints events/s of both and their ratio. Both pull through the same federation API from
#   the same server, 100 events a /backfill request.
#
# BENCH_ORDER=dendrite-first runs (b) before (a), to see whether the order matters (A's caches):
# the room then ends with B's join, which only B's key verifies, so B stays up during (a) and
# roomsync is given B as a second peer (after A, so it still pulls from A).
#
# Environment: BENCH_EVENTS (N), BENCH_RUNS (R, at most 10), BENCH_ORDER (roomsync-first, the
# default, or dendrite-first), BENCH_PAGE_LIMIT (100), BENCH_KEEP_WORKDIR=1 (keep the temp dir).
# Loopback only; every process started here is stopped by its PID on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
[ "${GOTOOLCHAIN}" = local ] && export GOTOOLCHAIN=go1.27.3

events="${BENCH_EVENTS:-2000}"
runs="${BENCH_RUNS:-1}"
order="${BENCH_ORDER:-roomsync-first}"
page_limit="${BENCH_PAGE_LIMIT:-100}"
while [ $# -gt 0 ]; do
  case "$1" in
  --events) events="${2:?}"; shift 2 ;;
  --runs) runs="${2:?}"; shift 2 ;;
  *) echo "usage: $0 [--events N] [--runs R]" >&2; exit 2 ;;
  esac
done
[[ "${events}" =~ ^[0-9]+$ ]] && [ "${events}" -ge 10 ] || { echo "bench: --events must be a number >= 10" >&2; exit 2; }
[[ "${runs}" =~ ^[0-9]+$ ]] && [ "${runs}" -ge 1 ] && [ "${runs}" -le 10 ] || { echo "bench: --runs must be 1-10" >&2; exit 2; }
case "${order}" in roomsync-first | dendrite-first) ;; *) echo "bench: BENCH_ORDER is roomsync-first or dendrite-first" >&2; exit 2 ;; esac

log() { echo "bench: $*" >&2; }
die() { echo "bench: FAILED: $*" >&2; exit 1; }
# shellcheck source=hack/lib.sh
. "${root}/hack/lib.sh"
now_ms() { date +%s%3N; }

exec 5>&1 6>&2 # the script's own stdout and stderr, for cleanup; closed for children
work="$(mktemp -d /tmp/roomsync-bench.XXXXXX)"
dendrite_dirs=()

cleanup() {
  local code=$? d
  trap - EXIT INT TERM
  set +e
  exec 1>&5 2>&6
  stop_dendrites "${dendrite_dirs[@]}"
  if [ "${BENCH_KEEP_WORKDIR:-0}" = 1 ]; then
    log "kept ${work}"
  else
    rm -rf "${work}"
  fi
  exit "${code}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# start_dendrite DIR: starts a Dendrite in DIR on two free ports; sets NAME and HTTP_PORT.
start_dendrite() {
  local dir="$1" https
  free_port; https=${REPLY}
  free_port; HTTP_PORT=${REPLY}
  dendrite_dirs+=("${dir}")
  NAME="$(hack/dendrite.sh start "${dir}" "${https}" "${HTTP_PORT}" 5>&- 6>&- 2>>"${work}/dendrite-start.log")" ||
    { cat "${work}/dendrite-start.log" >&2; die "starting the Dendrite of ${dir}"; }
}

log "building bin/roomsync and Dendrite (cached under bin/)"
"${MAKE:-make}" --no-print-directory build >&2
hack/dendrite.sh build >/dev/null
roomsync="${root}/bin/roomsync"

# ---- Dendrite A -------------------------------------------------------------------------
dir_a="${work}/dendrite-a"
start_dendrite "${dir_a}"
name_a="${NAME}" http_a="${HTTP_PORT}"
messages=$((events - 6)) # createRoom makes 6 events: create, member, power levels, join rules, history visibility, name

# make_room RUN: A creates a room of N events; sets room and room_events.
make_room() {
  local run="$1" t0
  log "run ${run}/${runs}: Dendrite A ${name_a} seeds a room with ${messages} messages"
  t0=$(now_ms)
  room="$(hack/dendrite.sh seed "${dir_a}" "${http_a}" "${messages}" 5>&- 6>&- 2>"${work}/run${run}-seed.log")" ||
    { cat "${work}/run${run}-seed.log" >&2; die "seeding A"; }
  grep -h 'sent' "${work}/run${run}-seed.log" >&2 || true
  room_events="$(hack/dendrite.sh event-ids "${dir_a}" "${http_a}" "${room}" 2>/dev/null | wc -l)"
  log "run ${run}/${runs}: room ${room}: A's /messages shows ${room_events} events (seeded in $(( ($(now_ms) - t0) / 1000 ))s)"
  [ "${room_events}" -ge "${messages}" ] || die "A shows ${room_events} events, fewer than the ${messages} messages sent"
}

# ---- our identity ------------------------------------------------------------------------
"${roomsync}" keygen >"${work}/signing.key"
chmod 600 "${work}/signing.key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "${work}/tls.key" -out "${work}/tls.crt" >/dev/null 2>&1 || die "openssl could not make a TLS certificate"

# bench_roomsync RUN [PEER...]: sets RS_EVENTS, RS_MS, RS_LINE.
bench_roomsync() {
  local run="$1" port store out rc t0 t1 extra=() p
  shift
  for p in "$@"; do extra+=(--peer "${p}=https://${p}"); done
  free_port; port=${REPLY}
  store="sqlite://${work}/run${run}-events.db"
  t0=$(now_ms)
  rc=0
  "${roomsync}" sync --store "${store}" \
    --server-name "127.0.0.1:${port}" --signing-key "${work}/signing.key" \
    --listen "127.0.0.1:${port}" --tls-cert "${work}/tls.crt" --tls-key "${work}/tls.key" \
    --peer "${name_a}=https://${name_a}" "${extra[@]}" --insecure-skip-tls-verify \
    --room "${room}" --timeout 10m 5>&- 6>&- >"${work}/run${run}-sync.out" 2>"${work}/run${run}-sync.log" || rc=$?
  t1=$(now_ms)
  [ "${rc}" = 0 ] || { tail -n 20 "${work}/run${run}-sync.log" >&2; die "roomsync sync exited ${rc}"; }
  RS_MS=$((t1 - t0))
  RS_LINE="$(grep '^roomsync: .* events stored' "${work}/run${run}-sync.log" | tail -n1 || true)"
  out="$("${roomsync}" inspect --store "${store}" --room "${room}" --json)"
  RS_EVENTS="$(sed -n 's/.*"events": *\([0-9]*\).*/\1/p' <<<"${out}" | head -n1)"
  grep -q '"converged": *true' <<<"${out}" || die "roomsync's store is not converged: ${out}"
}

# bench_dendrite RUN: a fresh Dendrite B joins and pages back; sets DB_EVENTS, DB_MS, DB_PAGES,
# DB_CREATE, DB_JOIN, and B_DIR and B_NAME (B keeps running when BENCH_ORDER=dendrite-first).
bench_dendrite() {
  local run="$1" dir line
  dir="${work}/run${run}-dendrite-b"
  start_dendrite "${dir}"
  B_DIR="${dir}" B_NAME="${NAME}"
  line="$(hack/dendrite.sh paginate "${dir}" "${HTTP_PORT}" "${room}" --join-from "${name_a}" --limit "${page_limit}" \
    5>&- 6>&- 2>"${work}/run${run}-paginate.log")" ||
    { cat "${work}/run${run}-paginate.log" >&2; die "Dendrite B's join or pagination failed"; }
  [ "${order}" = dendrite-first ] || hack/dendrite.sh stop "${dir}" >/dev/null 2>&1 || true
  DB_EVENTS="$(sed -n 's/^events=\([0-9]*\) .*/\1/p' <<<"${line}")"
  DB_PAGES="$(sed -n 's/.*pages=\([0-9]*\).*/\1/p' <<<"${line}")"
  DB_MS="$(awk -v s="$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"${line}")" 'BEGIN { printf "%d", s * 1000 }')"
  DB_CREATE="$(sed -n 's/.*reached_create=\([a-z]*\).*/\1/p' <<<"${line}")"
  DB_JOIN="$(sed -n 's/.*join_seconds=\([0-9.]*\).*/\1/p' <<<"${line}")"
  [ -n "${DB_EVENTS}" ] && [ -n "${DB_MS}" ] || die "could not read paginate's answer: ${line}"
}

rate() { awk -v n="$1" -v ms="$2" 'BEGIN { if (ms <= 0) ms = 1; printf "%.0f", n * 1000 / ms }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }

summaries=()
rs_total_n=0 rs_total_ms=0 db_total_n=0 db_total_ms=0
for ((run = 1; run <= runs; run++)); do
  make_room "${run}"
  if [ "${order}" = roomsync-first ]; then
    log "run ${run}/${runs}: (a) roomsync sync from A into a fresh SQLite store"
    bench_roomsync "${run}"
    log "run ${run}/${runs}: (b) a fresh Dendrite B joins and backfills through /messages"
    bench_dendrite "${run}"
  else
    log "run ${run}/${runs}: (b) a fresh Dendrite B joins and backfills through /messages"
    bench_dendrite "${run}"
    log "run ${run}/${runs}: (a) roomsync sync from A (and B, for B's key) into a fresh SQLite store"
    bench_roomsync "${run}" "${B_NAME}"
    hack/dendrite.sh stop "${B_DIR}" >/dev/null 2>&1 || true
  fi
  x="$(rate "${RS_EVENTS}" "${RS_MS}")"
  y="$(rate "${DB_EVENTS}" "${DB_MS}")"
  ratio="$(awk -v x="${x}" -v y="${y}" 'BEGIN { if (y <= 0) print "inf"; else printf "%.1f", x / y }')"
  [ -n "${RS_LINE}" ] && log "  ${RS_LINE}"
  log "  dendrite B: join ${DB_JOIN}s (not counted), ${DB_PAGES} pages, m.room.create reached: ${DB_CREATE}"
  note=""
  [ "${DB_CREATE}" = true ] || note+=" (dendrite did not reach m.room.create)"
  [ "${DB_EVENTS}" -ge "${room_events}" ] || note+=" (dendrite gave ${DB_EVENTS} of the ${room_events} events A shows)"
  [ "${RS_EVENTS}" -ge "${room_events}" ] || note+=" (roomsync stored ${RS_EVENTS} of the ${room_events} events A shows)"
  summaries+=("run ${run}: roomsync: ${RS_EVENTS} events in $(secs "${RS_MS}") s = ${x} events/s; dendrite backfill: ${DB_EVENTS} events in $(secs "${DB_MS}") s = ${y} events/s; ratio ${ratio}x${note}")
  summaries+=("       room ${room}: ${room_events} events on A; dendrite B: ${DB_PAGES} pages, join ${DB_JOIN} s (not counted)")
  [ -n "${RS_LINE}" ] && summaries+=("       roomsync's own final line, which leaves out process start-up: ${RS_LINE#roomsync: }")
  rs_total_n=$((rs_total_n + RS_EVENTS)) rs_total_ms=$((rs_total_ms + RS_MS))
  db_total_n=$((db_total_n + DB_EVENTS)) db_total_ms=$((db_total_ms + DB_MS))
done

x="$(rate "${rs_total_n}" "${rs_total_ms}")"
y="$(rate "${db_total_n}" "${db_total_ms}")"
ratio="$(awk -v x="${x}" -v y="${y}" 'BEGIN { if (y <= 0) print "inf"; else printf "%.1f", x / y }')"
echo
echo "${runs} run(s) of ${events} events, ${order}; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for s in "${summaries[@]}"; do echo "${s}"; done
if [ "${runs}" -gt 1 ]; then
  echo "all runs: roomsync: ${rs_total_n} events in $(secs "${rs_total_ms}") s = ${x} events/s; dendrite backfill: ${db_total_n} events in $(secs "${db_total_ms}") s = ${y} events/s; ratio ${ratio}x"
fi
goal=$(awk -v r="${ratio}" 'BEGIN { print (r == "inf" || r + 0 >= 5) ? "met" : "NOT met" }')
echo "goal (roomsync at least 5x Dendrite's backfill): ${goal}"

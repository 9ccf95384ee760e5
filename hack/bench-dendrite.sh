#!/usr/bin/env bash
# roomsync against Dendrite's own backfill, on one room (`make bench-dendrite`):
#
#   hack/bench-dendrite.sh [--events N | --sizes N1,N2,...] [--runs R] [--fork-events F] [--fork-only]
#
#   For each size N (default 2000; --sizes 2000,10000 runs both, in the order given), R times
#   (default 1): Dendrite A creates a room of N events (m.room.create and the initial state,
#   then messages); then, on that room,
#   (a) `roomsync sync` pulls the room from A into a fresh SQLite store (head discovery,
#       /backfill to m.room.create, every event's ID, hash and signature checked); timed from
#       the start of the command to its exit, so process start-up counts against roomsync;
#   (r) right after (a), a raw client pages /backfill from A down the same room as fast as A
#       serves it, with no verification or storage: make_join (not timed) gives the room
#       version and forward extremities, then each request asks for the prev_events of the
#       pages so far not yet seen, parsing each page and computing each event's ID and nothing
#       else (hack/dendrite.sh backfill-rate, internal/rawbackfill); timed from the first
#       request to the last. It signs as another 127.0.0.1:PORT, serving our key as (a) does;
#   (b) a fresh Dendrite B joins the room over federation through A (timed apart, not counted),
#       then a client of B pages /messages?dir=b backwards from the newest event until
#       m.room.create, 100 events a page (Dendrite's cap): every page that reaches B's backward
#       extremity makes B /backfill from A, check and store the events, and answer with them
#       (hack/dendrite.sh paginate); timed from the first page to the last.
#   All three pull through the same federation API from the same server, 100 events a
#   /backfill request (BENCH_PAGE_LIMIT), in one run on the same machine. Per run, per size (when R > 1) and over
#   all runs, it prints the events/s of each and the issue's two goals with "met" or "NOT met":
#     roomsync / Dendrite B's backfill  >= 12x
#     roomsync / A's raw /backfill       >= 0.8x
#   A rate over several runs is their events over their seconds. The last lines say whether
#   each goal was met in every run and overall. Goals not met do not make the exit code fail.
#
# Then, unless F is 0, two peers against one on a forked room: two fresh Dendrites A' and B'
# make a room of two concurrent branches of F messages each (default 2000) that both hold whole,
# as a netsplit does (hack/dendrite.sh seed-netsplit): A' creates it, B' joins, each sends its
# branch while the other is down, then they exchange them. The syncs of this room never join it
# (--join never), so that the room stays as seeded and every sync does the same work: they
# hold the few first events, which a Dendrite strips for a server not in the room, redacted,
# and converge. An untimed sync from both and an untimed raw /backfill walk of each warm both.
# Then, R times, `roomsync sync` into a fresh store from A' alone, from B' alone and from both
# (order A', B', both in odd runs, reversed in even runs), each timed as (a) and checked: its
# store holds exactly as many events as both Dendrites' client APIs show (the same set on
# both), and is converged. It prints the events/s
# of each, the /backfill requests each peer answered, and the goal of issue 16:
#     both / the faster of A' and B' alone  > 1x
# Over several runs a rate is their events over their seconds. --fork-only skips the
# single-room runs above.
#
# BENCH_ORDER=dendrite-first runs (b) before (a) and (r), to see whether the order matters
# (A's caches): the room then ends with B's join, which only B's key verifies, so B stays up
# during (a) and roomsync is given B as a second peer (after A, so it still pulls from A).
# BENCH_RAW=before runs (r) right before (a) instead of right after: after, A's caches hold
# what roomsync asked for, which can only help the raw walk (the stricter goal).
# BENCH_WARM=1 (the default) first walks the room once untimed, so that (a) and (r) both meet
# A's caches warm: the first walk after seeding reads the room from A's database and is the
# slower by a third (10,000 events: 6.3 s against 4.7 s), whoever makes it. BENCH_WARM=0 leaves
# them cold for (a), which then pays that alone.
#
# Environment: BENCH_EVENTS (N), BENCH_SIZES (N1,N2,...; --sizes), BENCH_RUNS (R, at most 10),
# BENCH_ORDER (roomsync-first, the default, or dendrite-first), BENCH_RAW (after, the default,
# or before), BENCH_WARM (1, the default, or 0), BENCH_PAGE_LIMIT (100: /backfill limit of (a) and (r), /messages limit of (b)),
# BENCH_FORK_EVENTS (F; 0 skips the forked room), BENCH_FORK_ONLY=1 (--fork-only),
# BENCH_KEEP_WORKDIR=1 (keep the temp dir). `make bench-dendrite BENCH_SIZES=2000,10000` runs
# both sizes of the issue (about six minutes on two cores, four of them the 10,000-event room).
# Loopback only; every process started here is stopped by its PID on exit (the raw walk's key
# server lives and ends inside its own command).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
[ "${GOTOOLCHAIN}" = local ] && export GOTOOLCHAIN=go1.27.3

sizes="${BENCH_SIZES:-${BENCH_EVENTS:-2000}}"
runs="${BENCH_RUNS:-1}"
order="${BENCH_ORDER:-roomsync-first}"
raw_when="${BENCH_RAW:-after}"
warm="${BENCH_WARM:-1}"
page_limit="${BENCH_PAGE_LIMIT:-100}"
fork_events="${BENCH_FORK_EVENTS:-2000}"
fork_only="${BENCH_FORK_ONLY:-0}"
usage="usage: $0 [--events N | --sizes N1,N2,...] [--runs R] [--fork-events F] [--fork-only]"
while [ $# -gt 0 ]; do
  case "$1" in
  --events) sizes="${2:?${usage}}"; shift 2 ;;
  --sizes) sizes="${2:?${usage}}"; shift 2 ;;
  --runs) runs="${2:?${usage}}"; shift 2 ;;
  --fork-events) fork_events="${2:?${usage}}"; shift 2 ;;
  --fork-only) fork_only=1; shift ;;
  *) echo "${usage}" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a size_list <<<"${sizes}"
[ "${#size_list[@]}" -ge 1 ] || { echo "bench: no size given" >&2; exit 2; }
for n in "${size_list[@]}"; do
  { [[ "${n}" =~ ^[0-9]+$ ]] && [ "${n}" -ge 10 ]; } || { echo "bench: every size (--events, --sizes) must be a number >= 10, not '${n}'" >&2; exit 2; }
done
{ [[ "${runs}" =~ ^[0-9]+$ ]] && [ "${runs}" -ge 1 ] && [ "${runs}" -le 10 ]; } || { echo "bench: --runs must be 1-10" >&2; exit 2; }
{ [[ "${page_limit}" =~ ^[0-9]+$ ]] && [ "${page_limit}" -ge 1 ]; } || { echo "bench: BENCH_PAGE_LIMIT must be a positive number" >&2; exit 2; }
[[ "${fork_events}" =~ ^[0-9]+$ ]] || { echo "bench: --fork-events (BENCH_FORK_EVENTS) must be a number" >&2; exit 2; }
case "${fork_only}" in 0 | 1) ;; *) echo "bench: BENCH_FORK_ONLY is 0 or 1" >&2; exit 2 ;; esac
[ "${fork_only}" = 0 ] || [ "${fork_events}" -gt 0 ] || { echo "bench: --fork-only needs --fork-events above 0" >&2; exit 2; }
case "${order}" in roomsync-first | dendrite-first) ;; *) echo "bench: BENCH_ORDER is roomsync-first or dendrite-first" >&2; exit 2 ;; esac
case "${raw_when}" in after | before) ;; *) echo "bench: BENCH_RAW is after or before" >&2; exit 2 ;; esac
case "${warm}" in 0 | 1) ;; *) echo "bench: BENCH_WARM is 0 or 1" >&2; exit 2 ;; esac

# The issue's goals: roomsync's rate at least these times Dendrite B's and A's raw rate.
goal_b=12
goal_raw=0.8

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
if [ "${fork_only}" = 0 ]; then
  start_dendrite "${dir_a}"
  name_a="${NAME}" http_a="${HTTP_PORT}"
else
  size_list=()
fi

# make_room TAG LABEL N: A creates a room of N events; sets room and room_events.
make_room() {
  local tag="$1" label="$2" messages=$(($3 - 6)) t0 # createRoom makes 6 events: create, member, power levels, join rules, history visibility, name
  log "${label}: Dendrite A ${name_a} seeds a room with ${messages} messages"
  t0=$(now_ms)
  room="$(hack/dendrite.sh seed "${dir_a}" "${http_a}" "${messages}" 5>&- 6>&- 2>"${work}/${tag}-seed.log")" ||
    { cat "${work}/${tag}-seed.log" >&2; die "seeding A"; }
  grep -h 'sent' "${work}/${tag}-seed.log" >&2 || true
  room_events="$(hack/dendrite.sh event-ids "${dir_a}" "${http_a}" "${room}" 2>/dev/null | wc -l)"
  log "${label}: room ${room}: A's /messages shows ${room_events} events (seeded in $(( ($(now_ms) - t0) / 1000 ))s)"
  [ "${room_events}" -ge "${messages}" ] || die "A shows ${room_events} events, fewer than the ${messages} messages sent"
}

# ---- our identity ------------------------------------------------------------------------
"${roomsync}" keygen >"${work}/signing.key"
chmod 600 "${work}/signing.key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "${work}/tls.key" -out "${work}/tls.crt" >/dev/null 2>&1 || die "openssl could not make a TLS certificate"

# CPU time in clock ticks: pid_ticks PID, of a running process (user and system); child_ticks,
# of this shell's children that have ended.
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
child_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }
clk_tck="$(getconf CLK_TCK)"
ticks_s() { awk -v t="$1" -v hz="${clk_tck}" 'BEGIN { printf "%.2f", t / hz }'; }

# sync_room TAG PORT ROOM PEER...: `roomsync sync` of ROOM from the PEERs (server names, in
# that order) into a fresh SQLite store TAG-events.db, as 127.0.0.1:PORT with our key, with
# sync_flags besides; sets RS_EVENTS, RS_MS, RS_LINE and RS_CPU_TICKS (the sync's CPU); dies
# unless it exits 0 with the room converged.
sync_flags=()
sync_room() {
  local tag="$1" port="$2" room_id="$3" store out rc t0 t1 peers=() p
  shift 3
  for p in "$@"; do peers+=(--peer "${p}=https://${p}"); done
  store="sqlite://${work}/${tag}-events.db"
  t0=$(now_ms)
  RS_CPU_TICKS=$(child_ticks)
  rc=0
  "${roomsync}" sync --store "${store}" \
    --server-name "127.0.0.1:${port}" --signing-key "${work}/signing.key" \
    --listen "127.0.0.1:${port}" --tls-cert "${work}/tls.crt" --tls-key "${work}/tls.key" \
    "${peers[@]}" "${sync_flags[@]}" --insecure-skip-tls-verify \
    --backfill-limit "${page_limit}" --room "${room_id}" --timeout 10m \
    5>&- 6>&- >"${work}/${tag}-sync.out" 2>"${work}/${tag}-sync.log" || rc=$?
  t1=$(now_ms)
  RS_CPU_TICKS=$(($(child_ticks) - RS_CPU_TICKS))
  [ "${rc}" = 0 ] || { tail -n 20 "${work}/${tag}-sync.log" >&2; die "roomsync sync exited ${rc}"; }
  RS_MS=$((t1 - t0))
  RS_LINE="$(grep '^roomsync: .* events stored' "${work}/${tag}-sync.log" | tail -n1 || true)"
  out="$("${roomsync}" inspect --store "${store}" --room "${room_id}" --json)"
  RS_EVENTS="$(sed -n 's/.*"events": *\([0-9]*\).*/\1/p' <<<"${out}" | head -n1)"
  grep -q '"converged": *true' <<<"${out}" || die "roomsync's store is not converged: ${out}"
}

# bench_roomsync TAG [PEER...]: (a), from A and then the PEERs, as a new server name; sets
# RS_EVENTS, RS_MS, RS_LINE.
bench_roomsync() {
  local tag="$1"
  shift
  free_port
  sync_room "${tag}" "${REPLY}" "${room}" "${name_a}" "$@"
}

# bench_raw TAG [SERVER ROOM]: A's (or SERVER's, on ROOM) raw /backfill serving rate
# (hack/dendrite.sh backfill-rate); sets RAW_EVENTS, RAW_MS, RAW_REQUESTS, RAW_CREATE.
bench_raw() {
  local tag="$1" server="${2:-${name_a}}" room_id="${3:-${room}}" line
  line="$(hack/dendrite.sh backfill-rate "${server}" "${room_id}" --signing-key "${work}/signing.key" \
    --tls-cert "${work}/tls.crt" --tls-key "${work}/tls.key" --limit "${page_limit}" \
    5>&- 6>&- 2>"${work}/${tag}-raw.log")" ||
    { cat "${work}/${tag}-raw.log" >&2; die "the raw /backfill walk of ${server} failed"; }
  RAW_EVENTS="$(sed -n 's/^events=\([0-9]*\) .*/\1/p' <<<"${line}")"
  RAW_REQUESTS="$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"${line}")"
  RAW_MS="$(awk -v s="$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"${line}")" 'BEGIN { printf "%d", s * 1000 + 0.5 }')"
  RAW_CREATE="$(sed -n 's/.*reached_create=\([a-z]*\).*/\1/p' <<<"${line}")"
  { [ -n "${RAW_EVENTS}" ] && [ -n "${RAW_MS}" ]; } || die "could not read backfill-rate's answer: ${line}"
}

# bench_dendrite TAG: a fresh Dendrite B joins and pages back; sets DB_EVENTS, DB_MS, DB_PAGES,
# DB_CREATE, DB_JOIN, and B_DIR and B_NAME (B keeps running when BENCH_ORDER=dendrite-first).
bench_dendrite() {
  local tag="$1" dir line
  dir="${work}/${tag}-dendrite-b"
  start_dendrite "${dir}"
  B_DIR="${dir}" B_NAME="${NAME}"
  line="$(hack/dendrite.sh paginate "${dir}" "${HTTP_PORT}" "${room}" --join-from "${name_a}" --limit "${page_limit}" \
    5>&- 6>&- 2>"${work}/${tag}-paginate.log")" ||
    { cat "${work}/${tag}-paginate.log" >&2; die "Dendrite B's join or pagination failed"; }
  [ "${order}" = dendrite-first ] || hack/dendrite.sh stop "${dir}" >/dev/null 2>&1 || true
  DB_EVENTS="$(sed -n 's/^events=\([0-9]*\) .*/\1/p' <<<"${line}")"
  DB_PAGES="$(sed -n 's/.*pages=\([0-9]*\).*/\1/p' <<<"${line}")"
  DB_MS="$(awk -v s="$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"${line}")" 'BEGIN { printf "%d", s * 1000 + 0.5 }')"
  DB_CREATE="$(sed -n 's/.*reached_create=\([a-z]*\).*/\1/p' <<<"${line}")"
  DB_JOIN="$(sed -n 's/.*join_seconds=\([0-9.]*\).*/\1/p' <<<"${line}")"
  { [ -n "${DB_EVENTS}" ] && [ -n "${DB_MS}" ]; } || die "could not read paginate's answer: ${line}"
}

# bench_roomsync_and_raw TAG LABEL [PEER...]: (a), and (r) right after it or right before.
bench_roomsync_and_raw() {
  local tag="$1" label="$2"
  shift 2
  if [ "${warm}" = 1 ]; then
    # A's caches start cold after seeding: the first walk down the room pays for reading it
    # from A's database, whoever makes it. One untimed walk first, so (a) and (r) meet the
    # same warm caches, as a peer that serves its rooms does.
    log "${label}: warming A's caches with an untimed raw /backfill walk"
    bench_raw "${tag}-warm"
  fi
  if [ "${raw_when}" = before ]; then
    log "${label}: (r) A's raw /backfill serving rate"
    bench_raw "${tag}"
  fi
  log "${label}: (a) roomsync sync from A$([ $# -gt 0 ] && echo " (and B, for B's key)") into a fresh SQLite store"
  bench_roomsync "${tag}" "$@"
  if [ "${raw_when}" = after ]; then
    log "${label}: (r) A's raw /backfill serving rate"
    bench_raw "${tag}"
  fi
}

rate() { awk -v n="$1" -v ms="$2" 'BEGIN { if (ms <= 0) ms = 1; printf "%.0f", n * 1000 / ms }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
# ratio N1 MS1 N2 MS2: the rate of N1 events in MS1 ms over that of N2 in MS2, or inf.
ratio() {
  awk -v n1="$1" -v ms1="$2" -v n2="$3" -v ms2="$4" 'BEGIN {
    if (ms1 <= 0) ms1 = 1; if (ms2 <= 0) ms2 = 1
    if (n2 <= 0) print "inf"; else printf "%.2f", (n1 / ms1) / (n2 / ms2) }'
}
# verdict RATIO GOAL: met or NOT met.
verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r == "inf" || r + 0 >= g + 0) ? "met" : "NOT met" }'; }

# rates LABEL RS_N RS_MS RAW_N RAW_MS RAW_REQUESTS DB_N DB_MS DB_PAGES: two lines, the three rates
# and the two ratios with their goals.
rates() {
  local label="$1" rs_n="$2" rs_ms="$3" raw_n="$4" raw_ms="$5" raw_req="$6" db_n="$7" db_ms="$8" db_pages="$9" rb rr rc
  rb="$(ratio "${rs_n}" "${rs_ms}" "${db_n}" "${db_ms}")"
  rr="$(ratio "${rs_n}" "${rs_ms}" "${raw_n}" "${raw_ms}")"
  # The ceiling of the first ratio: no client of A, however fast, backfills faster than A
  # serves /backfill.
  rc="$(ratio "${raw_n}" "${raw_ms}" "${db_n}" "${db_ms}")"
  echo "${label}: roomsync sync ${rs_n} events in $(secs "${rs_ms}") s = $(rate "${rs_n}" "${rs_ms}") events/s;" \
    "A's raw /backfill ${raw_n} events in $(secs "${raw_ms}") s = $(rate "${raw_n}" "${raw_ms}") events/s (${raw_req} requests);" \
    "Dendrite B's /messages backfill ${db_n} events in $(secs "${db_ms}") s = $(rate "${db_n}" "${db_ms}") events/s (${db_pages} pages)"
  echo "    roomsync / Dendrite B = ${rb}x (goal >= ${goal_b}x: $(verdict "${rb}" "${goal_b}")); roomsync / A's raw /backfill = ${rr}x (goal >= ${goal_raw}x: $(verdict "${rr}" "${goal_raw}")); A's raw /backfill / Dendrite B = ${rc}x (the most any client of A reaches)"
}

summaries=()
total_runs=0 runs_met_b=0 runs_met_raw=0
all_rs_n=0 all_rs_ms=0 all_raw_n=0 all_raw_ms=0 all_raw_req=0 all_db_n=0 all_db_ms=0 all_db_pages=0
for events in "${size_list[@]}"; do
  rs_n=0 rs_ms=0 raw_n=0 raw_ms=0 raw_req=0 db_n=0 db_ms=0 db_pages=0
  for ((run = 1; run <= runs; run++)); do
    tag="n${events}-run${run}" label="${events} events, run ${run}/${runs}"
    make_room "${tag}" "${label}" "${events}"
    if [ "${order}" = roomsync-first ]; then
      bench_roomsync_and_raw "${tag}" "${label}"
      log "${label}: (b) a fresh Dendrite B joins and backfills through /messages"
      bench_dendrite "${tag}"
    else
      log "${label}: (b) a fresh Dendrite B joins and backfills through /messages"
      bench_dendrite "${tag}"
      bench_roomsync_and_raw "${tag}" "${label}" "${B_NAME}"
      hack/dendrite.sh stop "${B_DIR}" >/dev/null 2>&1 || true
    fi
    [ -n "${RS_LINE}" ] && log "  ${RS_LINE}"
    log "  dendrite B: join ${DB_JOIN}s (not counted), ${DB_PAGES} pages, m.room.create reached: ${DB_CREATE}"
    note=""
    [ "${DB_CREATE}" = true ] || note+=" (dendrite did not reach m.room.create)"
    [ "${RAW_CREATE}" = true ] || note+=" (the raw walk did not reach m.room.create)"
    [ "${DB_EVENTS}" -ge "${room_events}" ] || note+=" (dendrite gave ${DB_EVENTS} of the ${room_events} events A shows)"
    [ "${RAW_EVENTS}" -ge "${room_events}" ] || note+=" (the raw walk got ${RAW_EVENTS} of the ${room_events} events A shows)"
    [ "${RS_EVENTS}" -ge "${room_events}" ] || note+=" (roomsync stored ${RS_EVENTS} of the ${room_events} events A shows)"
    lines="$(rates "run ${run} of ${events} events" "${RS_EVENTS}" "${RS_MS}" "${RAW_EVENTS}" "${RAW_MS}" "${RAW_REQUESTS}" \
      "${DB_EVENTS}" "${DB_MS}" "${DB_PAGES}")"
    mapfile -t run_lines <<<"${lines}"
    summaries+=("${run_lines[0]}" "${run_lines[1]}${note}")
    [ "$(verdict "$(ratio "${RS_EVENTS}" "${RS_MS}" "${DB_EVENTS}" "${DB_MS}")" "${goal_b}")" = met ] && runs_met_b=$((runs_met_b + 1))
    [ "$(verdict "$(ratio "${RS_EVENTS}" "${RS_MS}" "${RAW_EVENTS}" "${RAW_MS}")" "${goal_raw}")" = met ] && runs_met_raw=$((runs_met_raw + 1))
    for l in "${run_lines[@]}"; do log "  ${l}"; done
    summaries+=("    room ${room}: ${room_events} events on A; Dendrite B joined in ${DB_JOIN} s (not counted)")
    [ -n "${RS_LINE}" ] && summaries+=("    roomsync's own final line, which leaves out process start-up: ${RS_LINE#roomsync: }")
    total_runs=$((total_runs + 1))
    rs_n=$((rs_n + RS_EVENTS)) rs_ms=$((rs_ms + RS_MS))
    raw_n=$((raw_n + RAW_EVENTS)) raw_ms=$((raw_ms + RAW_MS)) raw_req=$((raw_req + RAW_REQUESTS))
    db_n=$((db_n + DB_EVENTS)) db_ms=$((db_ms + DB_MS)) db_pages=$((db_pages + DB_PAGES))
  done
  if [ "${runs}" -gt 1 ]; then
    mapfile -t run_lines < <(rates "all ${runs} runs of ${events} events" "${rs_n}" "${rs_ms}" "${raw_n}" "${raw_ms}" "${raw_req}" \
      "${db_n}" "${db_ms}" "${db_pages}")
    summaries+=("${run_lines[@]}")
  fi
  all_rs_n=$((all_rs_n + rs_n)) all_rs_ms=$((all_rs_ms + rs_ms))
  all_raw_n=$((all_raw_n + raw_n)) all_raw_ms=$((all_raw_ms + raw_ms)) all_raw_req=$((all_raw_req + raw_req))
  all_db_n=$((all_db_n + db_n)) all_db_ms=$((all_db_ms + db_ms)) all_db_pages=$((all_db_pages + db_pages))
done


# ---- two peers against one: a netsplit-forked room on two Dendrites -----------------------
# fork_sync KIND PEER...: one timed sync of the forked room (KIND a, b or both) into a fresh
# store, as our one fork identity; checks it stored every event both Dendrites show and adds
# to fork_n[KIND], fork_ms[KIND] and fork_backfill[KIND] ("A' x, B' y" /backfill answers).
declare -A fork_n fork_ms fork_backfill fork_cpu_rs fork_cpu_a fork_cpu_b
fork_sync() {
  local kind="$1" tag answered p n pid_a pid_b ta tb
  shift
  tag="fork-${kind}-run${run}"
  log "fork, run ${run}/${runs}: roomsync sync from ${kind} into a fresh SQLite store"
  pid_a="$(cat "${fork_dir_a}/dendrite.pid")" pid_b="$(cat "${fork_dir_b}/dendrite.pid")"
  ta=$(pid_ticks "${pid_a}") tb=$(pid_ticks "${pid_b}")
  sync_room "${tag}" "${fork_port}" "${fork_room}" "$@"
  ta=$(($(pid_ticks "${pid_a}") - ta)) tb=$(($(pid_ticks "${pid_b}") - tb))
  fork_cpu_rs[${kind}]=$((${fork_cpu_rs[${kind}]:-0} + RS_CPU_TICKS))
  fork_cpu_a[${kind}]=$((${fork_cpu_a[${kind}]:-0} + ta))
  fork_cpu_b[${kind}]=$((${fork_cpu_b[${kind}]:-0} + tb))
  [ "${RS_EVENTS}" = "${fork_events_shown}" ] ||
    die "roomsync stored ${RS_EVENTS} events from ${kind}, both Dendrites show ${fork_events_shown}"
  [ -n "${RS_LINE}" ] && log "  ${RS_LINE}"
  answered=""
  for p in "${fork_name_a}" "${fork_name_b}"; do
    n="$(sed -n "s/^roomsync: peer ${p} answered [0-9]* requests (\([0-9]*\) \/backfill)$/\1/p" "${work}/${tag}-sync.log")"
    answered+="$([ "${p}" = "${fork_name_a}" ] && echo "A'" || echo ", B'") ${n:-0}"
  done
  log "  ${RS_EVENTS} events in $(secs "${RS_MS}") s = $(rate "${RS_EVENTS}" "${RS_MS}") events/s; /backfill answered by ${answered};" \
    "CPU s: roomsync $(ticks_s "${RS_CPU_TICKS}"), A' $(ticks_s "${ta}"), B' $(ticks_s "${tb}"); load $(cut -d' ' -f1-3 /proc/loadavg)"
  fork_n[${kind}]=$((${fork_n[${kind}]:-0} + RS_EVENTS))
  fork_ms[${kind}]=$((${fork_ms[${kind}]:-0} + RS_MS))
  fork_backfill[${kind}]="${answered}"
}

# fork_shown: both fork Dendrites' client APIs show the same events (waiting a bounded while for
# the last one to reach the other); sets fork_events_shown.
fork_shown() {
  local i
  for ((i = 0; i < 60; i++)); do
    hack/dendrite.sh event-ids "${fork_dir_a}" "${fork_http_a}" "${fork_room}" 5>&- 6>&- 2>/dev/null | sort >"${work}/fork-ids-a" || true
    hack/dendrite.sh event-ids "${fork_dir_b}" "${fork_http_b}" "${fork_room}" 5>&- 6>&- 2>/dev/null | sort >"${work}/fork-ids-b" || true
    if [ -s "${work}/fork-ids-a" ] && cmp -s "${work}/fork-ids-a" "${work}/fork-ids-b"; then
      fork_events_shown="$(wc -l <"${work}/fork-ids-a")"
      return 0
    fi
    sleep 1
  done
  die "the fork Dendrites do not show the same events: A' $(wc -l <"${work}/fork-ids-a"), B' $(wc -l <"${work}/fork-ids-b")"
}

fork_lines=()
if [ "${fork_events}" -gt 0 ]; then
  [ "${fork_only}" = 1 ] || stop_dendrites "${dir_a}" # done with A: it would only take memory
  fork_dir_a="${work}/fork-dendrite-a" fork_dir_b="${work}/fork-dendrite-b"
  start_dendrite "${fork_dir_a}"
  fork_name_a="${NAME}" fork_http_a="${HTTP_PORT}"
  start_dendrite "${fork_dir_b}"
  fork_name_b="${NAME}" fork_http_b="${HTTP_PORT}"
  log "fork: A' ${fork_name_a} and B' ${fork_name_b} make a room of two branches of ${fork_events} messages (netsplit)"
  t0=$(now_ms)
  fork_room="$(hack/dendrite.sh seed-netsplit "${fork_dir_a}" "${fork_name_a##*:}" "${fork_http_a}" \
    "${fork_dir_b}" "${fork_name_b##*:}" "${fork_http_b}" "${fork_events}" 5>&- 6>&- 2>"${work}/fork-seed.log")" ||
    { tail -n 30 "${work}/fork-seed.log" >&2; die "seeding the netsplit room"; }
  grep -h 'netsplit\|sent [0-9]* messages' "${work}/fork-seed.log" >&2 || true
  log "fork: room ${fork_room} seeded in $(( ($(now_ms) - t0) / 1000 ))s"
  fork_shown
  [ "${fork_events_shown}" -ge $((2 * fork_events)) ] || die "the Dendrites show ${fork_events_shown} events, fewer than the two branches"
  free_port; fork_port=${REPLY}
  sync_flags=(--join never)
  run=0
  log "fork: ${fork_events_shown} events on both; an untimed sync from both, then a raw /backfill walk of each"
  sync_room fork-warm "${fork_port}" "${fork_room}" "${fork_name_a}" "${fork_name_b}"
  [ "${RS_EVENTS}" = "${fork_events_shown}" ] ||
    die "the untimed sync stored ${RS_EVENTS} events, both Dendrites show ${fork_events_shown}"
  bench_raw fork-warm-a "${fork_name_a}" "${fork_room}"
  bench_raw fork-warm-b "${fork_name_b}" "${fork_room}"
  for ((run = 1; run <= runs; run++)); do
    if ((run % 2 == 1)); then
      fork_sync a "${fork_name_a}"
      fork_sync b "${fork_name_b}"
      fork_sync both "${fork_name_a}" "${fork_name_b}"
    else
      fork_sync both "${fork_name_a}" "${fork_name_b}"
      fork_sync b "${fork_name_b}"
      fork_sync a "${fork_name_a}"
    fi
  done
  fork_best="$(awk -v na="${fork_n[a]}" -v ma="${fork_ms[a]}" -v nb="${fork_n[b]}" -v mb="${fork_ms[b]}" \
    'BEGIN { ra = na / (ma > 0 ? ma : 1); rb = nb / (mb > 0 ? mb : 1); print (ra >= rb) ? "a" : "b" }')"
  fork_ratio="$(ratio "${fork_n[both]}" "${fork_ms[both]}" "${fork_n[${fork_best}]}" "${fork_ms[${fork_best}]}")"
  fork_verdict="$(awk -v r="${fork_ratio}" 'BEGIN { print (r == "inf" || r + 0 > 1) ? "met" : "NOT met" }')"
  l="netsplit fork of ${fork_events} events a branch (${fork_events_shown} events), ${runs} run(s): roomsync sync"
  l+=" from A' alone $(rate "${fork_n[a]}" "${fork_ms[a]}") events/s ($(secs "${fork_ms[a]}") s);"
  l+=" from B' alone $(rate "${fork_n[b]}" "${fork_ms[b]}") events/s ($(secs "${fork_ms[b]}") s);"
  l+=" from both $(rate "${fork_n[both]}" "${fork_ms[both]}") events/s ($(secs "${fork_ms[both]}") s)"
  c="    CPU s (roomsync, A', B') over the wall s, all runs:"
  for k in a b both; do
    c+=" from $([ "${k}" = both ] && echo both || echo "${k^^}'") $(ticks_s "${fork_cpu_rs[${k}]}"), $(ticks_s "${fork_cpu_a[${k}]}"), $(ticks_s "${fork_cpu_b[${k}]}") over $(secs "${fork_ms[${k}]}");"
  done
  fork_lines=("${l}" "${c%;} ($(nproc) cores)"
    "    both / max(A', B') = ${fork_ratio}x (goal > 1x: ${fork_verdict}); /backfill answered in the last sync from both: ${fork_backfill[both]}; room ${fork_room}; load $(cut -d' ' -f1-3 /proc/loadavg)")
  for l in "${fork_lines[@]}"; do log "${l}"; done
fi

if [ "${fork_only}" = 0 ]; then
  echo
  echo "${total_runs} run(s): ${runs} of each of ${sizes} events; ${order}, raw walk ${raw_when} roomsync's sync, A's caches $([ "${warm}" = 1 ] && echo warmed first || echo cold), ${page_limit} events a request;" \
    "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for s in "${summaries[@]}"; do echo "${s}"; done
  rates "overall (${total_runs} run(s))" "${all_rs_n}" "${all_rs_ms}" "${all_raw_n}" "${all_raw_ms}" "${all_raw_req}" \
    "${all_db_n}" "${all_db_ms}" "${all_db_pages}"
  overall_b="$(ratio "${all_rs_n}" "${all_rs_ms}" "${all_db_n}" "${all_db_ms}")"
  overall_raw="$(ratio "${all_rs_n}" "${all_rs_ms}" "${all_raw_n}" "${all_raw_ms}")"
  final() { # final RUNS_MET OVERALL_RATIO GOAL
    if [ "$1" = "${total_runs}" ] && [ "$(verdict "$2" "$3")" = met ]; then echo met; else echo "NOT met"; fi
  }
  echo "goal (a) roomsync at least ${goal_b}x Dendrite B's /messages backfill: $(final "${runs_met_b}" "${overall_b}" "${goal_b}")" \
    "(met in ${runs_met_b} of ${total_runs} run(s); overall ${overall_b}x)"
  echo "goal (b) roomsync at least ${goal_raw}x A's raw /backfill serving rate: $(final "${runs_met_raw}" "${overall_raw}" "${goal_raw}")" \
    "(met in ${runs_met_raw} of ${total_runs} run(s); overall ${overall_raw}x)"
fi
if [ "${#fork_lines[@]}" -gt 0 ]; then
  if [ "${fork_only}" = 1 ]; then echo; fi
  for l in "${fork_lines[@]}"; do echo "${l}"; done
  echo "goal (c) roomsync from two Dendrites faster than from the faster one alone: ${fork_verdict} (${fork_ratio}x)"
fi

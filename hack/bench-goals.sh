#!/usr/bin/env bash
# Every performance goal of the speed step in one run (`make bench`): runs the benchmarks that
# measure them one after another, reads each figure from what they print (b.ReportMetric units
# and their log lines; nothing is measured here), and ends with one table: goal, figure,
# target, met or NOT met, and the load average (1, 5, 15 min) when it was measured.
#
#   hack/bench-goals.sh
#
# Steps, in order (each one's whole output goes to OUT/STEP.log):
#   dendrite    hack/bench-dendrite.sh (`make bench-dendrite`) on rooms of BENCH_SIZES events:
#               roomsync sync against Dendrite B's /messages backfill (>= 12x) and against A's
#               raw /backfill serving rate (>= 0.8x), a row each per size; then on a room forked
#               by a netsplit between two Dendrites, BENCH_FORK_EVENTS (2000) a branch, both
#               holding it whole: roomsync sync from both against from the faster one alone
#               (> 1x).
#   ingest      resolver BenchmarkVerifiedIngest (verified ingest from the fixture peer over the
#               ed25519-verify bound on all cores, >= 0.4x) and BenchmarkConverge (requests
#               over the minimum, <= 1.05x, linear and forked rooms of 20,000 events; the
#               linear room synced into SQLite and into a throwaway PostgreSQL, PostgreSQL
#               within 1.5x: the store's goal as a sync meets it, end to end), and
#               BenchmarkForkedFromTwoPeers (a room forked into two long branches, from one
#               fixture peer 10 ms away, then from two: two faster than one; its own row,
#               beside the Dendrite one).
#   large       resolver BenchmarkConvergeLarge, a room of BENCH_LARGE_EVENTS events from a
#               fixture peer into SQLite: peak RSS (< 250 MiB) and a converged re-pass, wall
#               and CPU (< 50 ms).
#   store       store BenchmarkInsertAtSize beside a throwaway PostgreSQL (hack/test-services.sh)
#               at BENCH_STORE_EVENTS (its ROOMSYNC_BENCH_ROOM_EVENTS; SQLite rooms cached
#               under $TMPDIR/roomsync-bench/): SQLite >= 20,000 1-KiB events/s, PostgreSQL
#               within 1.5x of SQLite, in batches of 100 and of 500.
#   many-rooms  `make bench-many-rooms` (TestManyRoomsSteadyState, envtest and PostgreSQL): the
#               manager's CPU for a steady-state pass over every room (< 2 s), SQLite and
#               PostgreSQL.
# "Two Dendrites holding the same forked room: sync converges it faster from both than from
# either one alone" is the dendrite step's netsplit row; the fixture peers' row stays beside it.
#
# Environment: BENCH_SIZES (2000,10000), BENCH_FORK_EVENTS (2000 a branch; 0 leaves the
# Dendrite row out), BENCH_LARGE_EVENTS (1000000), BENCH_STORE_EVENTS
# (1000000, at least 200000), ROOMSYNC_MANY_ROOMSYNCS, _ROOMS, _EVENTS, _PEERS (20, 50, 200, 4:
# TestManyRoomsSteadyState's scale), BENCH_STEPS (dendrite,ingest,large,store,many-rooms: a
# subset runs only those), BENCH_OUT (the logs' directory; default a new /tmp/roomsync-bench-goals.*,
# kept). A figure measured at a size other than the goal's is marked with *. The full run takes
# about 25 minutes on 2 cores; BENCH_SIZES=2000 BENCH_LARGE_EVENTS=100000
# BENCH_STORE_EVENTS=200000 ROOMSYNC_MANY_ROOMSYNCS=2 ROOMSYNC_MANY_ROOMS=5 ROOMSYNC_MANY_EVENTS=20
# ROOMSYNC_MANY_PEERS=2 checks it in about 4 minutes. Goals not met do not fail the run; a step that fails or prints no figure
# does, after the table. Every process is started by the scripts and tests it runs, which stop
# them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
[ "${GOTOOLCHAIN}" = local ] && export GOTOOLCHAIN=go1.27.3

dendrite_sizes="${BENCH_SIZES:-2000,10000}"
fork_events="${BENCH_FORK_EVENTS:-2000}"
large_events="${BENCH_LARGE_EVENTS:-1000000}"
store_events="${BENCH_STORE_EVENTS:-1000000}"
steps="${BENCH_STEPS:-dendrite,ingest,large,store,many-rooms}"
out="${BENCH_OUT:-$(mktemp -d /tmp/roomsync-bench-goals.XXXXXX)}"
mkdir -p "${out}"
for v in "${large_events}" "${store_events}" "${fork_events}"; do
  [[ "${v}" =~ ^[0-9]+$ ]] || { echo "bench: BENCH_LARGE_EVENTS, BENCH_STORE_EVENTS and BENCH_FORK_EVENTS are numbers" >&2; exit 2; }
done

log() { echo "bench: $*" >&2; }
die() { echo "bench: FAILED: $*" >&2; exit 1; }
# shellcheck source=hack/lib.sh
. "${root}/hack/lib.sh"
trap 'exit 130' INT
trap 'exit 143' TERM

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# ge A B / lt A B: whether the number A is at least B / below B.
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
both_lt() { lt "$1" "$3" && lt "$2" "$3"; } # both_lt A B C: A and B both below C
yes_no() { if "$@"; then echo met; else echo "NOT met"; fi; }

# The table: one row a goal, "goal<TAB>figure<TAB>target<TAB>verdict<TAB>load".
rows=()
row() { rows+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"$'\t'"$5"); }
failed=()
# missing GOAL TARGET STEP: a goal whose figure the step did not print.
missing() { row "$1" "no figure: see ${out}/$3.log" "$2" FAILED "$(step_load "$3")"; }

declare -A step_load_at step_took
step_load() { echo "${step_load_at[$1]:-?}"; }
want() { [[ ",${steps}," == *",$1,"* ]]; }

# run_step NAME COMMAND...: runs it with its output in OUT/NAME.log; records its exit code,
# the load average as it ended and how long it took.
run_step() {
  local name="$1" t0 rc=0
  shift
  log "${name}: $* (log: ${out}/${name}.log)"
  t0=$(date +%s)
  "$@" >"${out}/${name}.log" 2>&1 || rc=$?
  step_load_at[${name}]="$(loadavg)"
  step_took[${name}]=$(($(date +%s) - t0))
  log "${name}: exit ${rc} after ${step_took[${name}]} s, load $(loadavg)"
  if [ "${rc}" != 0 ]; then
    failed+=("${name}")
    tail -n 15 "${out}/${name}.log" >&2
  fi
}

# metric LOG BENCHMARK UNIT: the value a benchmark line reported in UNIT (the -GOMAXPROCS
# suffix of its name ignored), or nothing.
metric() {
  awk -v b="$2" -v u="$3" '{ n = $1; sub(/-[0-9]+$/, "", n) }
    n == b { for (i = 3; i <= NF; i++) if ($i == u) { v = $(i - 1) } } END { if (v != "") print v }' "$1"
}
num() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; } # num VALUE FORMAT
star() { [ "$1" = "$2" ] || echo "*"; }

# ---- the runs ---------------------------------------------------------------------------
if want dendrite; then
  BENCH_SIZES="${dendrite_sizes}" BENCH_FORK_EVENTS="${fork_events}" run_step dendrite hack/bench-dendrite.sh
fi
if want ingest; then
  # Beside a PostgreSQL: BenchmarkConverge syncs its linear room into each backend.
  free_port
  run_step ingest hack/test-services.sh "${REPLY}" \
    go test -count=1 -run '^$' -bench '^(BenchmarkVerifiedIngest|BenchmarkConverge|BenchmarkForkedFromTwoPeers)$' -timeout 30m ./resolver/
fi
if want large; then
  ROOMSYNC_BENCH_LARGE="${large_events}" run_step large \
    go test -count=1 -run '^$' -bench '^BenchmarkConvergeLarge$' -benchtime 1x -timeout 90m ./resolver/
fi
if want store; then
  free_port
  ROOMSYNC_BENCH_ROOM_EVENTS="${store_events}" run_step store hack/test-services.sh "${REPLY}" \
    go test -count=1 -run '^$' -bench '^BenchmarkInsertAtSize$' -benchtime 1x -timeout 90m ./store/
fi
if want many-rooms; then
  run_step many-rooms "${MAKE:-make}" --no-print-directory bench-many-rooms
fi

# ---- the figures ------------------------------------------------------------------------
if want dendrite; then
  f="${out}/dendrite.log"
  # Per size: "run 1 of N events: …" (or "all R runs of N events: …" when BENCH_RUNS > 1),
  # then "    roomsync / Dendrite B = Xx (…); roomsync / A's raw /backfill = Yx (…); A's raw
  # /backfill / Dendrite B = Cx (…)": C, what A serves over what B backfills, is X's ceiling.
  mapfile -t lines < <(awk '
    /^(run [0-9]+|all [0-9]+ runs) of [0-9]+ events: / { label = $0; sub(/ events: .*/, "", label); sub(/.* of /, "", label); all = ($1 == "all"); next }
    label != "" && /roomsync \/ Dendrite B = / {
      b = $0; sub(/.*roomsync \/ Dendrite B = /, "", b); sub(/x .*/, "", b)
      r = $0; sub(/.*roomsync \/ A.s raw \/backfill = /, "", r); sub(/x .*/, "", r)
      c = "?"; if ($0 ~ /\/backfill \/ Dendrite B = /) { c = $0; sub(/.*\/backfill \/ Dendrite B = /, "", c); sub(/x .*/, "", c) }
      line = label "\t" b "\t" r "\t" c
      if (all) { alls = alls line "\n"; any_all = 1 } else runs = runs line "\n"
      label = ""
    }
    END { printf "%s", any_all ? alls : runs }' "${f}")
  if [ "${#lines[@]}" = 0 ]; then
    missing "Dendrite: roomsync / Dendrite B's /messages" ">= 12x" dendrite
    missing "Dendrite: roomsync / A's raw /backfill" ">= 0.8x" dendrite
  fi
  for l in "${lines[@]}"; do
    IFS=$'\t' read -r n b r c <<<"${l}"
    row "Dendrite, ${n} events: roomsync / Dendrite B's /messages" "${b}x (A's raw /backfill: ${c}x)" ">= 12x" "$(yes_no ge "${b}" 12)" "$(step_load dendrite)"
    row "Dendrite, ${n} events: roomsync / A's raw /backfill" "${r}x" ">= 0.8x" "$(yes_no ge "${r}" 0.8)" "$(step_load dendrite)"
  done
  # "netsplit fork of F events a branch (E events), R run(s): roomsync sync from A' alone X
  # events/s (S s); from B' alone Y events/s (S s); from both Z events/s (S s)", then
  # "    both / max(A', B') = Qx (goal > 1x: …); …; load L1 L5 L15".
  if [ "${fork_events}" -gt 0 ]; then
    fl="$(grep '^netsplit fork of ' "${f}" | tail -n1 || true)"
    fq="$(grep "^    both / max(A', B') = " "${f}" | tail -n1 || true)"
    if [ -n "${fl}" ] && [ -n "${fq}" ]; then
      q="$(sed -n "s/.*both \/ max(A', B') = \([0-9.inf]*\)x.*/\1/p" <<<"${fq}")"
      ra="$(sed -n "s/.* from A' alone \([0-9]*\) events\/s.*/\1/p" <<<"${fl}")"
      rb="$(sed -n "s/.* from B' alone \([0-9]*\) events\/s.*/\1/p" <<<"${fl}")"
      r2="$(sed -n "s/.* from both \([0-9]*\) events\/s.*/\1/p" <<<"${fl}")"
      e="$(sed -n 's/.* events a branch (\([0-9]*\) events).*/\1/p' <<<"${fl}")"
      load="$(sed -n 's/.*; load \([0-9.]* [0-9.]* [0-9.]*\)$/\1/p' <<<"${fq}")"
      row "Two Dendrites, one netsplit-forked room (${e} events): both / faster alone" \
        "${q}x (${r2} against A' ${ra}, B' ${rb} events/s)" "> 1x" "$(yes_no lt 1 "${q}")" "${load:-$(step_load dendrite)}"
    else
      missing "Two Dendrites, one netsplit-forked room: both / faster alone" "> 1x" dendrite
    fi
  fi
fi
if want ingest; then
  f="${out}/ingest.log"
  two="$(metric "${f}" BenchmarkForkedFromTwoPeers x-two-over-one)"
  if [ -n "${two}" ]; then
    row "Two fixture peers, one forked room: faster than one" \
      "$(num "${two}" %.2f)x ($(num "$(metric "${f}" BenchmarkForkedFromTwoPeers events/s-two-peers)" %.0f) against $(num "$(metric "${f}" BenchmarkForkedFromTwoPeers events/s-one-peer)" %.0f) events/s)" \
      "> 1x" "$(yes_no lt 1 "${two}")" "$(step_load ingest)"
  else
    missing "Two fixture peers, one forked room: faster than one" "> 1x" ingest
  fi
  x="$(metric "${f}" BenchmarkVerifiedIngest/linear-20k x-ed25519-bound)"
  rate="$(metric "${f}" BenchmarkVerifiedIngest/linear-20k events/s)"
  bound="$(metric "${f}" BenchmarkVerifiedIngest/ed25519-bound verifies/s)"
  if [ -n "${x}" ]; then
    row "Verified ingest / ed25519-verify bound ($(nproc) cores)" "$(num "${x}" %.2f)x ($(num "${rate}" %.0f) events/s, bound $(num "${bound}" %.0f) verifies/s)" ">= 0.4x" "$(yes_no ge "${x}" 0.4)" "$(step_load ingest)"
  else
    missing "Verified ingest / ed25519-verify bound" ">= 0.4x" ingest
  fi
  lite="$(metric "${f}" BenchmarkConverge/linear-20k events/s)"
  pg="$(metric "${f}" BenchmarkConverge/linear-20k-postgres events/s)"
  if [ -n "${lite}" ] && [ -n "${pg}" ]; then
    goal="$(awk -v l="${lite}" 'BEGIN { printf "%.0f", l / 1.5 }')"
    row "Sync of 20k events into PostgreSQL, against SQLite" "$(num "${pg}" %.0f) events/s (SQLite $(num "${lite}" %.0f))" \
      ">= ${goal} events/s (SQLite/1.5)" "$(yes_no ge "${pg}" "${goal}")" "$(step_load ingest)"
  else
    missing "Sync of 20k events into PostgreSQL, against SQLite" ">= SQLite/1.5" ingest
  fi
  lin="$(metric "${f}" BenchmarkConverge/linear-20k x-min-requests)"
  fork="$(metric "${f}" BenchmarkConverge/forked-20k x-min-requests)"
  if [ -n "${lin}" ] && [ -n "${fork}" ]; then
    row "Requests / minimum (20k events: linear, forked)" "$(num "${lin}" %.3f)x, $(num "${fork}" %.3f)x" "<= 1.05x" \
      "$(yes_no ge 1.05 "$(awk -v a="${lin}" -v b="${fork}" 'BEGIN { print (a > b) ? a : b }')")" "$(step_load ingest)"
  else
    missing "Requests / minimum (linear, forked)" "<= 1.05x" ingest
  fi
fi

if want large; then
  f="${out}/large.log"
  s="$(star "${large_events}" 1000000)"
  rss="$(metric "${f}" BenchmarkConvergeLarge peak-RSS-MiB)"
  wall="$(metric "${f}" BenchmarkConvergeLarge re-pass-ms)"
  cpu="$(metric "${f}" BenchmarkConvergeLarge re-pass-cpu-ms)"
  if [ -n "${rss}" ]; then
    row "${large_events}-event room${s}: peak RSS of the sync" "$(num "${rss}" %.1f) MiB" "< 250 MiB" "$(yes_no lt "${rss}" 250)" "$(step_load large)"
  else
    missing "${large_events}-event room${s}: peak RSS" "< 250 MiB" large
  fi
  if [ -n "${wall}" ] && [ -n "${cpu}" ]; then
    row "${large_events}-event room${s}: converged re-pass" "$(num "${wall}" %.1f) ms wall, $(num "${cpu}" %.1f) ms CPU" "< 50 ms" \
      "$(yes_no both_lt "${wall}" "${cpu}" 50)" "$(step_load large)"
  else
    missing "${large_events}-event room${s}: converged re-pass" "< 50 ms" large
  fi
fi

if want store; then
  f="${out}/store.log"
  s="$(star "${store_events}" 1000000)"
  # "goal: SQLite ≥ 20000 events/s at 1M events (batch 100): 24130, met; load average A B C on N CPUs"
  # "goal: PostgreSQL ≥ SQLite/1.5 = 16087 events/s at 1M events (batch 100): 11309, MISSED; …"
  # (the synchronous_commit=off lines left out: not the store's default).
  for backend in SQLite PostgreSQL; do
    for batch in 100 500; do
      l="$(grep -F "goal: ${backend} " "${f}" | grep -F "(batch ${batch}):" | grep -vF synchronous_commit | tail -n1 || true)"
      if [ -z "${l}" ]; then
        missing "${backend}, 1-KiB events into a room of ${store_events}${s} (batch ${batch})" \
          "$([ "${backend}" = SQLite ] && echo ">= 20000 events/s" || echo ">= SQLite/1.5")" store
        continue
      fi
      at="$(sed -n 's/.* events\/s at \([^ ]*\) events .*/\1/p' <<<"${l}")"
      got="$(sed -n 's/.*(batch [0-9]*): \([0-9.]*\), .*/\1/p' <<<"${l}")"
      goal="$(sed -n 's/.* \([0-9.]*\) events\/s at .*/\1/p' <<<"${l}")"
      load="$(sed -n 's/.*load average \([0-9.]* [0-9.]* [0-9.]*\).*/\1/p' <<<"${l}")"
      target=">= ${goal} events/s"
      [ "${backend}" = PostgreSQL ] && target+=" (SQLite/1.5)"
      row "${backend}, 1-KiB events into a room of ${at}${s} (batch ${batch})" "${got} events/s" "${target}" \
        "$(yes_no ge "${got}" "${goal}")" "${load:-$(step_load store)}"
    done
  done
fi

if want many-rooms; then
  f="${out}/many-rooms.log"
  # "sqlite: steady-state pass over 1000 rooms (20 RoomSyncs, nothing new): manager CPU 1.02 s
  # (goal < 2s: met), …; load A B C"
  for backend in sqlite postgres; do
    l="$(grep -E "[: ]${backend}: steady-state pass over " "${f}" | tail -n1 || true)"
    if [ -z "${l}" ]; then
      missing "Many rooms (${backend}): steady-state pass, manager CPU" "< 2 s" many-rooms
      continue
    fi
    n="$(sed -n 's/.*steady-state pass over \([0-9]*\) rooms.*/\1/p' <<<"${l}")"
    cpu="$(sed -n 's/.*manager CPU \([0-9.]*\) s.*/\1/p' <<<"${l}")"
    wall="$(sed -n 's/.*, wall \([^;]*\);.*/\1/p' <<<"${l}")"
    load="$(sed -n 's/.*; load \([0-9.]* [0-9.]* [0-9.]*\).*/\1/p' <<<"${l}")"
    s="$(star "${n}x${ROOMSYNC_MANY_EVENTS:-200}" 1000x200)"
    row "Many rooms (${backend}): pass over ${n} rooms${s}, nothing new" "${cpu} s CPU (wall ${wall})" "< 2 s CPU" \
      "$(yes_no lt "${cpu}" 2)" "${load:-$(step_load many-rooms)}"
  done
fi

# ---- the table --------------------------------------------------------------------------
echo
echo "make bench: $(nproc) cores; Dendrite rooms of ${dendrite_sizes} events and a netsplit fork of ${fork_events} a branch, a large room of ${large_events}," \
  "store rooms of ${store_events}; logs in ${out}"
took=""
for s in dendrite ingest large store many-rooms; do
  [ -n "${step_took[${s}]:-}" ] && took+=" ${s} $((step_took[${s}] / 60))m$((step_took[${s}] % 60))s,"
done
[ -n "${took}" ] && echo "steps:${took%,}"
{
  printf 'goal\tfigure\ttarget\tverdict\tload (1/5/15 min)\n'
  printf '%s\n' "${rows[@]}"
} | awk -F'\t' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR }
  END {
    for (r = 1; r <= n; r++) {
      line = ""
      for (i = 1; i <= 5; i++) line = line sprintf(i < 5 ? "%-" w[i] "s | " : "%s", cell[r, i])
      print line
      if (r == 1) { sep = ""; for (i = 1; i <= 5; i++) { d = ""; for (j = 0; j < w[i]; j++) d = d "-"; sep = sep d (i < 5 ? "-+-" : "") } print sep }
    }
  }'
if [ "${large_events}" != 1000000 ] || [ "${store_events}" != 1000000 ] ||
  [ "${ROOMSYNC_MANY_ROOMSYNCS:-20}x${ROOMSYNC_MANY_ROOMS:-50}x${ROOMSYNC_MANY_EVENTS:-200}" != 20x50x200 ]; then
  echo "* measured at a size other than the goal's (1,000,000 events; 1,000 rooms of 200 events)"
fi
if [ "${#failed[@]}" -gt 0 ] || printf '%s\n' "${rows[@]}" | grep -q $'\tFAILED\t'; then
  die "step(s) failed or printed no figure: ${failed[*]:-see the table}"
fi

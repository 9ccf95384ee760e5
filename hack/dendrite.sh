#!/usr/bin/env bash
# Real Matrix peers for people at a shell: Dendrite v0.13.8 (github.com/matrix-org/dendrite,
# Apache-2.0 — never the AGPL element-hq fork) on loopback, self-signed TLS, SQLite. A thin
# wrapper: it builds hack/dendrite (a Go program over internal/dendrite, the package the
# end-to-end tests and `make demo` use) into bin/dendrite-cli and runs it.
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
#   hack/dendrite.sh seed-netsplit DIR_A HTTPS_PORT_A HTTP_PORT_A DIR_B HTTPS_PORT_B HTTP_PORT_B COUNT
#                                  [--parallel N] [--user LOCALPART]
#       A room forked by a netsplit, on two Dendrites already started (`start`) with these dirs
#       and ports: A creates a public, world-readable room of version 11, B joins it and reads
#       its history; B is stopped and A sends COUNT messages; A is stopped and B, started
#       again, sends COUNT messages; both start again and deliver their branch to each other.
#       Waits (bounded) until both client APIs show every event of both branches, restarting
#       both when that stalls (Dendrite's send queue can leave events in its database until
#       it restarts: internal/dendrite/netsplit.go); prints the room ID. Both run at the end,
#       with new PIDs in their dirs.
#   hack/dendrite.sh event-ids DIR HTTP_PORT ROOM_ID [--user LOCALPART]
#       The room's event IDs as this Dendrite's client API shows them (/messages, dir=b, to the
#       start; state events and m.room.create included), oldest first, one a line.
#   hack/dendrite.sh paginate DIR HTTP_PORT ROOM_ID [--join-from SERVER_NAME] [--limit N]
#                                                   [--user LOCALPART]
#       Joins (with --join-from) and pages /messages back to m.room.create, --limit events a
#       page (default 100), for hack/bench-dendrite.sh; prints
#       "events=N pages=P seconds=S reached_create=true|false join_seconds=J".
#   hack/dendrite.sh backfill-rate SERVER_NAME ROOM_ID --signing-key FILE --tls-cert FILE
#                                  --tls-key FILE [--listen 127.0.0.1:PORT] [--limit N]
#       How fast the Dendrite SERVER_NAME serves ROOM_ID over federation /backfill, for
#       hack/bench-dendrite.sh (internal/rawbackfill): serves the key of FILE (`roomsync
#       keygen`) over TLS on --listen (default a free loopback port) and signs as
#       127.0.0.1:PORT; make_join (not timed) gives the room version and the forward
#       extremities; then pages /backfill from them, --limit events a request (default 100),
#       each next request asking for the prev_events not yet seen, until none is left: only
#       parsing and event IDs, no checks, no storage. Timed from the first request to the
#       last; prints "events=N requests=R seconds=S reached_create=true|false room_version=V".
#
# Everything but the results goes to stderr, so `name=$(hack/dendrite.sh start …)` works.
# Environment: DENDRITE_START_TIMEOUT (seconds, default 30), DENDRITE_STOP_TIMEOUT (default 10),
# DENDRITE_GO (the go command, default go), DENDRITE_GOTOOLCHAIN (default: the project's
# go1.27.3 — Dendrite v0.13.8 builds with it and with go1.26).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tool="${root}/bin/dendrite-cli"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
[ "${GOTOOLCHAIN}" = local ] && export GOTOOLCHAIN=go1.27.3

mkdir -p "${root}/bin"
# go build leaves an up-to-date binary alone, so this costs a moment after the first time; the
# lock keeps parallel callers (hack/bench-dendrite.sh) from writing it at once. No -trimpath:
# the program finds bin/ from its source path.
(
  flock -w 600 9 || { echo "dendrite.sh: timed out waiting for another build of hack/dendrite" >&2; exit 1; }
  cd "${root}" && CGO_ENABLED=0 go build -o "${tool}" ./hack/dendrite >&2
) 9>"${root}/bin/.dendrite-cli.lock"
exec "${tool}" "$@"

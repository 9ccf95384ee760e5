# shellcheck shell=bash
# Helpers of hack/bench-dendrite.sh (and of any script that starts Dendrites). Source it after
# defining log and die; it defines nothing else and runs nothing.

# free_port sets REPLY to a loopback port nothing answers on and that this run has not taken.
taken_ports=" "
free_port() {
  local i p
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + RANDOM % 12000))
    case "${taken_ports}" in *" ${p} "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${p}") 2>/dev/null; then
      taken_ports+="${p} "
      REPLY="${p}"
      return 0
    fi
  done
  die "no free loopback port found"
}

# stop_dendrites DIR...: stops the Dendrite of each DIR by its PID (hack/dendrite.sh stop).
stop_dendrites() {
  local d
  for d in "$@"; do
    hack/dendrite.sh stop "${d}" >/dev/null 2>&1 || log "could not stop the Dendrite of ${d}"
  done
}

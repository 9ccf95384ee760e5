#!/usr/bin/env bash
# roomsync in one command (`make demo`): a throwaway Kubernetes control plane, two Dendrite
# peers holding a forked room, the roomsync manager, and a RoomSync that replicates the room,
# all on loopback. It shows the RoomSync until it is Ready, prints how to look around, and
# waits for Ctrl-C; every process it started is stopped and its temp dir removed on exit.
#
#   hack/demo.sh
#
# Steps:
#   1. builds bin/roomsync (make build), the envtest control plane (hack/envtest-assets.sh:
#      kube-apiserver, etcd, kubectl) and Dendrite (hack/dendrite.sh build); cached under bin/,
#      the first run takes several minutes, later ones well under one;
#   2. starts etcd (temp data dir) and kube-apiserver (a CA, serving and admin client certs and
#      a service-account key pair made with openssl) and writes a kubeconfig for kubectl;
#   3. installs the CRD (config/crd/bases);
#   4. starts Dendrites A and B; A creates a room with DEMO_SEED_A messages, B joins it over
#      federation, then both send DEMO_SEED_EACH messages at once, which forks the room's DAG;
#   5. makes our signing key and TLS certificate and starts `roomsync manager`;
#   6. applies a RoomSync (config/samples/federation_v1alpha1_roomsync.yaml, adapted) naming
#      the room and both Dendrites;
#   7. runs `kubectl get roomsyncs` every 2 s until Ready is True, then shows the results.
#
# Environment:
#   DEMO_NONINTERACTIVE=1   show the results and exit (0 when the RoomSync became Ready and the
#                           store is converged, 1 otherwise) instead of waiting for Ctrl-C
#   DEMO_READY_TIMEOUT      seconds to wait for Ready (default 300)
#   DEMO_HOLD_SECONDS       longest wait for Ctrl-C in interactive mode (default 86400)
#   DEMO_SEED_A             messages A sends before B joins (default 200)
#   DEMO_SEED_EACH          messages A and B each send at once afterwards (default 150)
#   DEMO_KEEP_WORKDIR=1     keep the temp dir (logs, store, certificates) on exit
# Only loopback (127.0.0.1) is used; ports are picked free at random from 20000-31999.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
[ "${GOTOOLCHAIN}" = local ] && export GOTOOLCHAIN=go1.27.3

noninteractive="${DEMO_NONINTERACTIVE:-0}"
ready_timeout="${DEMO_READY_TIMEOUT:-300}"
hold_seconds="${DEMO_HOLD_SECONDS:-86400}"
seed_a="${DEMO_SEED_A:-200}"
seed_each="${DEMO_SEED_EACH:-150}"
make_cmd="${MAKE:-make}"

t_start=$(date +%s%3N)
step() { printf '\n\033[1m==> [%5.1fs] %s\033[0m\n' "$(( $(date +%s%3N) - t_start ))e-3" "$*" >&2; }
log() { echo "demo: $*" >&2; }
die() { echo "demo: FAILED: $*" >&2; exit 1; }
# shellcheck source=hack/lib.sh
. "${root}/hack/lib.sh"

# The script's own stdout and stderr, for cleanup; children get them closed (5>&- 6>&-).
exec 5>&1 6>&2
work="$(mktemp -d /tmp/roomsync-demo.XXXXXX)"
chmod 700 "${work}"
etcd_pid="" apiserver_pid="" manager_pid=""
dendrite_dirs=()
bg_pids=() # seeders running in the background
failed=1

# pid_running: PID is alive and not a zombie.
pid_running() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [ "${state}" != Z ]
}

# stop_pid NAME PID SECONDS: TERM, then KILL after SECONDS; bounded.
stop_pid() {
  local name="$1" pid="$2" timeout="$3" i
  pid_running "${pid}" || { [ -z "${pid}" ] || log "${name} (PID ${pid}) had exited already"; return 0; }
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    pid_running "${pid}" || break
    sleep 0.1
  done
  if pid_running "${pid}"; then
    log "${name} (PID ${pid}) still running after ${timeout}s: KILL"
    kill -KILL "${pid}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_running "${pid}" || break
      sleep 0.1
    done
  fi
  wait "${pid}" 2>/dev/null || true
  log "stopped ${name} (PID ${pid})"
}

show_logs() {
  local f
  for f in manager.log kube-apiserver.log etcd.log dendrite-a/dendrite.log dendrite-b/dendrite.log; do
    [ -s "${work}/${f}" ] || continue
    echo "---- last lines of ${work}/${f}" >&2
    tail -n 15 "${work}/${f}" >&2 || true
  done
}

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  set +e
  exec 1>&5 2>&6 # whatever redirection exit was called under
  [ "${failed}" = 1 ] && [ "${code}" != 0 ] && [ "${code}" != 130 ] && [ "${code}" != 143 ] && show_logs
  step "cleaning up"
  local p d
  for p in "${bg_pids[@]}"; do
    stop_pid "seeder" "${p}" 5
  done
  stop_pid "roomsync manager" "${manager_pid}" 15
  stop_dendrites "${dendrite_dirs[@]}"
  [ "${#dendrite_dirs[@]}" -gt 0 ] && log "stopped ${#dendrite_dirs[@]} Dendrite(s)"
  stop_pid "kube-apiserver" "${apiserver_pid}" 20
  stop_pid "etcd" "${etcd_pid}" 10
  if [ "${DEMO_KEEP_WORKDIR:-0}" = 1 ]; then
    log "kept ${work}"
  else
    rm -rf "${work}"
  fi
  exit "${code}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.5 s until it succeeds; bounded.
# COMMAND keeps quiet itself (so that a die in it is heard).
wait_for() {
  local timeout="$1" what="$2" i
  shift 2
  for ((i = 0; i < timeout * 2; i++)); do
    if "$@"; then
      return 0
    fi
    sleep 0.5
  done
  die "${what} not ready within ${timeout}s"
}

command -v openssl >/dev/null || die "openssl is needed"
command -v curl >/dev/null || die "curl is needed"

# ---- 1. builds ---------------------------------------------------------------------------
step "building bin/roomsync, the control plane binaries and Dendrite (cached under bin/)"
"${make_cmd}" --no-print-directory build >&2
assets="$(hack/envtest-assets.sh)"
hack/dendrite.sh build >/dev/null
roomsync="${root}/bin/roomsync"
kubectl_bin="${assets}/kubectl"

# ---- 2. control plane --------------------------------------------------------------------
step "starting etcd and kube-apiserver in ${work}"
free_port; etcd_port=${REPLY}
free_port; etcd_peer_port=${REPLY}
free_port; api_port=${REPLY}
pki="${work}/pki"
mkdir -p "${pki}" "${work}/etcd" "${work}/apiserver"

ossl() { openssl "$@" >/dev/null 2>&1 || die "openssl $1 failed"; }
# A CA, the API server's serving certificate, an admin client certificate (group system:masters,
# which RBAC lets do anything) and the service-account token key pair.
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=roomsync-demo-ca" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "${pki}/ca.key" -out "${pki}/ca.crt"
issue() { # issue NAME SUBJECT EXTENSIONS
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
    -keyout "${pki}/$1.key" -out "${pki}/$1.csr"
  printf '%s\n' "$3" >"${pki}/$1.ext"
  ossl x509 -req -in "${pki}/$1.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 2 -extfile "${pki}/$1.ext" -out "${pki}/$1.crt"
}
issue apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
issue admin "/O=system:masters/CN=roomsync-demo-admin" \
  "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${pki}/sa.key"
ossl pkey -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub"

"${assets}/etcd" --name demo --data-dir "${work}/etcd" \
  --listen-client-urls "http://127.0.0.1:${etcd_port}" --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
  --listen-peer-urls "http://127.0.0.1:${etcd_peer_port}" --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer_port}" \
  --initial-cluster "demo=http://127.0.0.1:${etcd_peer_port}" \
  </dev/null >"${work}/etcd.log" 2>&1 5>&- 6>&- &
etcd_pid=$!
etcd_ready() {
  pid_running "${etcd_pid}" || die "etcd exited during start-up"
  curl -sf --max-time 2 "http://127.0.0.1:${etcd_port}/health" >/dev/null 2>&1
}
wait_for 30 "etcd" etcd_ready
log "etcd ready on 127.0.0.1:${etcd_port} (PID ${etcd_pid})"

# The flags envtest (controller-runtime's controlplane.APIServer) gives kube-apiserver, with
# our own certificates instead of its generated ones.
"${assets}/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:${etcd_port}" \
  --bind-address 127.0.0.1 --secure-port "${api_port}" \
  --cert-dir "${work}/apiserver" \
  --tls-cert-file "${pki}/apiserver.crt" --tls-private-key-file "${pki}/apiserver.key" \
  --client-ca-file "${pki}/ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer "https://127.0.0.1:${api_port}/" \
  --service-account-key-file "${pki}/sa.pub" --service-account-signing-key-file "${pki}/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --disable-admission-plugins ServiceAccount \
  </dev/null >"${work}/kube-apiserver.log" 2>&1 5>&- 6>&- &
apiserver_pid=$!

kubeconfig="${work}/kubeconfig"
cat >"${kubeconfig}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://127.0.0.1:${api_port}
    certificate-authority: ${pki}/ca.crt
users:
- name: admin
  user:
    client-certificate: ${pki}/admin.crt
    client-key: ${pki}/admin.key
contexts:
- name: demo
  context:
    cluster: demo
    user: admin
    namespace: default
current-context: demo
EOF
kc() { "${kubectl_bin}" --kubeconfig "${kubeconfig}" "$@"; }
api_ready() {
  pid_running "${apiserver_pid}" || die "kube-apiserver exited during start-up"
  [ "$(kc get --raw /readyz 2>/dev/null)" = ok ]
}
wait_for 120 "kube-apiserver" api_ready
default_ns() { kc get namespace default >/dev/null 2>&1; }
wait_for 60 "the default namespace" default_ns
log "kube-apiserver ready on https://127.0.0.1:${api_port} (PID ${apiserver_pid}); kubeconfig ${kubeconfig}"

# ---- 3. the CRD --------------------------------------------------------------------------
step "installing the RoomSync CRD"
kc apply -f config/crd/bases >&2
kc wait --for=condition=Established --timeout=60s crd/roomsyncs.federation.roomsync.io >&2

# ---- 4. Dendrite peers and a forked room -------------------------------------------------
step "starting Dendrites A and B"
free_port; a_https=${REPLY}
free_port; a_http=${REPLY}
free_port; b_https=${REPLY}
free_port; b_http=${REPLY}
dir_a="${work}/dendrite-a" dir_b="${work}/dendrite-b"
dendrite_dirs+=("${dir_a}")
name_a="$(hack/dendrite.sh start "${dir_a}" "${a_https}" "${a_http}" 5>&- 6>&-)"
dendrite_dirs+=("${dir_b}")
name_b="$(hack/dendrite.sh start "${dir_b}" "${b_https}" "${b_http}" 5>&- 6>&-)"
log "Dendrite A: ${name_a} (client API http://127.0.0.1:${a_http}); Dendrite B: ${name_b} (client API http://127.0.0.1:${b_http})"

step "seeding a room: ${seed_a} messages on A, B joins, then ${seed_each} from each at once (forks the DAG)"
room="$(hack/dendrite.sh seed "${dir_a}" "${a_http}" "${seed_a}")"
[[ "${room}" == '!'* ]] || die "seeding A printed no room ID"
log "room ${room}"
hack/dendrite.sh seed "${dir_b}" "${b_http}" 0 --room "${room}" --join-from "${name_a}" >/dev/null
hack/dendrite.sh seed "${dir_a}" "${a_http}" "${seed_each}" --room "${room}" >/dev/null 2>"${work}/seed-a.log" &
bg_pids+=($!)
hack/dendrite.sh seed "${dir_b}" "${b_http}" "${seed_each}" --room "${room}" >/dev/null 2>"${work}/seed-b.log" &
bg_pids+=($!)
for p in "${bg_pids[@]}"; do
  wait "${p}" || { cat "${work}"/seed-?.log >&2; die "seeding in parallel failed"; }
done
bg_pids=()
grep -h 'sent' "${work}"/seed-?.log >&2 || true

# ---- 5. the manager ----------------------------------------------------------------------
step "starting roomsync manager"
free_port; our_port=${REPLY}
free_port; metrics_port=${REPLY}
free_port; probe_port=${REPLY}
our_name="127.0.0.1:${our_port}"
"${roomsync}" keygen >"${work}/signing.key"
chmod 600 "${work}/signing.key"
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "${work}/tls.key" -out "${work}/tls.crt"
store="sqlite://${work}/events.db"
"${roomsync}" manager --kubeconfig "${kubeconfig}" \
  --store "${store}" --server-name "${our_name}" --signing-key "${work}/signing.key" \
  --listen "${our_name}" --tls-cert "${work}/tls.crt" --tls-key "${work}/tls.key" \
  --metrics-bind-address "127.0.0.1:${metrics_port}" \
  --health-probe-bind-address "127.0.0.1:${probe_port}" \
  </dev/null >"${work}/manager.log" 2>&1 5>&- 6>&- &
manager_pid=$!
manager_ready() {
  pid_running "${manager_pid}" || die "roomsync manager exited during start-up"
  curl -sf --max-time 2 "http://127.0.0.1:${probe_port}/readyz" >/dev/null 2>&1
}
wait_for 60 "roomsync manager" manager_ready
log "manager ready (PID ${manager_pid}); our server name ${our_name}, store ${store}, log ${work}/manager.log"

# ---- 6. the RoomSync ---------------------------------------------------------------------
step "applying a RoomSync for ${room}"
rms=dendrite-demo
# config/samples/federation_v1alpha1_roomsync.yaml, with the seeded room and both Dendrites.
cat >"${work}/roomsync.yaml" <<EOF
# Adapted from config/samples/federation_v1alpha1_roomsync.yaml by hack/demo.sh.
apiVersion: federation.roomsync.io/v1alpha1
kind: RoomSync
metadata:
  name: ${rms}
spec:
  rooms:
  - id: "${room}"
  peers:
  # Loopback peers with self-signed certificates: reached directly through url.
  - serverName: "${name_a}"
    url: https://${name_a}
    insecureSkipTLSVerify: true
  - serverName: "${name_b}"
    url: https://${name_b}
    insecureSkipTLSVerify: true
  history:
    mode: Full
  limits:
    backfillLimit: 100
    missingEventsLimit: 50
    maxEventsPerReconcile: 10000
  interval: 1m
  suspend: false
EOF
kc apply -f "${work}/roomsync.yaml" >&2

# ---- 7. progress -------------------------------------------------------------------------
step "kubectl get roomsyncs, every 2 s until Ready (at most ${ready_timeout}s)"
ready=""
deadline=$(($(date +%s) + ready_timeout))
for ((i = 0; i < ready_timeout; i++)); do
  pid_running "${manager_pid}" || die "roomsync manager exited"
  # The header once; kubectl sizes the columns to fit it, so later rows line up under it.
  if [ "${i}" = 0 ]; then
    kc get roomsyncs 2>&1 || true
  else
    kc get roomsyncs 2>&1 | tail -n +2 || true
  fi
  ready="$(kc get rms "${rms}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  [ "${ready}" = True ] && break
  [ "$(date +%s)" -ge "${deadline}" ] && break
  sleep 2
done
t_ready=$(date +%s%3N)

step "results"
echo "\$ kubectl get rms -o wide"
kc get rms -o wide || true
echo
echo "\$ kubectl describe rms ${rms}"
kc describe rms "${rms}" || true
echo
echo "\$ roomsync inspect --json"
inspect="$("${roomsync}" inspect --store "${store}" --room "${room}" --json 2>&1)" || true
echo "${inspect}" | head -c 3000
echo
stored="$(sed -n 's/.*"events": *\([0-9]*\).*/\1/p' <<<"${inspect}" | head -n1)"
converged="$(grep -c '"converged": *true' <<<"${inspect}" || true)"
ids_a="$(hack/dendrite.sh event-ids "${dir_a}" "${a_http}" "${room}" 2>/dev/null | wc -l || true)"
ids_b="$(hack/dendrite.sh event-ids "${dir_b}" "${b_http}" "${room}" 2>/dev/null | wc -l || true)"
echo "Dendrite A's /messages shows ${ids_a} events, B's ${ids_b}; the roomsync store holds ${stored:-?}."
echo
echo "\$ curl -s http://127.0.0.1:${metrics_port}/metrics | grep '^roomsync_'"
curl -sf --max-time 5 "http://127.0.0.1:${metrics_port}/metrics" | grep '^roomsync_' | grep -v '_bucket{' | head -n 40 || true

ready="$(kc get rms "${rms}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
if [ "${ready}" != True ]; then
  die "the RoomSync did not become Ready within ${ready_timeout}s"
fi
[ "${converged}" -ge 1 ] || die "roomsync inspect does not report the room converged"
failed=0

cat <<EOF

The RoomSync ${rms} is Ready: ${stored} events of room ${room} replicated from two Dendrites
in $(( (t_ready - t_start) / 1000 ))s since the start of the demo. Look around (from ${root}):

  ${kubectl_bin} --kubeconfig ${kubeconfig} get rms -o wide
  ${kubectl_bin} --kubeconfig ${kubeconfig} describe rms ${rms}
  bin/roomsync inspect --store ${store} --room '${room}' --json
  bin/roomsync inspect --store ${store} --room '${room}' --event-ids | head
  curl -s http://127.0.0.1:${metrics_port}/metrics | grep roomsync_
  tail -f ${work}/manager.log

  more messages (the manager picks them up within the 1m interval, or at once with the annotation):
  hack/dendrite.sh seed ${dir_b} ${b_http} 20 --room '${room}'
  ${kubectl_bin} --kubeconfig ${kubeconfig} annotate rms ${rms} --overwrite reconcile.roomsync.io/requestedAt="\$(date +%s)"
EOF

if [ "${noninteractive}" = 1 ]; then
  echo
  echo "DEMO_NONINTERACTIVE=1: stopping everything."
  exit 0
fi

echo
echo "Press Ctrl-C to stop the manager, both Dendrites, kube-apiserver and etcd and remove ${work}."
for ((i = 0; i < hold_seconds; i++)); do
  pid_running "${manager_pid}" || die "roomsync manager exited"
  pid_running "${apiserver_pid}" || die "kube-apiserver exited"
  pid_running "${etcd_pid}" || die "etcd exited"
  sleep 1
done
log "DEMO_HOLD_SECONDS (${hold_seconds}) elapsed"
exit 0

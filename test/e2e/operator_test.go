package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/testenv"
)

// TestOperatorAgainstDendrites runs the whole product: a real API server (envtest), the
// roomsync manager binary as a process, a RoomSync applied with kubectl, and two Dendrite
// peers sharing a forked room of over 2,000 events. One Dendrite is stopped mid-sync and the
// other fills in; `kubectl wait --for=condition=Ready` returns; the store then equals the
// room as Dendrite shows it; new messages are picked up by the next pass.
func TestOperatorAgainstDendrites(t *testing.T) {
	env := startEnv(t)

	a := startDendrite(t)
	b := startDendrite(t)
	room := a.seed(t, "", 1000)
	// B joins before anything reads the room over federation (Dendrite caches badly otherwise),
	// then both send at once, so the DAG forks.
	b.seed(t, room, 0, "--join-from", a.serverName)
	var wg sync.WaitGroup
	for _, d := range []*dendrite{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); d.seed(t, room, 600) }()
	}
	wg.Wait()
	// Reading the whole room through B makes B backfill what predates its join, so B alone
	// can serve the room once A is gone.
	wantB := b.eventIDs(t, room)
	wantA := a.eventIDs(t, room)
	if len(wantA) < 2200 || !sameSet(wantA, wantB) {
		t.Fatalf("Dendrites disagree or the room is small: A %d events, B %d", len(wantA), len(wantB))
	}

	dir := t.TempDir()
	// This release handles shard a only; another release would take the rest.
	op := startOperator(t, env, dir, "events.db", "--selector", "roomsync.io/shard=a")
	storeURL, stopManager := op.storeURL, op.stop
	defer stopManager()

	manifest := filepath.Join(dir, "roomsync.yaml")
	writeManifest(t, manifest, room, a, b)
	// The room is world-readable: nothing to join for (join_test.go tests joining).
	addToSpec(t, manifest, "  membership:\n    join: Never\n")
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	// A RoomSync of another shard, which this manager must leave alone.
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte(strings.ReplaceAll(strings.ReplaceAll(string(mustRead(t, manifest)),
		"name: archive", "name: other"), "shard: a", "shard: b")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl("apply", "-f", other); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}

	// Mid-sync: once some events are stored, and well before all, A goes away.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n := storedEvents(t, env)
		if n > 0 && n < int64(len(wantA)) {
			t.Logf("stopping %s with %d of %d events stored", a.serverName, n, len(wantA))
			break
		}
		if n >= int64(len(wantA)) || time.Now().After(deadline) {
			t.Fatalf("could not catch the sync midway (%d events stored)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.stop(t)

	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", "--timeout=300s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait: %v\n%s\nstatus: %s", err, out, status)
	}
	assertStoreEquals(t, storeURL, room, wantB)
	assertRoomsPage(t, op, room)
	out, _ := env.Kubectl("get", "rms", "--no-headers")
	t.Logf("kubectl get rms: %s", strings.TrimSpace(out))
	if gen, _ := env.Kubectl("get", "roomsync/other", "-o", "jsonpath={.status.observedGeneration}"); strings.TrimSpace(gen) != "" {
		t.Errorf("the manager of shard a reconciled a RoomSync of shard b (observedGeneration %s)", gen)
	}

	// New messages on B; the requestedAt annotation asks for a pass now (the interval is 1h).
	b.seed(t, room, 100)
	wantB = b.eventIDs(t, room)
	if out, err := env.Kubectl("annotate", "--overwrite", "roomsync/archive", "reconcile.roomsync.io/requestedAt=again"); err != nil {
		t.Fatalf("kubectl annotate: %v\n%s", err, out)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for storedEvents(t, env) != int64(len(wantB)) {
		if time.Now().After(deadline) {
			t.Fatalf("new messages not picked up: %d stored, %d on B", storedEvents(t, env), len(wantB))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", "--timeout=120s"); err != nil {
		t.Fatalf("kubectl wait after new messages: %v\n%s", err, out)
	}
	assertStoreEquals(t, storeURL, room, wantB)
}

// writeManifest writes a RoomSync named archive of room, replicated from peers.
// applyArchive writes the RoomSync "archive" for room and peers into dir, with spec lines
// added to its spec (membership, say; "" for none), and applies it.
func applyArchive(t *testing.T, env *testenv.Env, dir, room, spec string, peers ...*dendrite) {
	t.Helper()
	manifest := filepath.Join(dir, "roomsync.yaml")
	writeManifest(t, manifest, room, peers...)
	if spec != "" {
		addToSpec(t, manifest, spec)
	}
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// waitArchiveReady waits until the RoomSync "archive" is Ready, and fails with its status when
// it is not within timeout.
func waitArchiveReady(t *testing.T, env *testenv.Env, timeout time.Duration) {
	t.Helper()
	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", fmt.Sprintf("--timeout=%ds", int(timeout.Seconds()))); err != nil {
		status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait: %v\n%s\nstatus: %s", err, out, status)
	}
}

func writeManifest(t *testing.T, path, room string, peers ...*dendrite) {
	t.Helper()
	writeNamedManifest(t, path, "archive", room, peers...)
}

func writeNamedManifest(t *testing.T, path, name, room string, peers ...*dendrite) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "apiVersion: federation.roomsync.io/v1alpha1\nkind: RoomSync\nmetadata:\n  name: %s\n  namespace: default\n  labels:\n    roomsync.io/shard: a\nspec:\n", name)
	fmt.Fprintf(&b, "  rooms:\n  - id: %q\n  peers:\n", room)
	for _, p := range peers {
		// By server name alone, as users name peers: no url.
		fmt.Fprintf(&b, "  - serverName: %q\n    insecureSkipTLSVerify: true\n", p.serverName)
	}
	// Small passes so that the sync is still going when a peer is stopped.
	fmt.Fprintf(&b, "  limits:\n    maxEventsPerReconcile: 300\n  interval: 1h\n")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// addToSpec appends YAML lines (indented for spec) to a manifest writeManifest wrote.
func addToSpec(t *testing.T, path, lines string) {
	t.Helper()
	if err := os.WriteFile(path, append(mustRead(t, path), []byte(lines)...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func storedEvents(t *testing.T, env *testenv.Env) int64 {
	t.Helper()
	out, err := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status.summary.events}")
	if err != nil || strings.TrimSpace(out) == "" {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	return n
}

func assertStoreEquals(t *testing.T, storeURL, room string, want []string) {
	t.Helper()
	out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--event-ids")
	if code != 0 {
		t.Fatalf("inspect exited %d", code)
	}
	if got := strings.Fields(out); !sameSet(got, want) {
		missing, extra := diff(want, got)
		t.Fatalf("store has %d events, Dendrite %d: %d missing (%v), %d extra (%v)", len(got), len(want), len(missing), head(missing), len(extra), head(extra))
	}
	out, _ = run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--json")
	var report struct {
		BackwardExtremities []string `json:"backward_extremities"`
		Converged           bool     `json:"converged"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || len(report.BackwardExtremities) != 0 || !report.Converged {
		t.Fatalf("inspect --json: %s (%v)", out, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPartialPeerScenario: two Dendrites hold a room, but B joined late, so only A holds the
// early history. With A down, `roomsync sync` and the operator store what B can give and say
// they wait for A; once A is back, a new `roomsync sync` converges, and so does the
// operator's first pass after it. Truth is A's own view of the room.
func TestPartialPeerScenario(t *testing.T) {
	env := startEnv(t)

	a := startDendrite(t)
	b := startDendrite(t)
	room := a.seed(t, "", 300)
	b.seed(t, room, 0, "--join-from", a.serverName)
	a.seed(t, room, 20)
	b.seed(t, room, 30)
	wantA := a.eventIDs(t, room)
	if len(wantA) < 350 {
		t.Fatalf("A shows %d events, want at least 350", len(wantA))
	}
	a.stop(t)

	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	cert, key := selfSignedCert(t, dir)
	ports := freePorts(t, 1)
	cliName := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cliStore := "sqlite://" + filepath.Join(dir, "cli.db")
	syncArgs := []string{"sync", "--store", cliStore,
		"--server-name", cliName, "--signing-key", keyFile,
		"--listen", cliName, "--tls-cert", cert, "--tls-key", key,
		"--peer", a.serverName, "--peer", b.serverName, "--insecure-skip-tls-verify",
		"--room", room, "--timeout", "60s", "--join", "never"}

	// A is down: B's part is stored, and the run says it waits for A.
	_, out, code := runCapture(t, 2*time.Minute, roomsyncBin, syncArgs...)
	if code != 1 {
		t.Fatalf("roomsync sync with A down exited %d, want 1 (not converged)", code)
	}
	if !strings.Contains(out, "waiting for") || !strings.Contains(out, a.serverName) {
		t.Errorf("sync output does not say it waits for %s:\n%s", a.serverName, tail(out, 2000))
	}
	if strings.Contains(out, "unfillable") && !strings.Contains(out, ", 0 unfillable") {
		t.Errorf("gaps written off as unfillable while A was down:\n%s", tail(out, 2000))
	}

	// The operator, on a store of its own, says the same in the RoomSync's status.
	op := startOperator(t, env, t.TempDir(), "operator.db")
	opStore, stopManager := op.storeURL, op.stop
	defer stopManager()
	manifest := filepath.Join(dir, "roomsync.yaml")
	writeManifest(t, manifest, room, a, b)
	// The room is world-readable: nothing to join for (join_test.go tests joining).
	addToSpec(t, manifest, "  membership:\n    join: Never\n")
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		waiting, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status.rooms[0].waitingFor}")
		ready, _ := env.Kubectl("get", "roomsync/archive", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].message}`)
		if strings.Contains(waiting, a.serverName) && strings.Contains(ready, a.serverName) {
			t.Logf("with A down: waitingFor %s; Ready: %s", waiting, ready)
			break
		}
		if time.Now().After(deadline) {
			status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
			t.Fatalf("status does not say it waits for %s: %s", a.serverName, status)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// A is back.
	a.start(t)
	if _, out, code := runCapture(t, 5*time.Minute, roomsyncBin, syncArgs...); code != 0 {
		t.Fatalf("roomsync sync after A returned exited %d, want 0:\n%s", code, tail(out, 2000))
	}
	assertStoreEquals(t, cliStore, room, wantA)

	// "Sync now" makes the operator ask A at once, whatever back-off A's absence left.
	if out, err := env.Kubectl("annotate", "--overwrite", "roomsync/archive", "reconcile.roomsync.io/requestedAt=a-is-back"); err != nil {
		t.Fatalf("kubectl annotate: %v\n%s", err, out)
	}
	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", "--timeout=120s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait after A returned: %v\n%s\nstatus: %s", err, out, status)
	}
	stopManager()
	assertStoreEquals(t, opStore, room, wantA)
}

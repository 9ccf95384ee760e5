package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
	"github.com/roomsync/roomsync/internal/testenv"
	"github.com/roomsync/roomsync/store"
)

// faultRoomEvents is the size of the rooms the fault tests converge: enough that a pass takes
// seconds, so that faults land in the middle of one. `make soak` sets it higher.
func faultRoomEvents(t *testing.T, def int) int {
	if v := os.Getenv("ROOMSYNC_FAULT_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("ROOMSYNC_FAULT_EVENTS=%q: want a number of at least 100", v)
		}
		return n
	}
	return def
}

// TestManagerKilledWhileConverging: the manager is SIGKILLed five times while it converges a
// Dendrite room into PostgreSQL, each time once the store holds more of the room (at random
// points), and started again on the same store. The last start converges: the store holds
// exactly the events Dendrite shows, and its bookkeeping checks clean.
func TestManagerKilledWhileConverging(t *testing.T) {
	admin := postgresAdmin(t)
	storeURL, _ := passwordRole(t, admin)
	d := startDendrite(t)
	room := d.seed(t, "", faultRoomEvents(t, 5000))
	want := d.eventIDs(t, room)

	env := startEnv(t)
	dir := t.TempDir()
	_, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "", d)

	// Five kill points, at random fractions of the room, in order.
	targets := make([]int, 5)
	for i := range targets {
		targets[i] = len(want) * (5 + rand.IntN(90)) / 100
	}
	slices.Sort(targets)
	var held []int64
	for i, target := range targets {
		m := startManagerProcess(t, env, filepath.Join(dir, fmt.Sprintf("manager-%d.log", i)), args...)
		n := waitStoreCount(t, storeURL, room, int64(target), 2*time.Minute, m)
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
		held = append(held, n)
	}
	t.Logf("killed with %v of %d events stored", held, len(want))
	if held[len(held)-1] >= int64(len(want)) {
		t.Logf("the last kill came after convergence")
	}

	m := startManagerProcess(t, env, filepath.Join(dir, "manager-last.log"), args...)
	defer func() { _ = m.Stop(15 * time.Second) }()
	waitArchiveReady(t, env, 3*time.Minute)
	// Read from Dendrite again: our join, if the policy made one, is in the room now.
	assertStoreEquals(t, storeURL, room, d.eventIDs(t, room))
	if out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--check"); code != 0 {
		t.Errorf("inspect --check exited %d: %s", code, out)
	}
}

// TestPostgresRestartMidPass: the manager's PostgreSQL restarts while a pass stores a room.
// The manager recovers by itself (it is not restarted) and converges, losing nothing.
func TestPostgresRestartMidPass(t *testing.T) {
	// Not under t.TempDir(), which only root may enter: the cluster runs as postgres.
	base, err := os.MkdirTemp("", "roomsync-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	pgDir := filepath.Join(base, "pg")
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	port := freePorts(t, 1)[0]
	script := filepath.Join(testenv.RepoRoot(), "hack", "postgres.sh")
	out, code := run(t, 2*time.Minute, script, "start", pgDir, strconv.Itoa(port))
	if code != 0 {
		t.Fatalf("postgres.sh start exited %d: %s", code, out)
	}
	t.Cleanup(func() { _ = exec.Command(script, "stop", pgDir).Run() })
	storeURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)

	d := startDendrite(t)
	room := d.seed(t, "", faultRoomEvents(t, 3000))
	want := d.eventIDs(t, room)

	env := startEnv(t)
	dir := t.TempDir()
	_, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "", d)
	m := startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)
	defer func() { _ = m.Stop(15 * time.Second) }()
	n := waitStoreCount(t, storeURL, room, int64(len(want)/4), 2*time.Minute, m)
	t0 := time.Now()
	if out, code := run(t, 2*time.Minute, script, "restart", pgDir); code != 0 {
		t.Fatalf("postgres.sh restart exited %d: %s", code, out)
	}
	t.Logf("PostgreSQL restarted in %v with %d of %d events stored", time.Since(t0).Round(time.Millisecond), n, len(want))

	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", "--timeout=180s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait: %v\n%s\nstatus: %s\nmanager log:\n%s", err, out, status, localrun.Tail(filepath.Join(dir, "manager.log"), 30))
	}
	if m.Exited() {
		t.Fatalf("the manager exited: %v", m.ExitError())
	}
	assertStoreEquals(t, storeURL, room, d.eventIDs(t, room))
	if out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--check"); code != 0 {
		t.Errorf("inspect --check exited %d: %s", code, out)
	}
}

// postgresAdmin is the test cluster's admin URL (`make test` starts one); in CI its absence
// fails the test.
func postgresAdmin(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("ROOMSYNC_TEST_POSTGRES_URL")
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("ROOMSYNC_TEST_POSTGRES_URL is not set: run through `make test`")
		}
		t.Skip("ROOMSYNC_TEST_POSTGRES_URL is not set: run through `make test`")
	}
	return admin
}

// startManagerProcess runs a manager with args and returns its process; the test's end stops
// it if it still runs.
func startManagerProcess(t *testing.T, env *testenv.Env, logFile string, args ...string) *localrun.Process {
	t.Helper()
	m, err := localrun.StartManager(roomsyncBin, env.Kubeconfig, logFile, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s (tail):\n%s", filepath.Base(logFile), localrun.Tail(logFile, 30))
		}
		_ = m.Stop(15 * time.Second)
	})
	return m
}

// waitStoreCount polls the store until it holds at least n events of the room and returns
// how many it holds then; it fails when m exits or the timeout passes first.
func waitStoreCount(t *testing.T, storeURL, room string, n int64, timeout time.Duration, m *localrun.Process) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	const every = 50 * time.Millisecond
	for i := 0; i < int(timeout/every)+1; i++ {
		if m.Exited() {
			t.Fatalf("the manager exited: %v", m.ExitError())
		}
		if got := storeCount(ctx, storeURL, room); got >= n {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the store holds %d events after %v, want %d", storeCount(context.Background(), storeURL, room), timeout, n)
		case <-time.After(every):
		}
	}
	t.Fatalf("the store never held %d events", n)
	return 0
}

// storeCount is the room's event count as the store says it, 0 while it cannot be read.
func storeCount(ctx context.Context, storeURL, room string) int64 {
	st, err := store.OpenReadOnly(ctx, storeURL)
	if err != nil {
		return 0
	}
	defer st.Close()
	r, err := st.Room(ctx, room)
	if err != nil {
		return 0
	}
	return r.Events
}

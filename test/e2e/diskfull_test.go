package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/storetest"
	"github.com/roomsync/roomsync/store"
)

// TestDiskFull: the manager's SQLite store sits on a tmpfs too small for the Dendrite room it
// converges. The pass that finds the disk full fails with the reason StoreFull and the
// database's own words; what was stored before is all still there and consistent (inspect
// --check); nothing more is stored while the disk stays full. Once the tmpfs grows, as a
// volume would, the manager resumes by itself and converges to Dendrite's room.
func TestDiskFull(t *testing.T) {
	d := startDendrite(t)
	room := d.seed(t, "", faultRoomEvents(t, 600))
	want := d.eventIDs(t, room)

	// The store is made first, so that the room's events alone fill what is left.
	disk := storetest.MountTmpfs(t, 64<<20)
	storeURL := "sqlite://" + filepath.Join(disk.Dir, "events.db")
	st, err := store.Open(context.Background(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	empty, _ := disk.Usage(t)
	room1 := int64(len(want)) * diskBytesPerEvent
	disk.Resize(t, empty+room1/3)

	env := startEnv(t)
	dir := t.TempDir()
	_, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "  membership:\n    join: Never\n", d)
	m := startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)

	// Two minutes, and more for the large rooms of `make soak`.
	patience := 2*time.Minute + time.Duration(len(want))*10*time.Millisecond
	full := waitReadyReason(t, env, "archive", "StoreFull", patience)
	used, size := disk.Usage(t)
	t.Logf("Ready %s/%s with %s of %s used: %s", full.Status, full.Reason, mib(used), mib(size), full.Message)
	if full.Status != "False" || !strings.Contains(full.Message, "database or disk is full") {
		t.Errorf("Ready %s, message %q: want False, in SQLite's words", full.Status, full.Message)
	}
	// The same reason on a Warning Event, for `kubectl get events` and alerting on Events.
	if out, err := env.Kubectl("get", "events", "--field-selector", "reason=StoreFull,type=Warning", "-o", "name"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("no Warning Event with reason StoreFull: %v %s", err, out)
	}
	held := storedIDs(t, storeURL, room)
	if len(held) == 0 || len(held) >= len(want) {
		t.Fatalf("the store holds %d of %d events when full: the disk filled too late or too early", len(held), len(want))
	}
	assertCheckClean(t, storeURL, room)
	// Nothing more is stored while the disk stays full, and the manager carries on.
	time.Sleep(3 * time.Second)
	if n := len(storedIDs(t, storeURL, room)); n != len(held) {
		t.Errorf("the store went from %d to %d events on a full disk", len(held), n)
	}
	if m.Exited() {
		t.Fatalf("the manager exited on a full disk: %v", m.ExitError())
	}

	t0 := time.Now()
	disk.Resize(t, empty+3*room1)
	waitArchiveReady(t, env, patience)
	used, size = disk.Usage(t)
	t.Logf("%d of %d events stored when the disk filled; Ready %v after it grew, with %s of %s used",
		len(held), len(want), time.Since(t0).Round(time.Second), mib(used), mib(size))
	assertStoreEquals(t, storeURL, room, d.eventIDs(t, room))
	after := map[string]bool{}
	for _, id := range storedIDs(t, storeURL, room) {
		after[id] = true
	}
	for _, id := range held {
		if !after[id] {
			t.Fatalf("event %s, stored before the disk filled, is gone", id)
		}
	}
	assertCheckClean(t, storeURL, room)
}

// diskBytesPerEvent is about what a message of a Dendrite room costs a SQLite store on disk
// while it converges: the row and its indexes, the state, and the write-ahead log that holds
// every page a transaction changed until a checkpoint. Measured: see TestDiskFull's log.
const diskBytesPerEvent = 8 << 10

// storedIDs lists the room's events in the store (inspect --event-ids).
func storedIDs(t *testing.T, storeURL, room string) []string {
	t.Helper()
	out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--event-ids")
	if code != 0 {
		t.Fatalf("inspect --event-ids exited %d", code)
	}
	return strings.Fields(out)
}

// assertCheckClean runs inspect --check: the room's bookkeeping against its rows.
func assertCheckClean(t *testing.T, storeURL, room string) {
	t.Helper()
	if out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--check"); code != 0 {
		t.Errorf("inspect --check exited %d: %s", code, out)
	}
}

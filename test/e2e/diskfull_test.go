package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/storetest"
)

// TestDiskFull: the manager's SQLite store sits on a tmpfs that fills up (is shrunk to what it
// holds) once a quarter of the Dendrite room it converges is stored. The pass that finds the
// disk full fails with the reason StoreFull and the database's own words, and
// roomsync_store_full turns 1; what was stored before is all still there and consistent
// (inspect --check); nothing more is stored while the disk stays full. Once the tmpfs grows,
// as a volume would, the manager resumes by itself and converges to Dendrite's room (and
// roomsync_store_full is 0 again).
func TestDiskFull(t *testing.T) {
	d := startDendrite(t)
	room := d.seed(t, "", faultRoomEvents(t, 600))
	want := d.eventIDs(t, room)

	// Roomy at first: the disk fills once the manager has stored part of the room.
	disk := storetest.MountTmpfs(t, 1<<30)
	storeURL := "sqlite://" + filepath.Join(disk.Dir, "events.db")

	env := startEnv(t)
	dir := t.TempDir()
	op, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "  membership:\n    join: Never\n", d)
	m := startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)
	// Two minutes, and more for the large rooms of `make soak`.
	patience := 2*time.Minute + time.Duration(len(want))*10*time.Millisecond
	// A quarter of the room stored, the disk has 64 KiB left: less than the next batch (its
	// pages go to SQLite's write-ahead log whole), whatever an event costs on disk.
	// The manifest's passes store 300 events each, a second apart, so the rest of the room
	// is still to come.
	waitStoreCount(t, storeURL, room, int64(len(want)/4), patience, m)
	disk.Shrink(t, 64<<10)
	if n := storeCount(t.Context(), storeURL, room); n >= int64(len(want)) {
		t.Fatalf("the whole room (%d events) was stored before the disk filled: the test was held up too long", n)
	}

	full := waitReadyReason(t, env, "archive", "StoreFull", patience)
	used, size := disk.Usage(t)
	t.Logf("Ready %s/%s with %s of %s used: %s", full.Status, full.Reason, mib(used), mib(size), full.Message)
	if full.Status != "False" || !strings.Contains(full.Message, "database or disk is full") {
		t.Errorf("Ready %s, message %q: want False, in SQLite's words", full.Status, full.Message)
	}
	// The series of the RoomSyncStoreFull alert says it too.
	assertStoreFullSeries(t, op.metricsURL, 1)
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
	disk.Resize(t, 1<<30)
	waitArchiveReady(t, env, patience)
	used, size = disk.Usage(t)
	t.Logf("%d of %d events stored when the disk filled; Ready %v after it grew, with %s of %s used",
		len(held), len(want), time.Since(t0).Round(time.Second), mib(used), mib(size))
	assertStoreEquals(t, storeURL, room, d.eventIDs(t, room))
	assertStoreFullSeries(t, op.metricsURL, 0)
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

// assertStoreFullSeries checks the archive RoomSync's roomsync_store_full, which the
// manager sets at every pass: the RoomSyncStoreFull alert fires on it.
func assertStoreFullSeries(t *testing.T, metricsURL string, want float64) {
	t.Helper()
	if got, ok := scrape(t, metricsURL).by("roomsync_store_full", "name", nil)["archive"]; !ok || got != want {
		t.Errorf("roomsync_store_full of archive: %v (served: %v), want %v", got, ok, want)
	}
}

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

package cli

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fsck"
	"github.com/roomsync/roomsync/internal/storetest"
	"github.com/roomsync/roomsync/store"
)

// runCLI runs roomsync with args and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := mainNoPanic(t, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// syncedStore is a SQLite store that `roomsync sync` filled with a 400-event room from a
// fixture peer.
func syncedStore(t *testing.T) (path, storeURL string, room *fixturepeer.Room, peer *fixturepeer.Peer) {
	t.Helper()
	room = fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 140, Events: 400, JoinRate: 0.03})
	peer = fixturepeer.Start(t, room)
	path = filepath.Join(t.TempDir(), "events.db")
	storeURL = "sqlite://" + path
	syncWithCLI(t, storeURL, room, peer)
	if code, out, errOut := runCLI(t, "fsck", "--store", storeURL); code != ExitOK || !strings.Contains(out, ": clean") {
		t.Fatalf("fsck of the synced store: exit %d\n%s%s", code, out, errOut)
	}
	return path, storeURL, room, peer
}

func execSQLite(t *testing.T, path, q string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// TestFsckRepairsLostRowsThenSyncRefetchesThem: 282 of 400 event rows deleted behind the
// store's back. inspect and sync no longer trust the counters, and say to run fsck; fsck
// exits 1 with the counts, --repair exits 0, and sync then fetches the lost events back.
func TestFsckRepairsLostRowsThenSyncRefetchesThem(t *testing.T) {
	path, storeURL, room, peer := syncedStore(t)
	roomID := string(room.ID)
	ids := make([]string, len(room.Events))
	for i, e := range room.Events {
		ids[i] = string(e.ID)
	}
	rand.New(rand.NewPCG(140, 282)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	execSQLite(t, path, "DELETE FROM events WHERE event_id IN ('"+strings.Join(ids[:282], "','")+"')")

	code, out, errOut := runCLI(t, "inspect", "--store", storeURL, "--room", roomID, "--json")
	var report roomReport
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != ExitFailed || report.Converged ||
		!strings.Contains(errOut, "roomsync fsck") || !strings.Contains(strings.Join(report.Problems, "\n"), "event count is 400, the rows say 118") {
		t.Fatalf("inspect of the damaged room: exit %d, %+v, %v\n%s", code, report, err, errOut)
	}
	keyFile := filepath.Join(t.TempDir(), "signing.key")
	writeFile(t, keyFile, mfed.GenerateSigningKey().SynapseString()+"\n")
	syncArgs := []string{"sync", "--store", storeURL, "--server-name", "cli.test", "--signing-key", keyFile,
		"--insecure-skip-tls-verify", "--join", "never", "--timeout", "1m",
		"--peer", peer.ServerName() + "=" + peer.URL(), "--room", roomID}
	if code, _, errOut := runCLI(t, syncArgs...); code != ExitFailed || !strings.Contains(errOut, "roomsync fsck") ||
		!strings.Contains(errOut, "not synced") {
		t.Fatalf("sync of the damaged room: exit %d\n%s", code, errOut)
	}

	code, out, errOut = runCLI(t, "fsck", "--store", storeURL)
	if code != ExitFailed || !strings.Contains(out, "event count is 400, the rows say 118") || !strings.Contains(out, "--repair") {
		t.Fatalf("fsck: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "fsck", "--store", storeURL, "--repair", "--json")
	var rep fsck.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != ExitOK || !rep.Summary.Clean ||
		rep.Rooms[0].Repair == nil || rep.Rooms[0].Repair.GapsAdded == 0 {
		t.Fatalf("fsck --repair: exit %d, %v\n%s%s", code, err, out, errOut)
	}

	if code, _, errOut := runCLI(t, syncArgs...); code != ExitOK {
		t.Fatalf("sync after the repair: exit %d\n%s", code, errOut)
	}
	code, out, _ = runCLI(t, "inspect", "--store", storeURL, "--room", roomID, "--event-ids")
	if got := strings.Fields(out); code != ExitOK || len(got) != 400 {
		t.Fatalf("inspect --event-ids after the sync: exit %d, %d events", code, len(got))
	}
	if code, out, errOut := runCLI(t, "inspect", "--store", storeURL, "--room", roomID, "--check"); code != ExitOK {
		t.Fatalf("inspect --check: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, "fsck", "--store", storeURL, "--room", roomID); code != ExitOK {
		t.Fatalf("fsck after the sync: exit %d\n%s%s", code, out, errOut)
	}
}

// TestFsckBeyondRepair: the events table dropped, or garbage over one of its pages: fsck
// says what is wrong and that it cannot repair it, with or without --repair (exit 1), and
// points to a backup or a re-sync.
func TestFsckBeyondRepair(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"events dropped", func(t *testing.T, path string) { execSQLite(t, path, "DROP TABLE events") }, "table events is missing"},
		{"page damaged", func(t *testing.T, path string) { storetest.DamageSQLitePage(t, path, "events") }, "damaged below its rows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, storeURL, room, _ := syncedStore(t)
			c.damage(t, path)
			for _, args := range [][]string{{"fsck", "--store", storeURL}, {"fsck", "--store", storeURL, "--repair"}} {
				code, out, errOut := runCLI(t, args...)
				if code != ExitFailed || !strings.Contains(out, c.want) || !strings.Contains(out, "fsck cannot repair this store") ||
					!strings.Contains(out, "backup") {
					t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
				}
			}
			if code, out, errOut := runCLI(t, "inspect", "--store", storeURL, "--room", string(room.ID)); code != ExitFailed ||
				strings.Contains(out, "converged:            true") {
				t.Errorf("inspect of a damaged store: exit %d\n%s%s", code, out, errOut)
			}
		})
	}
}

// TestFsckBadInput: exit 2, and no store created on a mistyped path; an empty store is clean.
func TestFsckBadInput(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo.db")
	for _, args := range [][]string{
		{"fsck"},
		{"fsck", "--store", "mysql://x"},
		{"fsck", "--store", "sqlite://" + missing},
		{"fsck", "--store", "sqlite://" + missing, "--room", "not-a-room"},
		{"fsck", "--store", "sqlite://" + missing, "--workers", "-1"},
		{"fsck", "--store", "sqlite://" + missing, "extra"},
	} {
		if code, _, errOut := runCLI(t, args...); code != ExitBadInput || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("fsck created a store on a mistyped path")
	}
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	st, err := store.Open(t.Context(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if code, out, errOut := runCLI(t, "fsck", "--store", storeURL, "--room", "!elsewhere:x"); code != ExitBadInput {
		t.Errorf("fsck of a room the store does not hold: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, "fsck", "--store", storeURL); code != ExitOK || !strings.Contains(out, "0 rooms") {
		t.Errorf("fsck of an empty store: exit %d\n%s%s", code, out, errOut)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// TestSyncFromFixturePeers runs the binary from the command line against two in-process
// fixture peers that each hold half of a forked room, one of them listed first but dead.
func TestSyncFromFixturePeers(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 31, Events: 3000, Heads: 2})
	maxDepth := room.Stats().MaxDepth
	dead := fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Status: 500}))
	low := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(0, maxDepth/2)))
	high := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(maxDepth/2-20, maxDepth)))

	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	args := []string{"sync", "--store", storeURL, "--server-name", "cli.test", "--signing-key", keyFile,
		"--insecure-skip-tls-verify", "--room", string(room.ID)}
	// The dead peer by URL; the others by their server names alone (127.0.0.1:port), as the
	// README tells users to name peers.
	args = append(args, "--peer", dead.ServerName()+"="+dead.URL(), "--peer", low.ServerName(), "--peer", high.ServerName())
	if _, code := run(t, 2*time.Minute, roomsyncBin, args...); code != 0 {
		t.Fatalf("roomsync sync exited %d, want 0", code)
	}

	out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--json")
	if code != 0 {
		t.Fatalf("inspect exited %d", code)
	}
	var report struct {
		Events              int      `json:"events"`
		BackwardExtremities []string `json:"backward_extremities"`
		ForwardExtremities  []string `json:"forward_extremities"`
		Converged           bool     `json:"converged"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatal(err)
	}
	if report.Events != len(room.Events) || len(report.BackwardExtremities) != 0 || !report.Converged || len(report.ForwardExtremities) != len(room.Heads()) {
		t.Errorf("inspect --json: %s\nwant %d events, %d forward extremities, none backward", out, len(room.Events), len(room.Heads()))
	}
	ids, _ := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--event-ids")
	want := room.SortedIDs()
	got := strings.Fields(ids)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inspect --event-ids is not the room in topological order (%d vs %d IDs)", len(got), len(want))
	}

	if out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--check"); code != 0 || !strings.Contains(out, "consistent") {
		t.Errorf("inspect --check exited %d: %s", code, out)
	}

	// A peer that holds nothing of the room and one that is dead: exit 1, not converged.
	empty := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldNone()))
	args2 := []string{"sync", "--store", "sqlite://" + filepath.Join(dir, "other.db"), "--server-name", "cli.test",
		"--signing-key", keyFile, "--insecure-skip-tls-verify", "--room", string(room.ID),
		"--peer", dead.ServerName() + "=" + dead.URL(), "--peer", empty.ServerName() + "=" + empty.URL()}
	if _, code := run(t, 2*time.Minute, roomsyncBin, args2...); code != 1 {
		t.Errorf("sync with nothing to get exited %d, want 1", code)
	}
}

// TestSyncWaitsForPeerThatIsDown: the partial-peer scenario from the command line, with
// fixture peers. With full.test down, sync exits 1 saying it waits for full.test (and nothing
// is unfillable); the next run after full.test is back converges.
func TestSyncWaitsForPeerThatIsDown(t *testing.T) {
	pp := fixturepeer.StartPartialPeers(t, 27)
	pp.Full.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect})
	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	args := []string{"sync", "--store", storeURL, "--server-name", "cli.test", "--signing-key", keyFile,
		"--insecure-skip-tls-verify", "--room", string(pp.Room.ID), "--timeout", "40s",
		"--peer", "full.test=" + pp.Full.URL(), "--peer", "late.test=" + pp.Late.URL()}

	_, progress, code := runCapture(t, time.Minute, roomsyncBin, args...)
	if code != 1 {
		t.Fatalf("sync with full.test down exited %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(progress), "\n")
	last := ""
	for _, l := range lines {
		if strings.Contains(l, "roomsync: pass ") {
			last = l
		}
	}
	// The gaps wait for full.test itself, or for its signing key (late.test vouches for no one).
	if _, waiting, _ := strings.Cut(last, "; waiting for "); !strings.Contains(waiting, "full.test") || !strings.Contains(last, " 0 unfillable") {
		t.Errorf("last progress line %q: want it waiting for full.test, nothing unfillable", last)
	}

	pp.Full.ClearFaults()
	if _, progress, code := runCapture(t, time.Minute, roomsyncBin, args...); code != 0 {
		t.Fatalf("sync after full.test returned exited %d, want 0:\n%s", code, tail(progress, 2000))
	}
	out, _ := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(pp.Room.ID), "--event-ids")
	if got := strings.Fields(out); len(got) != len(pp.Room.Events) {
		t.Errorf("store holds %d events, the room %d", len(got), len(pp.Room.Events))
	}
}

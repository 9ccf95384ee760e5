package e2e

import (
	"encoding/json"
	"fmt"
	"os"
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
	keyOut, _ := run(t, time.Minute, roomsyncBin, "keygen")
	keyFile := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyFile, []byte(keyOut), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	args := []string{"sync", "--store", storeURL, "--server-name", "cli.test", "--signing-key", keyFile,
		"--insecure-skip-tls-verify", "--room", string(room.ID)}
	for _, p := range []*fixturepeer.Peer{dead, low, high} {
		args = append(args, "--peer", p.ServerName()+"="+p.URL())
	}
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

	// A peer that holds nothing of the room and one that is dead: exit 1, not converged.
	empty := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldNone()))
	args2 := []string{"sync", "--store", "sqlite://" + filepath.Join(dir, "other.db"), "--server-name", "cli.test",
		"--signing-key", keyFile, "--insecure-skip-tls-verify", "--room", string(room.ID),
		"--peer", dead.ServerName() + "=" + dead.URL(), "--peer", empty.ServerName() + "=" + empty.URL()}
	if _, code := run(t, 2*time.Minute, roomsyncBin, args2...); code != 1 {
		t.Errorf("sync with nothing to get exited %d, want 1", code)
	}
}

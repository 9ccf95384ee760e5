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

// TestInspectStateAt: a room whose peer serves well-signed events that break the
// authorization rules. After a sync, inspect counts them as rejected, --state-at names the
// rule an event broke, and the state it prints keeps the room's own power levels (the grabs
// were rejected) and no stranger.
func TestInspectStateAt(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 33, Events: 800, JoinRate: 0.03, UnauthorizedRate: 0.02})
	peer := fixturepeer.Start(t, room)
	dir := t.TempDir()
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	if _, code := run(t, 2*time.Minute, roomsyncBin, "sync", "--store", storeURL, "--server-name", "cli.test",
		"--signing-key", signingKey(t, dir), "--insecure-skip-tls-verify", "--room", string(room.ID), "--peer", peer.ServerName()); code != 0 {
		t.Fatalf("roomsync sync exited %d, want 0", code)
	}
	out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--json")
	var report struct {
		Events, Rejected int
	}
	if code != 0 || json.Unmarshal([]byte(out), &report) != nil || report.Rejected != len(room.Unauthorized) || report.Events != len(room.Events) {
		t.Fatalf("inspect --json exited %d: %s; want %d events, %d rejected", code, out, len(room.Events), len(room.Unauthorized))
	}

	type stateAt struct {
		Rejected string `json:"rejected"`
		State    []struct {
			Type       string `json:"type"`
			StateKey   string `json:"state_key"`
			EventID    string `json:"event_id"`
			Membership string `json:"membership"`
		} `json:"state"`
	}
	read := func(eventID string) stateAt {
		t.Helper()
		out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--state-at", eventID, "--json")
		var s stateAt
		if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
			t.Fatalf("inspect --state-at %s exited %d: %s", eventID, code, out)
		}
		return s
	}
	rejectedSeen := 0
	for _, e := range room.Events {
		rule, bad := room.Unauthorized[e.ID]
		if !bad {
			continue
		}
		if s := read(string(e.ID)); !strings.Contains(s.Rejected, "fail "+rule+":") {
			t.Errorf("--state-at %s: rejected %q, want rule %s", e.ID, s.Rejected, rule)
		}
		if rejectedSeen++; rejectedSeen == 3 {
			break
		}
	}
	last := room.Events[len(room.Events)-1]
	s := read(string(last.ID))
	joined := 0
	for _, e := range s.State {
		switch {
		case e.Type == "m.room.power_levels" && e.EventID != string(room.Events[2].ID):
			t.Errorf("the state keeps power levels %s, not the room's own %s", e.EventID, room.Events[2].ID)
		case e.Type == "m.room.member" && strings.HasPrefix(e.StateKey, "@stranger"):
			t.Errorf("a stranger is in the state: %+v", e)
		case e.Type == "m.room.member" && e.Membership == "join":
			joined++
		}
	}
	if joined < 3 {
		t.Errorf("%d joined members in the state at the last event: %+v", joined, s.State)
	}
	text, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", string(room.ID), "--state-at", string(last.ID))
	if code != 0 || !strings.Contains(text, "m.room.create\t\t") || !strings.Contains(text, "\tjoin\n") {
		t.Errorf("inspect --state-at (text) exited %d:\n%s", code, text)
	}
}

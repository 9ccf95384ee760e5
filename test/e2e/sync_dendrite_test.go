package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSyncConvergesFromDendrite runs `roomsync sync` against a real Dendrite, named only by
// its server name, holding a world-readable room of over 1,000 events and compares the store with Dendrite's own view
// of the room, then adds messages and checks the next sync picks them up.
func TestSyncConvergesFromDendrite(t *testing.T) {
	d := startDendrite(t)
	room := d.seed(t, "", 1000)

	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	cert, key := selfSignedCert(t, dir)
	ourPort := freePorts(t, 1)[0]
	ourName := fmt.Sprintf("127.0.0.1:%d", ourPort)
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")

	syncArgs := []string{"sync",
		"--store", storeURL,
		"--server-name", ourName, "--signing-key", keyFile,
		// Dendrite verifies our requests with the key we serve here.
		"--listen", ourName, "--tls-cert", cert, "--tls-key", key,
		// Named as the README tells users to: by server name alone (an IP literal with a port,
		// on loopback), its self-signed certificate accepted.
		"--peer", d.serverName, "--insecure-skip-tls-verify",
		"--room", room,
	}
	check := func(wantAtLeast int) {
		t.Helper()
		if _, code := run(t, 5*time.Minute, roomsyncBin, syncArgs...); code != 0 {
			t.Fatalf("roomsync sync exited %d, want 0 (converged)", code)
		}
		want := d.eventIDs(t, room)
		if len(want) < wantAtLeast {
			t.Fatalf("Dendrite shows %d events, want at least %d", len(want), wantAtLeast)
		}
		out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--event-ids")
		if code != 0 {
			t.Fatalf("roomsync inspect --event-ids exited %d", code)
		}
		got := strings.Fields(out)
		if got[0] != want[0] {
			t.Errorf("first stored event %s, Dendrite's first (m.room.create) %s", got[0], want[0])
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			missing, extra := diff(want, got)
			t.Fatalf("store and Dendrite differ: %d missing from the store (%v…), %d the store has that Dendrite does not (%v…)",
				len(missing), head(missing), len(extra), head(extra))
		}

		out, code = run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--json")
		if code != 0 {
			t.Fatalf("roomsync inspect --json exited %d", code)
		}
		var report struct {
			RoomVersion         string   `json:"room_version"`
			Events              int      `json:"events"`
			BackwardExtremities []string `json:"backward_extremities"`
			Converged           bool     `json:"converged"`
		}
		if err := json.Unmarshal([]byte(out), &report); err != nil {
			t.Fatalf("inspect --json: %v\n%s", err, out)
		}
		if report.Events != len(want) || len(report.BackwardExtremities) != 0 || !report.Converged || report.RoomVersion != "11" {
			t.Errorf("inspect --json = %+v, want %d events, version 11, no backward extremities, converged", report, len(want))
		}
	}

	check(1000)
	// New messages on the peer: the next sync finds the new head and fills the gap to it.
	d.seed(t, room, 150)
	check(1150)
}

func diff(want, got []string) (missing, extra []string) {
	w := map[string]bool{}
	for _, id := range want {
		w[id] = true
	}
	g := map[string]bool{}
	for _, id := range got {
		g[id] = true
		if !w[id] {
			extra = append(extra, id)
		}
	}
	for _, id := range want {
		if !g[id] {
			missing = append(missing, id)
		}
	}
	return missing, extra
}

func head(ids []string) []string {
	if len(ids) > 3 {
		return ids[:3]
	}
	return ids
}

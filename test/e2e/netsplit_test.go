package e2e

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
)

// TestNetsplitForkFromTwoDendrites: two Dendrites hold one room forked by a netsplit (each
// sent a branch of 150 messages while the other was down, then they exchanged them:
// dendritepeer.SeedNetsplit, hack/dendrite.sh seed-netsplit); `roomsync sync` from both stores
// exactly the events both Dendrites show, and each Dendrite answered part of the /backfill
// requests (the two branches are two gaps, shared between the peers). The small version of
// the forked room of hack/bench-dendrite.sh, which times one peer against two.
func TestNetsplitForkFromTwoDendrites(t *testing.T) {
	const branch = 150
	a, b := startDendrite(t), startDendrite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t0 := time.Now()
	fr, err := dendritepeer.SeedNetsplit(ctx, a.peer, b.peer, dendritepeer.NetsplitOptions{Count: branch})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("netsplit room %s: %d events on both Dendrites, seeded in %v", fr.RoomID, len(fr.Events), time.Since(t0).Round(time.Millisecond))
	if len(fr.Events) < 2*branch+6 || len(fr.BranchA) != branch || len(fr.BranchB) != branch {
		t.Fatalf("%d events, branches of %d and %d: want two branches of %d and the room's creation", len(fr.Events), len(fr.BranchA), len(fr.BranchB), branch)
	}
	// Each branch is a chain of its own server's messages: the fork is long on both sides.
	if fr.BranchA[0] == fr.BranchB[0] {
		t.Fatalf("the branches share their first event")
	}

	us := newSyncIdentity(t, a, b)
	args := []string{"sync", "--store", us.storeURL, "--server-name", us.name, "--signing-key", us.keyFile,
		"--listen", us.name, "--tls-cert", us.cert, "--tls-key", us.key, "--insecure-skip-tls-verify",
		"--room", fr.RoomID, "--timeout", "3m", "--peer", a.serverName, "--peer", b.serverName,
		// As hack/bench-dendrite.sh syncs it: not joined, the room's first events (which a
		// Dendrite strips for a server not in the room) held redacted, the room unchanged.
		"--join", "never"}
	_, progress, code := runCapture(t, 4*time.Minute, roomsyncBin, args...)
	if code != 0 {
		t.Fatalf("roomsync sync exited %d:\n%s", code, tail(progress, 3000))
	}

	// The truth is what both Dendrites show, read again after the sync.
	idsA, idsB := a.eventIDs(t, fr.RoomID), b.eventIDs(t, fr.RoomID)
	if !sameSet(idsA, idsB) || !sameSet(idsA, fr.Events) {
		t.Fatalf("the Dendrites show different events: A %d, B %d, %d when seeded", len(idsA), len(idsB), len(fr.Events))
	}
	assertStoreEquals(t, us.storeURL, fr.RoomID, idsA)

	// `roomsync sync` ends with a line a peer: "roomsync: peer NAME answered N requests (B /backfill)".
	for _, d := range []*dendrite{a, b} {
		m := regexp.MustCompile(`(?m)^roomsync: peer ` + regexp.QuoteMeta(d.serverName) + ` answered (\d+) requests \((\d+) /backfill\)$`).FindStringSubmatch(progress)
		if m == nil {
			t.Fatalf("no requests answered by %s in the sync's output:\n%s", d.serverName, tail(progress, 3000))
		}
		n, _ := strconv.Atoi(m[2])
		t.Logf("%s answered %s requests, %d /backfill", d.serverName, m[1], n)
		if n == 0 {
			t.Errorf("%s answered no /backfill request: the branches were not shared between the peers", d.serverName)
		}
	}
	if !slices.Contains(idsA, fr.BranchA[branch-1]) || !slices.Contains(idsA, fr.BranchB[branch-1]) {
		t.Errorf("the branches' last messages are not in the room")
	}
}

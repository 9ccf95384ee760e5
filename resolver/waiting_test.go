package resolver_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

func lateJoinRoom(t *testing.T, seed uint64) (room *fixturepeer.Room, full, late *fixturepeer.Peer) {
	t.Helper()
	pp := fixturepeer.StartPartialPeers(t, seed)
	return pp.Room, pp.Full, pp.Late
}

var fullDown = fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect}

// A gap that only a peer which is down can fill waits for that peer (and its key), is not
// written off as unfillable, and is filled on the first pass after the peer answers again,
// whatever back-off the passes in between left.
func TestGapWaitsForPeerThatIsDown(t *testing.T) {
	room, full, late := lateJoinRoom(t, 21)
	full.SetFaults(fullDown)
	h := newHarness(t, room, []*fixturepeer.Peer{full, late})

	results := h.syncUntilDone(5)
	last := results[len(results)-1]
	if last.Converged || last.Gaps == 0 {
		t.Fatalf("with full.test down: %+v; want gaps left", last)
	}
	if last.Unfillable != 0 {
		t.Errorf("%d gaps written off as unfillable although full.test was never asked", last.Unfillable)
	}
	for _, want := range []string{"peer full.test (", "the signing key of full.test"} {
		if !slices.ContainsFunc(last.WaitingFor, func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("waiting for %q; want an entry %q…", last.WaitingFor, want)
		}
	}
	gaps, err := h.store.BackwardExtremities(context.Background(), string(room.ID), store.BackwardFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gaps {
		if g.Unfillable || !strings.Contains(g.LastError, "full.test") || strings.Contains(g.LastError, "no peer holds it") {
			t.Errorf("gap %s: unfillable=%t, last error %q; want it waiting for full.test", g.EventID, g.Unfillable, g.LastError)
		}
	}

	// full.test comes back. The first pass that reaches it (once its back-off ends) fills
	// everything.
	full.ClearFaults()
	full.ResetCounts()
	waitUntilReachable(t, h.res.Peers(), "full.test")
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged {
		t.Fatalf("first pass after full.test returned: %+v; want converged", r)
	}
	h.assertHolds(room.IDSet(), nil)
	if full.TotalCount() == 0 {
		t.Error("full.test was not asked")
	}
}

// A new run (a restarted `roomsync sync`, a new operator session) tries every gap once, even
// one an earlier run wrote off as unfillable with a long back-off.
func TestNewRunRetriesEveryGap(t *testing.T) {
	room, full, late := lateJoinRoom(t, 22)
	// full.test answers, but as a server that does not hold the early history would.
	full.SetFaults(
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointBackfill, Status: 404, ErrCode: "M_NOT_FOUND"},
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointEvent, Status: 404, ErrCode: "M_NOT_FOUND"},
	)
	late.ClearFaults()
	h := newHarness(t, room, []*fixturepeer.Peer{full, late})
	results := h.syncUntilDone(5)
	last := results[len(results)-1]
	if last.Converged || last.Unfillable == 0 || last.Unfillable != last.Gaps {
		t.Fatalf("first run: %+v; want every gap unfillable (every peer answered)", last)
	}
	gaps, err := h.store.BackwardExtremities(context.Background(), string(room.ID), store.BackwardFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gaps {
		if !strings.HasPrefix(g.UnfillableReason, "no peer holds it (2 answered)") || !g.NextAttemptAt.After(time.Now().Add(20*time.Second)) {
			t.Errorf("gap %s: %q until %v; want no peer holds it, 2 answered, retried in 30 s or more", g.EventID, g.UnfillableReason, g.NextAttemptAt)
		}
	}

	// The same run leaves the gaps to their back-off.
	full.ClearFaults()
	full.ResetCounts()
	if r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{}); err != nil || r.Converged {
		t.Fatalf("same run, next pass: %+v, %v; want the gaps left to their back-off", r, err)
	}
	if n := full.Count(fixturepeer.EndpointBackfill); n != 0 {
		t.Errorf("the same run asked for gaps in back-off %d times", n)
	}

	// A new run on the same store asks at once.
	h2 := newHarnessOnStore(t, room, []*fixturepeer.Peer{full, late}, h.store)
	r, err := h2.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged {
		t.Fatalf("new run, first pass: %+v; want converged", r)
	}
	h2.assertHolds(room.IDSet(), nil)
}

// waitUntilReachable waits, at most 15 s, for a backed-off peer's back-off to end.
func waitUntilReachable(t *testing.T, peers *resolver.PeerSet, name string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Contains(peers.Reachable(), name) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still backed off after 15 s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A peer that answers make_join but fails every /event is backed off for /event, longer at
// each failure, and its make_join answers do not reset that: passes in between do not ask.
func TestFailingEndpointBacksOffAcrossPasses(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 23, Events: 50, Linear: true})
	// /backfill answers that it has nothing (an answer, not a failure), or it would bring the
	// head that /event does not.
	peer := fixturepeer.Start(t, room, fixturepeer.WithFaults(
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointEvent, Status: 500},
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointBackfill, Status: 404, ErrCode: "M_NOT_FOUND"}))
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	var waits []time.Duration
	for pass := 1; pass <= 3; pass++ {
		before := peer.Count(fixturepeer.EndpointEvent)
		r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Converged || r.PeersAnswered != 1 {
			t.Fatalf("pass %d: %+v; want make_join answered and the head not fetched", pass, r)
		}
		if n := peer.Count(fixturepeer.EndpointEvent) - before; n != 1 {
			t.Fatalf("pass %d asked /event %d times, want once (then backed off)", pass, n)
		}
		// An immediate pass: make_join answers, /event is not asked.
		before = peer.Count(fixturepeer.EndpointEvent)
		if _, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{}); err != nil {
			t.Fatal(err)
		}
		if n := peer.Count(fixturepeer.EndpointEvent) - before; n != 0 {
			t.Fatalf("a pass right after asked the failing /event %d times", n)
		}
		wait := time.Until(h.res.Peers().NextAvailable())
		if pass > 1 && wait <= waits[len(waits)-1] {
			t.Fatalf("back-off did not grow: %v after %v", wait, waits)
		}
		waits = append(waits, wait)
		if pass < 3 {
			time.Sleep(wait + 10*time.Millisecond)
		}
	}
	t.Logf("/event back-offs: %v", waits)
}

// Where no peer names the room version (make_join refused), it comes from the create event;
// a peer serving a create event that does not verify is passed over for the next peer.
func TestRoomVersionFromTheNextPeersCreateEvent(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 24, Events: 120})
	refuseJoin := fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointMakeJoin, Status: 403, ErrCode: "M_FORBIDDEN"})
	liar := fixturepeer.Start(t, room, refuseJoin, fixturepeer.WithLies(fixturepeer.Lie{
		Kind: fixturepeer.LieBadSignature, Endpoint: fixturepeer.EndpointEvent, Events: []id.EventID{room.Create().ID},
	}))
	honest := fixturepeer.Start(t, room, refuseJoin)
	h := newHarness(t, room, []*fixturepeer.Peer{liar, honest})
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatalf("first pass: %v (the honest peer's create event was not asked for)", err)
	}
	if want := string(room.Create().JSON); r.RoomVersion == "" || !strings.Contains(want, `"room_version":"`+r.RoomVersion+`"`) {
		t.Errorf("room version %q, want the create event's", r.RoomVersion)
	}
	if honest.Count(fixturepeer.EndpointEvent) == 0 {
		t.Error("the honest peer was not asked for the create event")
	}
}

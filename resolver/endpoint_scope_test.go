package resolver_test

import (
	"context"
	"testing"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
)

// A peer that answers one room's make_join with 500 (Dendrite does, for a room it does not
// hold) is backed off for that room's make_join only: the next pass over another room it
// holds asks it and converges, while the failing room's back-off still holds. Found by the
// load test: with the back-off shared by every room of a RoomSync, such a peer kept the
// rooms it did hold from their heads, and they flapped out of Ready.
func TestEndpointBackoffIsPerRoom(t *testing.T) {
	held := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 41, Events: 60})
	failing := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 42, Events: 60})
	// Without /timestamp_to_event (as Dendrite v0.13.8), make_join is the only way to heads.
	peer := fixturepeer.Start(t, held, fixturepeer.WithRoom(failing, fixturepeer.HoldAll()), fixturepeer.WithoutTimestampToEvent(),
		fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointMakeJoin, Status: 500}))
	h := newHarness(t, held, []*fixturepeer.Peer{peer})
	ctx := context.Background()

	// Nothing of the failing room is known, so its pass ends without a room version.
	if r, _ := h.res.SyncRoom(ctx, string(failing.ID), resolver.History{}); r.PeersAnswered != 0 {
		t.Fatalf("the failing room's pass: %+v; want no heads", r)
	}
	peer.ClearFaults()
	r, err := h.res.SyncRoom(ctx, string(held.ID), resolver.History{})
	if err != nil || !r.Converged || r.Room.Events != 60 {
		t.Fatalf("the other room's pass, right after: %+v, %v; want it converged from the same peer", r, err)
	}
	before := peer.Count(fixturepeer.EndpointMakeJoin)
	if r, _ = h.res.SyncRoom(ctx, string(failing.ID), resolver.History{}); r.PeersAnswered != 0 {
		t.Fatalf("the failing room's next pass: %+v; want it still backed off", r)
	}
	if n := peer.Count(fixturepeer.EndpointMakeJoin) - before; n != 0 {
		t.Errorf("the failing room's make_join was asked %d times within its back-off", n)
	}
}

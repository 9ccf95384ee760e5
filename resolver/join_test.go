package resolver_test

import (
	"context"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
)

// A peer that behaves as Synapse does refuses a non-member every history request. IfNeeded
// joins on the first refusal (make_join, our signed join, send_join), stores the state and
// our join, and converges in the same pass; the peer saw a join that verifies with our key.
func TestIfNeededJoinsOnRefusal(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 51, Events: 400})
	peer := fixturepeer.StartSynapseLike(t, room, fixturepeer.WithJoinKey(ourServer, key.ID, key.Pub))
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinIfNeeded, key))

	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Membership != resolver.MembershipJoined || !peer.Joined(ourServer) {
		t.Fatalf("membership %q (%s), peer says joined %t; want joined", r.Membership, r.MembershipReason, peer.Joined(ourServer))
	}
	if n := peer.Count(fixturepeer.EndpointSendJoin); n != 1 {
		t.Errorf("%d send_joins, want 1", n)
	}
	if !r.Converged {
		t.Fatalf("the pass that joined did not converge: %+v", r)
	}
	// Everything the peer holds, and our join on top of it.
	stored := h.storedIDs()
	for _, e := range room.Events {
		if !stored[e.ID] {
			t.Fatalf("event %s missing after the join", e.ID)
		}
	}
	if len(stored) != len(room.Events)+1 {
		t.Errorf("%d events stored, want the room's %d and our join", len(stored), len(room.Events))
	}
	h.assertAllValid()
}

// With Never, the refusals are the membership reason and nothing is joined.
func TestNeverReportsTheRefusal(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 52, Events: 100})
	peer := fixturepeer.StartSynapseLike(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinNever, key))
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Converged || r.Membership != resolver.MembershipNotJoined || !strings.Contains(r.MembershipReason, fixturepeer.ErrHostNotInRoom) {
		t.Errorf("result %+v; want not joined, with the refusal as the reason", r)
	}
	if n := peer.Count(fixturepeer.EndpointSendJoin); n != 0 || peer.Joined(ourServer) {
		t.Errorf("joined with the policy Never (%d send_joins)", n)
	}
}

// Always joins at the first pass, before pulling anything.
func TestAlwaysJoins(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 53, Events: 100})
	peer := fixturepeer.Start(t, room, fixturepeer.WithJoinKey(ourServer, key.ID, key.Pub))
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinAlways, key))
	results := h.syncUntilDone(5)
	if last := results[len(results)-1]; !last.Converged || last.Membership != resolver.MembershipJoined {
		t.Fatalf("last pass %+v; want joined and converged", last)
	}
	if n := peer.Count(fixturepeer.EndpointSendJoin); n != 1 {
		t.Errorf("%d send_joins over %d passes, want exactly 1", n, len(results))
	}
}

// Events shown redacted to a non-member call for a join under IfNeeded; once joined, the
// redacted copies are fetched again, and a peer that now shows them in full upgrades them.
func TestRedactedCopiesAreFetchedAgainAfterJoining(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 54, Events: 200})
	var stripped []id.EventID
	for _, e := range room.Events[100:120] {
		stripped = append(stripped, e.ID)
	}
	peer := fixturepeer.Start(t, room, fixturepeer.WithJoinKey(ourServer, key.ID, key.Pub),
		fixturepeer.WithLies(fixturepeer.Lie{Kind: fixturepeer.LieStripped, Events: stripped}))
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinIfNeeded, key))
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Membership != resolver.MembershipJoined || r.Room.Redacted == 0 {
		t.Fatalf("first pass: membership %q, %d redacted; want joined because of the redacted copies", r.Membership, r.Room.Redacted)
	}
	// The peer now shows members the events in full; a new run fetches them again.
	peer.ClearLies()
	peer.ResetCounts()
	h2 := newHarnessOnStore(t, room, []*fixturepeer.Peer{peer}, h.store, withJoin(resolver.JoinIfNeeded, key))
	r, err = h2.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Room.Redacted != 0 || !r.Converged {
		t.Fatalf("after fetching again: %d redacted, converged %t", r.Room.Redacted, r.Converged)
	}
	if n := peer.Count(fixturepeer.EndpointSendJoin); n != 0 {
		t.Errorf("joined again (%d send_joins) although already joined", n)
	}
}

package store

import (
	"errors"
	"slices"
	"testing"
)

func testMembership(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ctx := t.Context()
	const us = "@roomsync:archive.example.org"
	if _, err := s.Membership(ctx, room, us); !errors.Is(err, ErrNotFound) {
		t.Fatalf("membership before any: %v, want ErrNotFound", err)
	}
	for _, m := range []Membership{
		{RoomID: room, UserID: us, State: MembershipJoinFailed, Reason: "peer.example: 403 M_FORBIDDEN"},
		{RoomID: room, UserID: us, State: MembershipJoined, EventID: "$join"},
	} {
		if err := s.SetMembership(ctx, m); err != nil {
			t.Fatal(err)
		}
		got, err := s.Membership(ctx, room, us)
		if err != nil || got.State != m.State || got.Reason != m.Reason || got.EventID != m.EventID || got.UpdatedAt.IsZero() {
			t.Fatalf("after setting %+v: %+v, %v", m, got, err)
		}
	}
	if err := s.SetMembership(ctx, Membership{RoomID: room, UserID: us}); err == nil {
		t.Error("a membership without a state was recorded")
	}

	// Redacted copies, in topological order, until they are upgraded.
	chain := linearChain(room, 6, 100)
	for i := range chain {
		if i%2 == 1 {
			chain[i].Redacted = true
		}
	}
	mustInsert(t, s, chain)
	ids := func(after *Position, limit int) []string {
		t.Helper()
		ps, err := s.RedactedEvents(ctx, room, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.EventID)
		}
		return out
	}
	want := []string{chain[1].ID, chain[3].ID, chain[5].ID}
	if got := ids(nil, 10); !slices.Equal(got, want) {
		t.Fatalf("RedactedEvents = %v; want %v", got, want)
	}
	if got := ids(nil, 2); !slices.Equal(got, want[:2]) {
		t.Fatalf("RedactedEvents with limit 2 = %v", got)
	}
	if got := ids(&Position{Depth: chain[3].Depth, EventID: chain[3].ID}, 10); !slices.Equal(got, want[2:]) {
		t.Fatalf("RedactedEvents after %s = %v", chain[3].ID, got)
	}
	full := chain[3]
	full.Redacted = false
	mustInsert(t, s, []Event{full})
	if got := ids(nil, 10); !slices.Equal(got, []string{chain[1].ID, chain[5].ID}) {
		t.Fatalf("after an upgrade: %v", got)
	}
}

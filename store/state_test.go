package store

import (
	"errors"
	"maps"
	"testing"
)

// State groups and the state of events: numbers allocated without reuse, groups stored whole
// or as deltas and read back as stored, each event's state recorded once, rejections counted,
// and the events still without state listed in topological order.
func testState(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ctx := t.Context()
	chain := linearChain(room, 5, 100)
	mustInsert(t, s, chain)

	first, err := s.AllocateStateGroups(ctx, room, 2)
	if err != nil || first != 1 {
		t.Fatalf("first allocation: %d, %v; want 1", first, err)
	}
	if next, err := s.AllocateStateGroups(ctx, room, 1); err != nil || next != 3 {
		t.Fatalf("second allocation: %d, %v; want 3", next, err)
	}
	create := StateKey{Type: "m.room.create"}
	topic := StateKey{Type: "m.room.topic"}
	whole := StateGroup{No: 1, Entries: map[StateKey]string{create: chain[0].ID, topic: chain[1].ID}}
	delta := StateGroup{No: 2, PrevGroup: 1, Chain: 1, Entries: map[StateKey]string{topic: ""}}
	err = s.SaveState(ctx, room, []StateGroup{whole, delta}, []EventState{
		{EventID: chain[2].ID, Before: 1, After: 1},
		{EventID: chain[3].ID, Before: 1, After: 2},
		{EventID: chain[4].ID, Before: 2, After: 2, Rejected: "auth_state: 6: sender is not a member of the room"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []StateGroup{whole, delta} {
		got, err := s.StateGroup(ctx, room, want.No)
		if err != nil || got.PrevGroup != want.PrevGroup || got.Chain != want.Chain || !maps.Equal(got.Entries, want.Entries) {
			t.Errorf("group %d: %+v, %v; want %+v", want.No, got, err, want)
		}
	}
	if _, err := s.StateGroup(ctx, room, 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("a group never saved: %v, want ErrNotFound", err)
	}

	// A second writer's result for an event with state already changes nothing.
	if err := s.SaveState(ctx, room, nil, []EventState{{EventID: chain[4].ID, Before: 1, After: 1}}); err != nil {
		t.Fatal(err)
	}
	states, err := s.EventStates(ctx, []string{chain[0].ID, chain[3].ID, chain[4].ID})
	if err != nil {
		t.Fatal(err)
	}
	if st := states[chain[4].ID]; st.Before != 2 || st.Rejected == "" {
		t.Errorf("rejected event's state %+v", st)
	}
	if st := states[chain[3].ID]; st.Before != 1 || st.After != 2 || st.Rejected != "" {
		t.Errorf("state event's state %+v", st)
	}
	if st := states[chain[0].ID]; st.Before != 0 {
		t.Errorf("an event without state has %+v", st)
	}
	r, err := s.Room(ctx, room)
	if err != nil || r.Rejected != 1 {
		t.Errorf("room %+v, %v; want 1 rejected", r, err)
	}
	without, err := s.EventsWithoutState(ctx, room, nil, 10)
	if err != nil || len(without) != 2 || without[0].ID != chain[0].ID || without[1].ID != chain[1].ID {
		t.Errorf("events without state: %v, %v; want the first two", without, err)
	}
	if err := s.SaveState(ctx, room, []StateGroup{{No: 0}}, nil); err == nil {
		t.Error("a group numbered 0 was saved")
	}
	// The state after an event not held, as a peer said it: recorded with its group, and
	// replaced by a later answer.
	for i, source := range []string{"a.example", "b.example"} {
		no, err := s.AllocateStateGroups(ctx, room, 1)
		if err != nil {
			t.Fatal(err)
		}
		g := StateGroup{No: no, Entries: map[StateKey]string{create: chain[0].ID, topic: "$old-topic"}}
		if err := s.SaveBoundaryState(ctx, room, "$missing", g, source); err != nil {
			t.Fatal(err)
		}
		got, err := s.BoundaryStates(ctx, room)
		if b := got["$missing"]; err != nil || len(got) != 1 || b.Group != no || b.Source != source || b.FetchedAt.IsZero() {
			t.Fatalf("boundary states after save %d: %+v, %v", i, got, err)
		}
		if stored, err := s.StateGroup(ctx, room, no); err != nil || !maps.Equal(stored.Entries, g.Entries) {
			t.Errorf("the boundary group: %+v, %v", stored, err)
		}
	}
	if err := s.CheckConsistency(ctx, room); err != nil {
		t.Error(err)
	}
}

package store

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// roomWithState stores a forked room whose events all have a state (group 1, whole), the one
// at rejectedAt rejected, and returns its events.
func roomWithState(t *testing.T, s *sqlStore, n, rejectedAt int) []Event {
	t.Helper()
	events := forkyDAG(room, n, 200, 3)
	mustInsert(t, s, events)
	if _, err := s.AllocateStateGroups(t.Context(), room, 1); err != nil {
		t.Fatal(err)
	}
	states := make([]EventState, len(events))
	for i, e := range events {
		states[i] = EventState{EventID: e.ID, Before: 1, After: 1}
		if i == rejectedAt {
			states[i].Rejected = "auth_state: a test"
		}
	}
	group := StateGroup{No: 1, Entries: map[StateKey]string{{Type: "m.room.create"}: events[0].ID}}
	if err := s.SaveState(t.Context(), room, []StateGroup{group}, states); err != nil {
		t.Fatal(err)
	}
	return events
}

// withoutState returns which of events have no state.
func withoutState(t *testing.T, s Store, events []Event) map[string]bool {
	t.Helper()
	states, err := s.EventStates(t.Context(), eventIDs(events))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range events {
		if st, ok := states[e.ID]; ok && st.Before == 0 {
			out[e.ID] = true
		}
	}
	return out
}

// descendantsIn returns the events of events that descend from any of from.
func descendantsIn(events []Event, from map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, e := range events { // topological: parents first
		for _, p := range e.PrevEvents {
			if from[p] || out[p] {
				out[e.ID] = true
			}
		}
	}
	return out
}

// TestRepairRoomTurnsLostRowsIntoGaps deletes a third of a room's rows behind the store's back:
// the repair makes the extremities and counters what the remaining rows say (every lost event
// a held one names is a gap again, and only those), clears the state of exactly the held
// descendants of lost events, and keeps the spent arrival numbers; the lost events inserted
// again give back the room as it was.
func TestRepairRoomTurnsLostRowsIntoGaps(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			events := roomWithState(t, s, 240, 200)
			before, err := s.Room(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			lost := map[string]bool{}
			var lostEvents []Event
			held := newModel()
			for i, e := range events {
				if i >= 60 && i%3 == 0 {
					lost[e.ID] = true
					lostEvents = append(lostEvents, e)
					continue
				}
				held.add(e)
			}
			execSQL(t, s, `DELETE FROM events WHERE event_id IN ('`+strings.Join(slices.Collect(maps.Keys(lost)), "','")+`')`)
			if problems, err := CheckRoom(ctx, s, room); err != nil || len(problems) == 0 {
				t.Fatalf("CheckRoom after the loss: %q, %v", problems, err)
			}

			res, err := RepairRoom(ctx, s, room, RepairPlan{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("repair: %d stale edges, %d gaps, %d states cleared, counters %q", res.StaleEdges, len(res.GapsAdded), res.StateInvalidated, res.Counters)
			if res.StaleEdges == 0 || len(res.GapsAdded) == 0 || len(res.Counters) == 0 || res.Deleted != 0 {
				t.Errorf("repair result %+v", res)
			}
			checkAgainstModel(t, s, room, held)
			if problems, err := CheckRoom(ctx, s, room); err != nil || len(problems) > 0 {
				t.Fatalf("CheckRoom after the repair: %q, %v", problems, err)
			}
			var remaining []Event
			for _, e := range events {
				if !lost[e.ID] {
					remaining = append(remaining, e)
				}
			}
			want := descendantsIn(events, lost)
			for id := range lost {
				delete(want, id)
			}
			if got := withoutState(t, s, remaining); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%d events without state, want the %d held descendants of lost events", len(got), len(want))
			}
			after, err := s.Room(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			if after.LastSeq != before.LastSeq {
				t.Errorf("last arrival number %d, was %d: numbers handed out are spent", after.LastSeq, before.LastSeq)
			}

			// A second repair finds nothing to do.
			if again, err := RepairRoom(ctx, s, room, RepairPlan{}); err != nil || again.Changed() {
				t.Errorf("second repair: %+v, %v", again, err)
			}
			mustInsert(t, s, lostEvents)
			full := newModel()
			full.add(events...)
			checkAgainstModel(t, s, room, full)
		})
	}
}

// TestRepairRoomDeletesWhatThePlanSays: an event the plan names is deleted and becomes a gap;
// one flagged redacted in error loses the flag; nothing else is deleted.
func TestRepairRoomDeletesWhatThePlanSays(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			events := linearChain(room, 50, 100)
			mustInsert(t, s, events)
			execSQL(t, s, `UPDATE events SET redacted = TRUE WHERE event_id = '`+events[10].ID+`'`)
			res, err := RepairRoom(ctx, s, room, RepairPlan{Delete: []string{events[30].ID, "$not-held:example.org"},
				Unredact: []string{events[10].ID}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Deleted != 1 || res.Unredacted != 1 || !slices.Equal(res.GapsAdded, []string{events[30].ID}) {
				t.Errorf("repair result %+v", res)
			}
			m := newModel()
			m.add(slices.Delete(slices.Clone(events), 30, 31)...)
			checkAgainstModel(t, s, room, m)
			if r, err := s.Room(ctx, room); err != nil || r.Redacted != 0 {
				t.Errorf("room %+v, %v", r, err)
			}
		})
	}
}

// TestRepairRoomState: a state group holding a rejected event, the groups built on it, and an
// event whose state group is missing are found by CheckRoom; the repair removes the wrong
// groups and clears the state of their users and of what descends from them.
func TestRepairRoomState(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			events := linearChain(room, 40, 100)
			mustInsert(t, s, events)
			if _, err := s.AllocateStateGroups(ctx, room, 3); err != nil {
				t.Fatal(err)
			}
			topic := StateKey{Type: "m.room.topic"}
			groups := []StateGroup{
				{No: 1, Entries: map[StateKey]string{{Type: "m.room.create"}: events[0].ID}},
				{No: 2, PrevGroup: 1, Chain: 1, Entries: map[StateKey]string{topic: events[20].ID}},
				{No: 3, PrevGroup: 2, Chain: 2, Entries: map[StateKey]string{topic: events[25].ID}},
			}
			var states []EventState
			for i, e := range events {
				st := EventState{EventID: e.ID, Before: 1, After: 1}
				switch {
				case i == 20:
					st.Rejected = "auth_state: a test" // and yet in group 2: the fault
				case i > 20 && i <= 25:
					st.Before, st.After = 2, 2
				case i > 25:
					st.Before, st.After = 3, 3
				}
				states = append(states, st)
			}
			if err := s.SaveState(ctx, room, groups, states); err != nil {
				t.Fatal(err)
			}
			execSQL(t, s, `UPDATE events SET state_before = 99 WHERE event_id = '`+events[30].ID+`'`)
			problems, err := CheckRoom(ctx, s, room)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"1 events have a state group the room lacks", "1 rejected events are part of a state"} {
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
					t.Errorf("CheckRoom %q lacks %q", problems, want)
				}
			}
			res, err := RepairRoom(ctx, s, room, RepairPlan{})
			if err != nil {
				t.Fatal(err)
			}
			if problems, err := CheckRoom(ctx, s, room); err != nil || len(problems) > 0 {
				t.Fatalf("CheckRoom after the repair: %q, %v (repair %+v)", problems, err, res)
			}
			// The rejected event 20 and all that follows lost its state; 0 to 19 keep theirs.
			got := withoutState(t, s, events)
			for i, e := range events {
				if got[e.ID] != (i >= 20) {
					t.Errorf("event %d: without state %t", i, got[e.ID])
				}
			}
			for _, no := range []int64{2, 3} {
				if _, err := s.StateGroup(ctx, room, no); err == nil {
					t.Errorf("group %d survived", no)
				}
			}
			if r, err := s.Room(ctx, room); err != nil || r.Rejected != 0 {
				t.Errorf("room %+v, %v: the rejection goes with the state", r, err)
			}
		})
	}
}

// TestRepairRoomWithoutRow: events whose room row is gone get the row back, counted from
// them.
func TestRepairRoomWithoutRow(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			events := forkyDAG(room, 80, 100, 5)
			mustInsert(t, s, events)
			execSQL(t, s, `DELETE FROM rooms`)
			res, err := RepairRoom(t.Context(), s, room, RepairPlan{})
			if err != nil || !res.RoomCreated {
				t.Fatalf("repair: %+v, %v", res, err)
			}
			m := newModel()
			m.add(events...)
			checkAgainstModel(t, s, room, m)
		})
	}
}

package resolver_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/stateres"
)

// A forked room whose peer serves, among honest events, well-signed events that break the
// authorization rules (messages from strangers, power grabs): after syncing, every event has
// its state; exactly those events are rejected, each with the rule it broke, and counted; the
// state before every event is what the room's history says it is.
func TestStateAndAuthorization(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 95, Events: 600, JoinRate: 0.03, RenameRate: 0.02, UnauthorizedRate: 0.03})
	if len(room.Unauthorized) < 5 {
		t.Fatalf("the fixture made %d unauthorized events; want a few", len(room.Unauthorized))
	}
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	results := h.syncUntilDone(10)
	rejected := 0
	for _, r := range results {
		rejected += r.Rejected[resolver.RejectAuthEvents] + r.Rejected[resolver.RejectAuthState]
	}
	last := results[len(results)-1]
	if !last.Converged || last.Room.Rejected != int64(len(room.Unauthorized)) || rejected != len(room.Unauthorized) {
		t.Fatalf("last pass %+v, %d rejections counted; want converged with %d rejected", last, rejected, len(room.Unauthorized))
	}

	want := expectedStates(room)
	ctx := context.Background()
	for i, e := range room.Events {
		state, own, err := resolver.StateBefore(ctx, h.store, string(e.ID))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if rule, bad := room.Unauthorized[e.ID]; bad != (own.Rejected != "") || (bad && !strings.Contains(own.Rejected, "fail "+rule+":")) {
			t.Errorf("event %d (%s, %s): rejected %q; want rule %q", i, e.ID, e.Type, own.Rejected, rule)
		}
		if !maps.Equal(state, want[i]) {
			t.Fatalf("state before event %d (%s): %d entries, want %d: %v", i, e.ID, len(state), len(want[i]), state)
		}
	}
	if err := h.store.CheckConsistency(ctx, string(room.ID)); err != nil {
		t.Error(err)
	}
}

// expectedStates is the state before each event of a fixture room, read from its history: the
// fixture changes state only where its branches have merged, so the state after an event is
// the newest accepted state event of each key among its ancestors and itself.
func expectedStates(room *fixturepeer.Room) []stateres.StateMap {
	index := map[id.EventID]int{}
	for i, e := range room.Events {
		index[e.ID] = i
	}
	after := make([]stateres.StateMap, len(room.Events))
	before := make([]stateres.StateMap, len(room.Events))
	for i, e := range room.Events {
		s := stateres.StateMap{}
		newest := map[pdu.StateKey]int{}
		for _, p := range e.Prev {
			for k, v := range after[index[p]] {
				if j := index[v]; j >= newest[k] {
					newest[k], s[k] = j, v
				}
			}
		}
		before[i] = s
		a := maps.Clone(s)
		if _, bad := room.Unauthorized[e.ID]; !bad && e.StateKey != nil {
			a[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e.ID
		}
		after[i] = a
	}
	return before
}

// A bounded history: the oldest events held name prevs that are never fetched, so the state
// where the history begins comes from the peer's /state_ids, whichever "at" it means (the
// state before the event, as Synapse; after it, as Dendrite). Every event within the bound
// gets its state, equal to the room's, and the result names the peer whose word it is.
func TestBoundedHistoryStateFromPeer(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 96, Events: 500, JoinRate: 0.03, RenameRate: 0.02})
	minDepth := room.Stats().MaxDepth / 2
	for _, tc := range []struct {
		name string
		opts []fixturepeer.Option
	}{
		{"state before the event, as Synapse", nil},
		{"state after the event, as Dendrite", []fixturepeer.Option{fixturepeer.WithStateAfter()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := fixturepeer.Start(t, room, tc.opts...)
			h := newHarness(t, room, []*fixturepeer.Peer{peer})
			ctx := context.Background()
			var last resolver.RoomResult
			for range 5 {
				r, err := h.res.SyncRoom(ctx, string(room.ID), resolver.History{MinDepth: minDepth})
				if err != nil {
					t.Fatal(err)
				}
				if last = r; r.Converged && len(r.StateFrom) > 0 {
					break
				}
			}
			if !last.Converged || len(last.StateFrom) == 0 || !strings.Contains(last.StateFrom[0], peer.ServerName()) {
				t.Fatalf("last pass %+v; want converged, the state's source named", last)
			}
			if n := peer.Count(fixturepeer.EndpointState); n == 0 {
				t.Error("the peer was never asked /state")
			}
			checked := 0
			for _, e := range room.Events {
				if e.Depth < minDepth || !h.storedIDs()[e.ID] {
					continue
				}
				state, _, err := resolver.StateBefore(ctx, h.store, string(e.ID))
				if err != nil {
					t.Fatalf("event %s (depth %d): %v", e.ID, e.Depth, err)
				}
				want, _ := room.StateBefore(e.ID)
				got := make([]id.EventID, 0, len(state))
				for _, v := range state {
					got = append(got, v)
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("state before %s (depth %d): %d entries, want %d", e.ID, e.Depth, len(got), len(want))
				}
				checked++
			}
			if checked < 200 {
				t.Errorf("checked %d events within the bound, want most of the room's", checked)
			}
		})
	}
}

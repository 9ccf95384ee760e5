package resolver_test

import (
	"context"
	"maps"
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

package resolver_test

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
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

// An event may name as an auth event one that is not among its ancestors: here a message by
// the creator names the creator's new member event, made on a branch of its own that no walk
// of the DAG reaches. Pushed to us, the message is stored, and the next pass fetches that
// auth event by ID (/event) and authorizes the message. Where no peer serves the auth event,
// the message keeps no state and the room says what it waits for.
func TestMissingAuthEventsFetched(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 31, Events: 40, Linear: true})
	creator := room.Create().Sender
	origin := room.Create().Origin
	var member, power id.EventID
	var depth int64
	for _, e := range room.Events {
		switch {
		case e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == string(creator):
			member = e.ID
		case e.Type == "m.room.power_levels":
			power = e.ID
		}
		depth = max(depth, e.Depth)
	}
	stateKey := string(creator)
	rename, err := room.Sign(origin, &pdu.PDU{Type: "m.room.member", StateKey: &stateKey, Sender: creator,
		Content:    jsontext.Value(`{"membership":"join","displayname":"the creator, renamed"}`),
		PrevEvents: room.Heads(), AuthEvents: []id.EventID{room.Create().ID, power, member},
		Depth: depth + 1, OriginServerTS: room.Events[len(room.Events)-1].TS + 1})
	if err != nil {
		t.Fatal(err)
	}
	message, err := room.Sign(origin, &pdu.PDU{Type: "m.room.message", Sender: creator,
		Content:    jsontext.Value(`{"msgtype":"m.text","body":"named by an event on another branch"}`),
		PrevEvents: room.Heads(), AuthEvents: []id.EventID{room.Create().ID, power, rename.ID},
		Depth: depth + 1, OriginServerTS: room.Events[len(room.Events)-1].TS + 2})
	if err != nil {
		t.Fatal(err)
	}

	for _, served := range []bool{true, false} {
		t.Run(map[bool]string{true: "served", false: "nowhere"}[served], func(t *testing.T) {
			var opts []fixturepeer.Option
			if served {
				opts = append(opts, fixturepeer.WithLooseEvents(rename))
			}
			peer := fixturepeer.Start(t, room, opts...)
			h := newHarness(t, room, []*fixturepeer.Peer{peer})
			if last := h.syncUntilDone(5); !last[len(last)-1].Converged {
				t.Fatalf("before the push: %+v", last[len(last)-1])
			}
			ctx := context.Background()
			h.res.SetRooms([]string{string(room.ID)})
			if results, _ := h.res.Receive(ctx, origin, []json.RawMessage{message.Raw}); results[string(message.ID)] != "" {
				t.Fatalf("push refused: %v", results)
			}
			res, err := h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
			if err != nil {
				t.Fatal(err)
			}
			states, err := h.store.EventStates(ctx, []string{string(message.ID), string(rename.ID)})
			if err != nil {
				t.Fatal(err)
			}
			if !served {
				if states[string(message.ID)].Before != 0 || !slices.ContainsFunc(res.WaitingFor, func(w string) bool {
					return strings.Contains(w, "auth events no peer gave ("+string(rename.ID))
				}) {
					t.Fatalf("message state %+v, waiting for %q; want no state, waiting for %s", states[string(message.ID)], res.WaitingFor, rename.ID)
				}
				return
			}
			if !h.storedIDs()[rename.ID] || states[string(rename.ID)].Before == 0 || states[string(rename.ID)].Rejected != "" {
				t.Fatalf("the auth event: held %t, state %+v; want held and accepted", h.storedIDs()[rename.ID], states[string(rename.ID)])
			}
			own := states[string(message.ID)]
			if own.Before == 0 || own.Rejected != "" || len(res.WaitingFor) > 0 {
				t.Fatalf("message state %+v, waiting for %q; want computed and accepted", own, res.WaitingFor)
			}
			// The state before the message is its prevs': the rename is not in it.
			before, _, err := resolver.StateBefore(ctx, h.store, string(message.ID))
			if err != nil {
				t.Fatal(err)
			}
			if got := before[pdu.StateKey{Type: "m.room.member", StateKey: stateKey}]; got != member {
				t.Errorf("creator's member event before the message: %s, want %s", got, member)
			}
		})
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

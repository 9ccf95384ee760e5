package resolver_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// receiveHarness is a harness whose room is replicated and whose version is known, with the
// room's peer as the origin that pushes PDUs.
func receiveHarness(t *testing.T, seed uint64) (*harness, *fixturepeer.Peer) {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: seed, Events: 60})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	h.res.SetRooms([]string{string(room.ID)})
	if err := h.store.EnsureRoom(context.Background(), string(room.ID), string(room.Version), ""); err != nil {
		t.Fatal(err)
	}
	return h, peer
}

func (h *harness) receive(origin string, events ...*fixturepeer.Event) (map[string]string, []string) {
	h.t.Helper()
	raws := make([]json.RawMessage, len(events))
	for i, e := range events {
		raws[i] = e.JSON
	}
	return h.receiveRaw(origin, raws...)
}

func (h *harness) receiveRaw(origin string, raws ...json.RawMessage) (map[string]string, []string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.res.Receive(ctx, origin, raws)
}

// accepted checks results answer {} for exactly the given events.
func accepted(t *testing.T, results map[string]string, events []*fixturepeer.Event) {
	t.Helper()
	if len(results) != len(events) {
		t.Errorf("%d results, want %d: %v", len(results), len(events), results)
	}
	for _, e := range events {
		if errText, ok := results[string(e.ID)]; !ok || errText != "" {
			t.Errorf("event %s answered %q (present %t), want accepted", e.ID, errText, ok)
		}
	}
}

// Pushed PDUs of a replicated room are verified, stored and answered {}; the transaction
// retried under the same ID with more PDUs is answered the same, stores each event once, and
// names the room only when something was new.
func TestReceiveStoresAndIsIdempotent(t *testing.T) {
	h, peer := receiveHarness(t, 81)
	origin := peer.ServerName()
	roomID := string(h.room.ID)
	steps := []struct {
		name      string
		events    []*fixturepeer.Event
		wantRooms []string
		wantHeld  int
	}{
		{"first transaction", h.room.Events[:10], []string{roomID}, 10},
		{"retried with more PDUs", h.room.Events[:15], []string{roomID}, 15},
		{"retried as it was", h.room.Events[:15], nil, 15},
	}
	for _, step := range steps {
		results, rooms := h.receive(origin, step.events...)
		accepted(t, results, step.events)
		if !slices.Equal(rooms, step.wantRooms) {
			t.Errorf("%s: rooms %v, want %v", step.name, rooms, step.wantRooms)
		}
		if got := len(h.storedIDs()); got != step.wantHeld {
			t.Errorf("%s: %d events stored, want %d", step.name, got, step.wantHeld)
		}
	}
	if err := h.store.CheckConsistency(context.Background(), roomID); err != nil {
		t.Fatal(err)
	}
	h.assertAllValid()
	if n := peer.Count(fixturepeer.EndpointMissingEvents); n != 0 {
		t.Errorf("%d get_missing_events for PDUs whose prevs were held", n)
	}
}

// PDUs Receive refuses, each answered with why under its event ID, and none stored.
func TestReceiveRefusals(t *testing.T) {
	h, peer := receiveHarness(t, 82)
	origin := peer.ServerName()
	if _, rooms := h.receive(origin, h.room.Events[:5]...); len(rooms) != 1 {
		t.Fatalf("initial state not stored (rooms %v)", rooms)
	}
	foreign, err := peer.ForeignRoom()
	if err != nil {
		t.Fatal(err)
	}
	v12 := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 83, Events: 5, Version: id.RoomV12})
	unsynced := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 84, Events: 5})
	h.res.SetRooms([]string{string(h.room.ID), string(unsynced.ID)})

	cases := []struct {
		name    string
		raw     json.RawMessage
		eventID id.EventID
		want    string
	}{
		{"room not replicated", foreign.Events[3].JSON, foreign.Events[3].ID, "room not replicated here"},
		{"corrupted signature", corruptSignature(t, h.room.Events[5].JSON), h.room.Events[5].ID, "bad_signature"},
		{"room version 12 create event", v12.Events[0].JSON, v12.Events[0].ID, "no room_id"},
		{"replicated room not synced yet", unsynced.Events[1].JSON, unsynced.Events[1].ID, "version is unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			results, rooms := h.receiveRaw(origin, tc.raw)
			errText, ok := results[string(tc.eventID)]
			if len(results) != 1 || !ok || !strings.Contains(errText, tc.want) {
				t.Errorf("results %v, want %s refused with %q", results, tc.eventID, tc.want)
			}
			if len(rooms) != 0 {
				t.Errorf("rooms %v got new events from a refused PDU", rooms)
			}
			if h.storedIDs()[tc.eventID] {
				t.Errorf("refused event %s was stored", tc.eventID)
			}
		})
	}
	// Not a PDU at all: nothing to name, so no entry.
	if results, _ := h.receiveRaw(origin, json.RawMessage(`{"type":"m.room.message"}`), json.RawMessage(`[1]`)); len(results) != 0 {
		t.Errorf("PDUs without an ID answered %v, want no entries", results)
	}
	if got := len(h.storedIDs()); got != 5 {
		t.Errorf("%d events stored, want the 5 accepted first", got)
	}
}

// A pushed PDU whose prev events are missing makes one /get_missing_events to its origin,
// from our forward extremities to that PDU, and the gap closes: every ancestor of it is held
// and no backward extremity is left.
func TestReceiveClosesLiveGap(t *testing.T) {
	h, peer := receiveHarness(t, 85)
	origin := peer.ServerName()
	h.receive(origin, h.room.Events[:15]...)
	peer.ResetCounts()

	pushed := h.room.Events[30]
	results, rooms := h.receive(origin, pushed)
	accepted(t, results, []*fixturepeer.Event{pushed})
	if !slices.Equal(rooms, []string{string(h.room.ID)}) {
		t.Errorf("rooms %v, want the room", rooms)
	}
	if n := peer.Count(fixturepeer.EndpointMissingEvents); n != 1 {
		t.Errorf("%d get_missing_events, want 1", n)
	}
	ancestors, _ := fixturepeer.Closure(h.room, []id.EventID{pushed.ID}, h.room.IDSet())
	want := fixturepeer.EventSet{}
	for e := range ancestors {
		want[e] = struct{}{}
	}
	for _, e := range h.room.Events[:15] {
		want[e.ID] = struct{}{}
	}
	if len(want) < 15+5 {
		t.Fatalf("only %d events between the held ones and the pushed one: no real gap", len(want)-15)
	}
	h.assertHolds(want, fixturepeer.EventSet{})
}

// corruptSignature replaces every signature of a PDU with another well-formed one. The event
// ID, which signatures do not enter, stays the same.
func corruptSignature(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	sigs, _ := ev["signatures"].(map[string]any)
	if len(sigs) == 0 {
		t.Fatal("PDU has no signatures")
	}
	bogus := base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))
	for _, byKey := range sigs {
		for keyID := range byKey.(map[string]any) {
			byKey.(map[string]any)[keyID] = bogus
		}
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

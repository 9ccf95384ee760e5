package rawbackfill

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// room is a fake server's room: events by ID, in the order made.
type room struct {
	t      *testing.T
	order  []string
	raw    map[string]json.RawMessage
	prevs  map[string][]string
	asked  [][]string
	served int
}

func newRoom(t *testing.T) *room {
	return &room{t: t, raw: map[string]json.RawMessage{}, prevs: map[string][]string{}}
}

// add makes an event of version 11 on prevs and returns its ID.
func (r *room) add(typ string, prevs ...string) string {
	r.t.Helper()
	p := pdu.PDU{
		AuthEvents:     []id.EventID{},
		Content:        jsontext.Value(fmt.Sprintf(`{"n":%d}`, len(r.order))),
		Depth:          int64(len(r.order) + 1),
		OriginServerTS: 1700000000000 + int64(len(r.order)),
		RoomID:         "!room:example.org",
		Sender:         "@alice:example.org",
		Type:           typ,
	}
	for _, prev := range prevs {
		p.PrevEvents = append(p.PrevEvents, id.EventID(prev))
	}
	if p.PrevEvents == nil {
		p.PrevEvents = []id.EventID{}
	}
	if typ == "m.room.create" {
		empty := ""
		p.StateKey = &empty
	}
	if err := p.FillContentHash(); err != nil {
		r.t.Fatal(err)
	}
	evID, err := p.GetEventID(id.RoomV11)
	if err != nil {
		r.t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(&p)
	if err != nil {
		r.t.Fatal(err)
	}
	r.order = append(r.order, string(evID))
	r.raw[string(evID)] = raw
	r.prevs[string(evID)] = prevs
	return string(evID)
}

// chain makes m.room.create and n-1 messages after it, each on the one before.
func (r *room) chain(n int) (head string) {
	head = r.add("m.room.create")
	for i := 1; i < n; i++ {
		head = r.add("m.room.message", head)
	}
	return head
}

// backfill answers as a server does: the events of from and those before them, breadth
// first, up to limit.
func (r *room) backfill(_ context.Context, from []string, limit int) ([]json.RawMessage, error) {
	r.asked = append(r.asked, slices.Clone(from))
	var out []json.RawMessage
	seen := map[string]bool{}
	queue := slices.Clone(from)
	for len(queue) > 0 && len(out) < limit {
		evID := queue[0]
		queue = queue[1:]
		raw, ok := r.raw[evID]
		if !ok || seen[evID] {
			continue
		}
		seen[evID] = true
		out = append(out, raw)
		queue = append(queue, r.prevs[evID]...)
	}
	r.served += len(out)
	return out, nil
}

func TestWalkChain(t *testing.T) {
	r := newRoom(t)
	head := r.chain(250)
	res, err := Walk(context.Background(), id.RoomV11, []string{head}, 100, r.backfill)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 250 || res.Requests != 3 || !res.ReachedCreate || res.RoomVersion != "11" {
		t.Fatalf("got %+v, want 250 events in 3 requests to m.room.create", res)
	}
	// Each request asks for the one prev_event of the page before not yet seen: the event
	// just before the oldest of that page.
	want := [][]string{{head}, {r.order[149]}, {r.order[49]}}
	if !slices.EqualFunc(r.asked, want, slices.Equal) {
		t.Fatalf("asked %v, want %v", r.asked, want)
	}
	if !strings.Contains(res.String(), "events=250 requests=3 ") {
		t.Fatalf("String() = %q", res.String())
	}
}

// A fork: two branches of 150 events each from one event after m.room.create, both heads
// given; a page of 100 cannot cover both branches, so the wanted IDs outlive a page.
func TestWalkForkedRoom(t *testing.T) {
	r := newRoom(t)
	create := r.add("m.room.create")
	root := r.add("m.room.message", create)
	a, b := root, root
	for i := 0; i < 150; i++ {
		a = r.add("m.room.message", a)
		b = r.add("m.room.message", b)
	}
	merge := r.add("m.room.message", a, b)
	res, err := Walk(context.Background(), id.RoomV11, []string{merge}, 100, r.backfill)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != len(r.order) || !res.ReachedCreate {
		t.Fatalf("got %+v, want all %d events to m.room.create", res, len(r.order))
	}
	if r.served < len(r.order) || res.Requests > 5 {
		t.Fatalf("served %d events in %d requests for %d events", r.served, res.Requests, len(r.order))
	}
	for i, from := range r.asked {
		if len(from) > MaxFrom {
			t.Fatalf("request %d asked for %d events, more than %d", i, len(from), MaxFrom)
		}
	}
}

// A server that gives nothing new for a wanted event ends the walk with an error, after one
// fruitless request.
func TestWalkStopsWhenNothingNew(t *testing.T) {
	r := newRoom(t)
	head := r.chain(120)
	delete(r.raw, r.order[10]) // the server lost an event in the middle
	res, err := Walk(context.Background(), id.RoomV11, []string{head}, 100, r.backfill)
	if err == nil || !strings.Contains(err.Error(), "brought none not seen before") {
		t.Fatalf("got %+v, %v; want an error", res, err)
	}
	if res.Requests != 3 || res.Events != 109 {
		t.Fatalf("got %+v; want 109 events in 3 requests", res)
	}
}

// The ID is computed, never read from the event: a page's event_id field, which versions 3
// and later do not have, changes nothing.
func TestWalkComputesEventIDs(t *testing.T) {
	r := newRoom(t)
	head := r.chain(3)
	for evID, raw := range r.raw {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["event_id"] = "$forged"
		r.raw[evID], _ = json.Marshal(m)
	}
	res, err := Walk(context.Background(), id.RoomV11, []string{head}, 100, r.backfill)
	if err != nil || res.Events != 3 || res.Requests != 1 {
		t.Fatalf("got %+v, %v; want 3 events in 1 request", res, err)
	}
}

func TestWalkRefusesBadInput(t *testing.T) {
	page := func(context.Context, []string, int) ([]json.RawMessage, error) { return nil, nil }
	for name, run := range map[string]func() error{
		"no heads":        func() error { _, err := Walk(context.Background(), id.RoomV11, nil, 100, page); return err },
		"limit 0":         func() error { _, err := Walk(context.Background(), id.RoomV11, []string{"$a"}, 0, page); return err },
		"unknown version": func() error { _, err := Walk(context.Background(), "nope", []string{"$a"}, 100, page); return err },
		"bad JSON": func() error {
			bad := func(context.Context, []string, int) ([]json.RawMessage, error) {
				return []json.RawMessage{json.RawMessage(`{"type": 1}`)}, nil
			}
			_, err := Walk(context.Background(), id.RoomV11, []string{"$a"}, 100, bad)
			return err
		},
	} {
		if err := run(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

package export_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// strippedRoom is a fixture room with joins, display name changes and events that break the
// authorization rules, served by a peer that strips a few events (held redacted) and lacks
// two (gaps that stay open).
func strippedRoom(t *testing.T, seed uint64, events int) (*fixturepeer.Room, *fixturepeer.Peer, store.Store) {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: seed, Events: events,
		JoinRate: 0.04, RenameRate: 0.03, UnauthorizedRate: 0.03})
	var stripped, missing []id.EventID
	for _, e := range room.Events[20:] {
		switch {
		case e.Type == "m.room.message" && len(stripped) < 3 && e.Index%7 == 0:
			stripped = append(stripped, e.ID)
		case e.Type == "m.room.message" && len(missing) < 2 && e.Index%11 == 0 && e.Index > events/2:
			missing = append(missing, e.ID)
		}
	}
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldAllBut(missing...)),
		fixturepeer.WithLies(fixturepeer.Lie{Kind: fixturepeer.LieStripped, Events: stripped}))
	st := newStore(t)
	syncFrom(t, st, room, peer)
	return room, peer, st
}

// TestPDUsReimport: the pdus export of a room, fed through the resolver's verification
// into an empty store as pushed PDUs are, gives the same events (byte for byte, redacted
// and rejected alike) and the same extremities.
func TestPDUsReimport(t *testing.T) {
	room, peer, st := strippedRoom(t, 41, 400)
	roomID := string(room.ID)
	source := heldEvents(t, st, roomID)
	r, _ := st.Room(context.Background(), roomID)
	if r.Redacted == 0 || r.Rejected == 0 || r.BackwardExtremities == 0 {
		t.Fatalf("the fixture should hold redacted and rejected events and gaps: %+v", r)
	}
	t.Logf("source: %d events, %d redacted, %d rejected, %d gaps", r.Events, r.Redacted, r.Rejected, r.BackwardExtremities)

	out, _ := runExport(t, st, export.Options{RoomID: roomID})
	pdus := lines(out)
	if len(pdus) != len(source) {
		t.Fatalf("%d PDUs exported, %d held", len(pdus), len(source))
	}
	for i, e := range source {
		if string(pdus[i]) != string(e.Raw) {
			t.Fatalf("PDU %d is not %s as stored:\n%s\n%s", i, e.ID, pdus[i], e.Raw)
		}
	}

	ctx := context.Background()
	again := newStore(t)
	if err := again.EnsureRoom(ctx, roomID, string(room.Version), ""); err != nil {
		t.Fatal(err)
	}
	res := newResolver(t, again, peer)
	res.SetRooms([]string{roomID})
	for chunk := range slices.Chunk(pdus, 50) { // as /send carries them
		results, _ := res.Receive(ctx, peer.ServerName(), chunk)
		for eventID, errText := range results {
			if errText != "" {
				t.Fatalf("re-imported %s refused: %s", eventID, errText)
			}
		}
	}

	reimported := heldEvents(t, again, roomID)
	if len(reimported) != len(source) {
		t.Fatalf("re-import holds %d events, the source %d", len(reimported), len(source))
	}
	for i, e := range source {
		got := reimported[i]
		if got.ID != e.ID || string(got.Raw) != string(e.Raw) || got.Redacted != e.Redacted || got.Rejected != e.Rejected {
			t.Fatalf("event %d: re-imported %s (redacted %t, rejected %q), source %s (redacted %t, rejected %q)",
				i, got.ID, got.Redacted, got.Rejected, e.ID, e.Redacted, e.Rejected)
		}
	}
	for _, read := range []struct {
		what string
		ids  func(store.Store) []string
	}{
		{"forward extremities", func(s store.Store) []string {
			ids, err := s.ForwardExtremities(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			return ids
		}},
		{"backward extremities", func(s store.Store) []string {
			exts, err := s.BackwardExtremities(ctx, roomID, store.BackwardFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, x := range exts {
				ids = append(ids, x.EventID)
			}
			slices.Sort(ids)
			return ids
		}},
	} {
		if want, got := read.ids(st), read.ids(again); !slices.Equal(got, want) {
			t.Errorf("%s: re-import %v, source %v", read.what, got, want)
		}
	}
	if err := again.CheckConsistency(ctx, roomID); err != nil {
		t.Error(err)
	}
}

// TestEventsFormat: each line of the events format decodes into mautrix's client event, with
// the stored event's fields, content that parses for its type, and our flags.
func TestEventsFormat(t *testing.T) {
	room, _, st := strippedRoom(t, 43, 200)
	roomID := string(room.ID)
	held := heldEvents(t, st, roomID)
	out, _ := runExport(t, st, export.Options{RoomID: roomID, Format: export.FormatEvents})
	records := lines(out)
	if len(records) != len(held) {
		t.Fatalf("%d lines, %d events held", len(records), len(held))
	}
	seen := map[string]int{}
	for i, line := range records {
		want := held[i]
		var evt event.Event
		if err := json.Unmarshal(line, &evt); err != nil {
			t.Fatalf("line %d does not decode into event.Event: %v\n%s", i, err, line)
		}
		if string(evt.ID) != want.ID || evt.Type.Type != want.Type || string(evt.Sender) != want.Sender ||
			evt.Timestamp != want.OriginServerTS || string(evt.RoomID) != roomID ||
			(evt.StateKey == nil) != (want.StateKey == nil) || (evt.StateKey != nil && *evt.StateKey != *want.StateKey) {
			t.Fatalf("line %d is not %s as stored: %s", i, want.ID, line)
		}
		evt.Type.Class = event.MessageEventType
		if want.StateKey != nil {
			evt.Type.Class = event.StateEventType
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !want.Redacted {
			t.Errorf("line %d: content of %s does not parse: %v", i, want.Type, err)
		}
		var flags struct {
			Redacted *bool           `json:"redacted"`
			Rejected string          `json:"rejected"`
			Unsigned json.RawMessage `json:"unsigned"`
		}
		if err := json.Unmarshal(line, &flags); err != nil {
			t.Fatal(err)
		}
		if flags.Redacted == nil || *flags.Redacted != want.Redacted || flags.Rejected != want.Rejected || string(flags.Unsigned) != "{}" {
			t.Errorf("line %d flags %+v, want redacted %t, rejected %q, unsigned {}", i, flags, want.Redacted, want.Rejected)
		}
		if want.Type == "m.room.message" && !want.Redacted && evt.Content.AsMessage().Body == "" {
			t.Errorf("line %d: message without a body: %s", i, line)
		}
		if want.Type == "m.room.member" && evt.Content.AsMember().Membership == "" {
			t.Errorf("line %d: member event without a membership: %s", i, line)
		}
		switch {
		case want.Redacted:
			seen["redacted"]++
		case want.Rejected != "":
			seen["rejected"]++
		case want.StateKey != nil:
			seen["state"]++
		default:
			seen["message"]++
		}
	}
	if len(seen) != 4 {
		t.Errorf("the fixture should have every kind of line: %v", seen)
	}
}

// TestAfterCursor: an export after the cursor of the previous one has exactly what arrived
// since, wherever it sits in the DAG (here, the older half of the room, backfilled later),
// in arrival order, and nothing twice; a full copy replacing a redacted one comes again.
func TestAfterCursor(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 45, Events: 300, JoinRate: 0.03})
	roomID := string(room.ID)
	maxDepth := room.Stats().MaxDepth
	var redacted id.EventID
	for _, e := range room.Events {
		if e.Type == "m.room.message" && e.Depth > maxDepth*3/4 {
			redacted = e.ID
			break
		}
	}
	st := newStore(t)
	upper := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(maxDepth/2, maxDepth)),
		fixturepeer.WithLies(fixturepeer.Lie{Kind: fixturepeer.LieStripped, Events: []id.EventID{redacted}}))
	syncFrom(t, st, room, upper)
	first, cursor := runExport(t, st, export.Options{RoomID: roomID, Format: export.FormatEvents})
	firstIDs := eventIDsOf(t, first)

	full := fixturepeer.Start(t, room)
	syncFrom(t, st, room, full)
	// The full copy of the stripped event, as a peer would push it.
	res := newResolver(t, st, full)
	res.SetRooms([]string{roomID})
	if results, _ := res.Receive(context.Background(), full.ServerName(), []json.RawMessage{room.Get(redacted).JSON}); results[string(redacted)] != "" {
		t.Fatalf("the full copy was refused: %v", results)
	}

	second, next := runExport(t, st, export.Options{RoomID: roomID, Format: export.FormatEvents, After: cursor})
	secondIDs := eventIDsOf(t, second)
	var want []string
	for _, e := range heldEvents(t, st, roomID) {
		if !slices.Contains(firstIDs, e.ID) {
			want = append(want, e.ID)
		}
	}
	want = append(want, string(redacted)) // again, in full
	if got := slices.Sorted(slices.Values(secondIDs)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("after the cursor: %d events, want the %d that arrived since", len(got), len(want))
	}
	if secondIDs[len(secondIDs)-1] != string(redacted) {
		t.Errorf("the upgraded event should come last, in arrival order: %v", secondIDs[len(secondIDs)-3:])
	}
	for _, line := range lines(second) {
		var e struct {
			ID       string `json:"event_id"`
			Redacted bool   `json:"redacted"`
		}
		_ = json.Unmarshal(line, &e)
		if e.ID == string(redacted) && e.Redacted {
			t.Error("the upgraded event came again redacted")
		}
	}
	// Older events came after newer ones: arrival order, not the DAG's.
	if first := room.Get(id.EventID(secondIDs[0])); first == nil || first.Depth >= maxDepth/2 {
		t.Errorf("the first event after the cursor should be of the backfilled half, at depth under %d", maxDepth/2)
	}
	if third, last := runExport(t, st, export.Options{RoomID: roomID, After: next}); len(third) != 0 || last != next {
		t.Errorf("nothing arrived: %d bytes, cursor %s (was %s)", len(third), last, next)
	}
	if len(firstIDs)+len(secondIDs)-1 != len(heldEvents(t, st, roomID)) {
		t.Errorf("%d + %d exports for %d events held (one twice)", len(firstIDs), len(secondIDs), len(heldEvents(t, st, roomID)))
	}
}

func eventIDsOf(t *testing.T, out []byte) []string {
	t.Helper()
	var ids []string
	for _, line := range lines(out) {
		var e struct {
			ID string `json:"event_id"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// TestTimeRange: --since and --until select by origin_server_ts, half open, in RFC 3339 or
// Unix milliseconds alike.
func TestTimeRange(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 47, Events: 150})
	st := newStore(t)
	syncFrom(t, st, room, fixturepeer.Start(t, room))
	from, to := room.Events[40].TS, room.Events[90].TS
	var want []string
	for _, e := range room.Events {
		if e.TS >= from && e.TS < to {
			want = append(want, string(e.ID))
		}
	}
	slices.Sort(want)
	for _, c := range []struct{ since, until string }{
		{fmt.Sprint(from), fmt.Sprint(to)},
		{time.UnixMilli(from).UTC().Format(time.RFC3339Nano), time.UnixMilli(to).In(time.FixedZone("x", 5*3600)).Format(time.RFC3339Nano)},
	} {
		since, err := export.ParseTime(c.since)
		if err != nil {
			t.Fatal(err)
		}
		until, err := export.ParseTime(c.until)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := runExport(t, st, export.Options{RoomID: string(room.ID), Format: export.FormatEvents, Since: since, Until: until})
		if got := slices.Sorted(slices.Values(eventIDsOf(t, out))); !slices.Equal(got, want) {
			t.Errorf("since %s until %s: %d events, want %d", c.since, c.until, len(got), len(want))
		}
	}
}

// TestBadInput: what the request got wrong is ErrBadInput, with a message that says what.
func TestBadInput(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	const roomID = "!room:example.org"
	events := []store.Event{{ID: "$a", RoomID: roomID, Depth: 1, Type: "m.room.create", StateKey: new(string),
		Sender: "@a:example.org", Origin: "example.org", Raw: []byte(`{"type":"m.room.create"}`)}}
	if _, err := st.InsertEvents(ctx, roomID, events); err != nil {
		t.Fatal(err)
	}
	other := export.Cursor{RoomID: "!other:example.org", Seq: 1}.String()
	ahead := export.Cursor{RoomID: roomID, Seq: 2}.String()
	epoch := time.Unix(0, 0)
	for _, c := range []struct {
		name    string
		opts    export.Options
		want    string
		unknown bool
	}{
		{"no room", export.Options{}, "no room given", false},
		{"unknown room", export.Options{RoomID: "!nope:example.org"}, "the store holds no room !nope:example.org", true},
		{"unknown format", export.Options{RoomID: roomID, Format: "csv"}, `unknown format "csv"`, false},
		{"empty range", export.Options{RoomID: roomID, Since: time.UnixMilli(5000), Until: time.UnixMilli(5000)}, "is not before until", false},
		{"since after until", export.Options{RoomID: roomID, Since: time.UnixMilli(6000), Until: time.UnixMilli(5000)}, "is not before until", false},
		{"until at the epoch", export.Options{RoomID: roomID, Until: epoch}, "selects nothing", false},
		{"malformed cursor", export.Options{RoomID: roomID, After: "v1.!!!"}, "malformed cursor", false},
		{"not a cursor", export.Options{RoomID: roomID, After: "12"}, "malformed cursor", false},
		{"cursor of another room", export.Options{RoomID: roomID, After: other}, "the cursor is for room !other:example.org", false},
		{"cursor ahead of the store", export.Options{RoomID: roomID, After: ahead}, "ahead of what the store holds", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := export.New(ctx, st, c.opts)
			if !errors.Is(err, export.ErrBadInput) || errors.Is(err, export.ErrUnknownRoom) != c.unknown {
				t.Fatalf("error %v: want ErrBadInput (unknown room: %t)", err, c.unknown)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestParseTimeAndCursor(t *testing.T) {
	for in, want := range map[string]int64{
		"1704067200000":             1704067200000,
		"2024-01-01T00:00:00Z":      1704067200000,
		"2024-01-01T01:00:00+01:00": 1704067200000,
		"2024-01-01T00:00:00.25Z":   1704067200250,
	} {
		got, err := export.ParseTime(in)
		if err != nil || got.UnixMilli() != want {
			t.Errorf("ParseTime(%q) = %v, %v; want %d ms", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "2024-01-01", "-5", "1.5", "99999999999999999999"} {
		if _, err := export.ParseTime(bad); !errors.Is(err, export.ErrBadInput) {
			t.Errorf("ParseTime(%q): %v, want ErrBadInput", bad, err)
		}
	}
	c := export.Cursor{RoomID: "!r:example.org", Seq: 1234}
	if got, err := export.ParseCursor(c.String()); err != nil || got != c {
		t.Errorf("cursor round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "v1.", "v2.eyJ9", "v1.e30", "v1.eyJyb29tIjoiIXIiLCJzZXEiOi0xfQ", "v1." + fmt.Sprint(make([]byte, 2000))} {
		if _, err := export.ParseCursor(bad); !errors.Is(err, export.ErrBadInput) {
			t.Errorf("ParseCursor(%q): %v, want ErrBadInput", bad, err)
		}
	}
}

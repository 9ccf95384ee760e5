package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// normalized is e as the store returns it: prev events as a sorted set.
func normalized(e Event) Event {
	e.PrevEvents = slices.Compact(slices.Sorted(slices.Values(e.PrevEvents)))
	return e
}

func topological(events []Event) []Event {
	out := make([]Event, len(events))
	for i, e := range events {
		out[i] = normalized(e)
	}
	slices.SortFunc(out, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.Depth, b.Depth), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func testTopologicalPaging(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 600, 100, 11)
	for _, b := range batches(shuffled(events, 12), 250, 13) {
		mustInsert(t, s, b)
	}
	want := topological(events)

	var paged []Event
	var after *Position
	for {
		page, err := s.EventsPage(t.Context(), room, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if len(page) < 7 {
			break
		}
		last := page[len(page)-1].Position()
		after = &last
	}
	if !reflect.DeepEqual(paged, want) {
		t.Fatalf("paged events differ from the topological order (%d vs %d events)", len(paged), len(want))
	}

	var streamed []Event
	if err := s.StreamEvents(t.Context(), room, func(e Event) error {
		streamed = append(streamed, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(streamed, want) {
		t.Fatal("streamed events differ from the topological order")
	}

	stop := errors.New("stop")
	n := 0
	err := s.StreamEvents(t.Context(), room, func(Event) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("StreamEvents returned %v after %d events, want the callback's error after 3", err, n)
	}
	if _, err := s.EventsPage(t.Context(), room, nil, 0); err == nil {
		t.Fatal("EventsPage with limit 0 succeeded")
	}
	if page, err := s.EventsPage(t.Context(), "!unknown:example.org", nil, 10); err != nil || len(page) != 0 {
		t.Fatalf("EventsPage of an unknown room = %d events, %v", len(page), err)
	}
}

func testEventLookups(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 1100, 50, 14)
	mustInsert(t, s, events)
	ctx := t.Context()
	for _, e := range []Event{events[0], events[1], events[555], events[1099]} {
		got, err := s.Event(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, normalized(e)) {
			t.Fatalf("Event(%s) =\n%+v\nwant\n%+v", e.ID, got, normalized(e))
		}
	}
	// The create event's empty state key is not a missing one.
	if got, _ := s.Event(ctx, events[0].ID); got.StateKey == nil || *got.StateKey != "" {
		t.Fatalf("create event state key = %v, want \"\"", got.StateKey)
	}
	if got, _ := s.Event(ctx, events[1].ID); got.StateKey != nil {
		t.Fatalf("message state key = %q, want none", *got.StateKey)
	}
	if _, err := s.Event(ctx, "$missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Event of a missing ID: %v, want ErrNotFound", err)
	}
	for id, want := range map[string]bool{events[7].ID: true, "$missing": false} {
		if got, err := s.HasEvent(ctx, id); err != nil || got != want {
			t.Fatalf("HasEvent(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	// More IDs than one IN list takes.
	var ids []string
	want := map[string]bool{}
	for i, e := range events {
		ids = append(ids, e.ID)
		want[e.ID] = true
		if i%3 == 0 {
			ids = append(ids, fmt.Sprintf("$missing%d", i))
		}
	}
	got, err := s.HasEvents(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("HasEvents found %d of %d", len(got), len(want))
	}
}

func testRedactedUpgrade(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ctx := t.Context()
	chain := linearChain(room, 10, 300)
	redact := func(e Event) Event {
		e.Raw, e.Redacted = []byte(fmt.Sprintf(`{"event_id":%q,"content":{}}`, e.ID)), true
		return e
	}
	check := func(id string, wantRedacted bool, wantCount int64) {
		t.Helper()
		e, err := s.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		holdsFull := bytes.Equal(e.Raw, chain[indexOf(chain, id)].Raw)
		if e.Redacted != wantRedacted || holdsFull == wantRedacted {
			t.Fatalf("%s: redacted %v (full JSON %v), want redacted %v", id, e.Redacted, holdsFull, wantRedacted)
		}
		if r, _ := s.Room(ctx, room); r.Redacted != wantCount {
			t.Fatalf("room counts %d redacted events, want %d", r.Redacted, wantCount)
		}
		if err := s.CheckConsistency(ctx, room); err != nil {
			t.Fatal(err)
		}
	}
	mixed := slices.Clone(chain)
	for i := 2; i <= 5; i++ {
		mixed[i] = redact(chain[i])
	}
	mustInsert(t, s, mixed)
	check(chain[2].ID, true, 4)

	if res := mustInsert(t, s, mixed[2:6]); res != (InsertResult{Duplicates: 4}) {
		t.Fatalf("redacted copies again = %+v", res)
	}
	batch := []Event{chain[2], chain[3], redact(chain[4]), chain[0]}
	if res := mustInsert(t, s, batch); res != (InsertResult{Upgraded: 2, Duplicates: 2}) {
		t.Fatalf("full copies = %+v, want 2 upgraded, 2 duplicates", res)
	}
	check(chain[2].ID, false, 2)
	check(chain[4].ID, true, 2)
	// Both forms in one batch: the full one wins, whatever the order.
	if res := mustInsert(t, s, []Event{redact(chain[5]), chain[5]}); res != (InsertResult{Upgraded: 1, Duplicates: 1}) {
		t.Fatalf("both forms = %+v", res)
	}
	check(chain[5].ID, false, 1)
	// Never downgraded.
	if res := mustInsert(t, s, []Event{redact(chain[2])}); res != (InsertResult{Duplicates: 1}) {
		t.Fatalf("redacted copy of a full event = %+v", res)
	}
	check(chain[2].ID, false, 1)
	x := makeEvent(room, "$x", 11, []string{chain[9].ID}, 100)
	if res := mustInsert(t, s, []Event{x, redact(x)}); res != (InsertResult{New: 1, Duplicates: 1}) {
		t.Fatalf("new event in both forms = %+v", res)
	}
	chain = append(chain, x)
	check("$x", false, 1)
}

func indexOf(events []Event, id string) int {
	return slices.IndexFunc(events, func(e Event) bool { return e.ID == id })
}

func testAttemptBookkeeping(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ctx := t.Context()
	chain := linearChain(room, 30, 100)
	mustInsert(t, s, chain[10:20])
	mustInsert(t, s, chain[25:30])
	low, high := chain[9].ID, chain[24].ID // holes under depths 11 and 26
	ids := func(f BackwardFilter) []string {
		t.Helper()
		bs, err := s.BackwardExtremities(ctx, room, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range bs {
			out = append(out, b.EventID)
		}
		return out
	}
	if got := ids(BackwardFilter{}); !slices.Equal(got, []string{high, low}) {
		t.Fatalf("backward extremities %v, want the deepest first", got)
	}
	now := time.Now()
	if err := s.RecordAttemptFailure(ctx, room, high, "peer timed out", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := ids(BackwardFilter{DueBy: now}); !slices.Equal(got, []string{low}) {
		t.Fatalf("due now: %v", got)
	}
	bs, _ := s.BackwardExtremities(ctx, room, BackwardFilter{Limit: 1})
	if b := bs[0]; b.EventID != high || b.Attempts != 1 || b.LastError != "peer timed out" ||
		b.NextAttemptAt.UnixMilli() != now.Add(time.Hour).UnixMilli() || b.LastAttemptAt.IsZero() ||
		b.Unfillable || b.MinChildDepth != 26 || b.MaxChildDepth != 26 || b.FirstSeen.IsZero() {
		t.Fatalf("after a failed attempt: %+v", b)
	}
	for range 2 { // twice: the unfillable counter counts extremities, not calls
		if err := s.MarkUnfillable(ctx, room, low, "no peer has it", now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := s.Room(ctx, room); r.UnfillableExtremities != 1 || r.BackwardExtremities != 2 {
		t.Fatalf("room after MarkUnfillable: %+v", r)
	}
	if err := s.RecordAttemptFailure(ctx, room, low, "still nothing", time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		filter BackwardFilter
		want   []string
	}{
		{"unfillable but due", BackwardFilter{DueBy: now}, []string{low}},
		{"fillable and due", BackwardFilter{DueBy: now, SkipUnfillable: true}, nil},
		// An attempt made before a peer came back (StaleBefore) is due whatever its back-off.
		{"attempted before a recovery", BackwardFilter{DueBy: now, StaleBefore: time.Now().Add(time.Second)}, []string{high, low}},
		{"attempted after the last recovery", BackwardFilter{DueBy: now, StaleBefore: now.Add(-time.Hour)}, []string{low}},
		{"fillable", BackwardFilter{SkipUnfillable: true}, []string{high}},
		{"history bound", BackwardFilter{ChildDepthAtLeast: 20}, []string{high}},
		{"limit", BackwardFilter{Limit: 1}, []string{high}},
		{"all", BackwardFilter{}, []string{high, low}},
	} {
		if got := ids(c.filter); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	bs, _ = s.BackwardExtremities(ctx, room, BackwardFilter{})
	if b := bs[1]; !b.Unfillable || b.UnfillableReason != "no peer has it" || b.Attempts != 3 ||
		b.LastError != "still nothing" || !b.NextAttemptAt.IsZero() {
		t.Fatalf("unfillable extremity after another failure: %+v", b)
	}
	if err := s.RecordAttemptFailure(ctx, room, "$nope", "x", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RecordAttemptFailure of a non-extremity: %v", err)
	}
	if err := s.MarkUnfillable(ctx, "!unknown:example.org", low, "x", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkUnfillable in an unknown room: %v", err)
	}
	if err := s.CheckConsistency(ctx, room); err != nil {
		t.Fatal(err)
	}
	// Filling a hole removes its extremity, unfillable or not.
	mustInsert(t, s, chain[:10])
	if r, _ := s.Room(ctx, room); r.UnfillableExtremities != 0 || r.BackwardExtremities != 1 {
		t.Fatalf("room after filling the unfillable hole: %+v", r)
	}
	mustInsert(t, s, chain[20:25])
	checkExtremities(t, s, []string{chain[29].ID}, map[string]depthRange{})
}

func testRooms(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ctx := t.Context()
	if _, err := s.Room(ctx, room); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Room of an unknown room: %v", err)
	}
	steps := []struct {
		version, create string
		wantErr         error
		want            Room
	}{
		{"", "", nil, Room{ID: room}},
		{"10", "", nil, Room{ID: room, Version: "10"}},
		{"", "$create", nil, Room{ID: room, Version: "10", CreateEventID: "$create"}},
		{"10", "$create", nil, Room{ID: room, Version: "10", CreateEventID: "$create"}},
		{"11", "", ErrConflict, Room{ID: room, Version: "10", CreateEventID: "$create"}},
		{"", "$other", ErrConflict, Room{ID: room, Version: "10", CreateEventID: "$create"}},
	}
	for _, st := range steps {
		if err := s.EnsureRoom(ctx, room, st.version, st.create); !errors.Is(err, st.wantErr) {
			t.Fatalf("EnsureRoom(%q, %q) = %v, want %v", st.version, st.create, err, st.wantErr)
		}
		if got, err := s.Room(ctx, room); err != nil || got != st.want {
			t.Fatalf("after EnsureRoom(%q, %q): %+v, %v; want %+v", st.version, st.create, got, err, st.want)
		}
	}
	if err := s.EnsureRoom(ctx, "", "10", ""); err == nil {
		t.Fatal("EnsureRoom of an empty room ID succeeded")
	}
	// Inserting into a room nobody ensured creates it, version unknown.
	other := "!other:example.org"
	chain := linearChain(other, 5, 50)
	if _, err := s.InsertEvents(ctx, other, chain[2:]); err != nil {
		t.Fatal(err)
	}
	want := Room{ID: other, Events: 3, MinDepth: 3, MaxDepth: 5, ForwardExtremities: 1, BackwardExtremities: 1, LastSeq: 3}
	if got, err := s.Room(ctx, other); err != nil || got != want {
		t.Fatalf("Room = %+v, %v; want %+v", got, err, want)
	}
}

func testReopen(t *testing.T, newURL func(testing.TB) string) {
	u := newURL(t)
	// Several processes starting at once on a fresh database: every open succeeds and the
	// schema is created once.
	var wg sync.WaitGroup
	stores := make([]Store, 4)
	errs := make([]error, 4)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = Open(context.Background(), u) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
		stores[i].Close()
	}
	s, err := Open(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	events := forkyDAG(room, 200, 100, 15)
	mustInsert(t, s, events)
	before := dump(t, s)
	s.Close()

	s = openTest(t, u)
	if after := dump(t, s); after != before {
		t.Fatal("the store changed across a reopen")
	}
	var versions int
	if err := s.(*sqlStore).db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != len(migrations) {
		t.Fatalf("schema_migrations has %d rows, want %d", versions, len(migrations))
	}
	m := newModel()
	m.add(events...)
	checkAgainstModel(t, s, room, m)
}

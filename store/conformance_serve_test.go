package store

import (
	"cmp"
	"reflect"
	"slices"
	"testing"
)

// EventsInDepthRange returns the room's events within the depths, deepest first, up to the
// limit, and nothing of another room: what a walk back from a depth prefetches.
func testEventsInDepthRange(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 500, 80, 21)
	for _, b := range batches(shuffled(events, 22), 120, 23) {
		mustInsert(t, s, b)
	}
	const other = "!other:example.org"
	if _, err := s.InsertEvents(t.Context(), other, forkyDAG(other, 200, 80, 24)); err != nil {
		t.Fatal(err)
	}
	deepestFirst := make([]Event, len(events))
	for i, e := range events {
		deepestFirst[i] = normalized(e)
	}
	slices.SortFunc(deepestFirst, func(a, b Event) int {
		return cmp.Or(cmp.Compare(b.Depth, a.Depth), cmp.Compare(b.ID, a.ID))
	})
	maxDepth := deepestFirst[0].Depth
	for _, c := range []struct {
		name     string
		min, max int64
		limit    int
	}{
		{"a window within the room", maxDepth / 2, maxDepth/2 + 20, 1000},
		{"cut by the limit", 1, maxDepth, 37},
		{"one depth", maxDepth / 3, maxDepth / 3, 100},
		{"the whole room", 0, maxDepth + 10, 10000},
		{"below the room", -10, 0, 10},
		{"an empty range", 10, 9, 10},
	} {
		got, err := s.EventsInDepthRange(t.Context(), room, c.min, c.max, c.limit)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var want []Event
		for _, e := range deepestFirst {
			if e.Depth >= c.min && e.Depth <= c.max && len(want) < c.limit {
				want = append(want, e)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %d events, want %d", c.name, len(got), len(want))
		}
	}
	if _, err := s.EventsInDepthRange(t.Context(), room, 1, 2, 0); err == nil {
		t.Error("limit 0 accepted")
	}
}

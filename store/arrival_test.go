package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestArrivalOrder checks the arrival numbers on both backends: batches numbered in the
// order they were stored (topologically within one), duplicates left alone, a full copy of a
// redacted event and a rejection each a new arrival, and QueryEvents paging both orders
// with every bound.
func TestArrivalOrder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			events := forkyDAG(room, 300, 80, 7)
			for i := range events {
				// Timestamps that do not follow depth, as across servers.
				events[i].OriginServerTS = 1_000_000 + int64((i*7919)%300)*10
			}
			// Out of order, in batches: the arrival order is the batch order.
			var want []string
			for _, batch := range batches(shuffled(events, 3), 40, 4) {
				mustInsert(t, s, batch)
				want = append(want, eventIDs(topological(batch))...)
			}
			mustInsert(t, s, events[:50]) // duplicates: no new numbers
			checkArrivals(t, s, want)

			// A full copy replacing a redacted one arrives again, last.
			redacted := events[10]
			redacted.ID, redacted.Redacted = "$late-redacted", true
			redacted.PrevEvents = []string{events[299].ID}
			redacted.Depth = 1000
			mustInsert(t, s, []Event{redacted})
			want = append(want, redacted.ID)
			checkArrivals(t, s, want)
			before := seqOf(t, s, redacted.ID)
			full := redacted
			full.Redacted, full.Raw = false, []byte(`{"full":true}`)
			if res := mustInsert(t, s, []Event{full, events[0]}); res.Upgraded != 1 {
				t.Fatalf("upgrade: %+v", res)
			}
			if after := seqOf(t, s, redacted.ID); after != before+1 {
				t.Fatalf("the upgraded event is numbered %d, was %d: want a new number", after, before)
			}
			checkArrivals(t, s, want)

			// A rejection is a new arrival; an accepted event keeps its number.
			rejected, accepted := want[5], want[6]
			if err := s.SaveState(ctx, room, []StateGroup{{No: 1, Entries: map[StateKey]string{}}}, []EventState{
				{EventID: rejected, Before: 1, After: 1, Rejected: "auth_events: not allowed"},
				{EventID: accepted, Before: 1, After: 1},
			}); err != nil {
				t.Fatal(err)
			}
			acceptedSeq := seqOf(t, s, accepted)
			want = append(slices.Delete(slices.Clone(want), 5, 6), rejected)
			checkArrivals(t, s, want)
			if seqOf(t, s, accepted) != acceptedSeq {
				t.Fatal("an accepted event was numbered again")
			}
			if err := s.CheckConsistency(ctx, room); err != nil {
				t.Fatal(err)
			}

			checkQueries(t, s)

			// inspect --check sees a room whose last number is below its events' (the next
			// numbers would be handed out twice); one above them is a number spent on an
			// event a repair deleted.
			if _, err := s.wdb.ExecContext(ctx, `UPDATE rooms SET event_seq = event_seq - 1`); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckConsistency(ctx, room); err == nil || !strings.Contains(err.Error(), "last arrival number") {
				t.Errorf("CheckConsistency with a wrong last arrival number: %v", err)
			}
		})
	}
}

// checkArrivals checks the room's events, read in arrival order a few at a time, are want,
// in increasing numbers, and that the room's LastSeq is the last number.
func checkArrivals(t *testing.T, s Store, want []string) {
	t.Helper()
	ctx := t.Context()
	var got []string
	var last int64
	for {
		page, err := s.QueryEvents(ctx, room, EventQuery{ByArrival: true, AfterSeq: last, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if e.Seq <= last {
				t.Fatalf("arrival numbers out of order: %d after %d", e.Seq, last)
			}
			got = append(got, e.ID)
			last = e.Seq
		}
		if len(page) < 7 {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("arrival order:\n got %v\nwant %v", abbreviated(got), abbreviated(want))
	}
	r, err := s.Room(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if r.LastSeq != last || r.LastSeq < int64(len(want)) {
		t.Fatalf("room LastSeq %d, last event numbered %d, %d events", r.LastSeq, last, len(want))
	}
}

// checkQueries compares every kind of page QueryEvents makes with the same selection made
// in memory from the whole room.
func checkQueries(t *testing.T, s Store) {
	t.Helper()
	ctx := t.Context()
	all, err := s.QueryEvents(ctx, room, EventQuery{ByArrival: true, Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	last := all[len(all)-1].Seq
	for _, c := range []struct {
		name string
		q    EventQuery
	}{
		{"whole room", EventQuery{}},
		{"up to an arrival", EventQuery{UpToSeq: last / 2}},
		{"after an arrival", EventQuery{AfterSeq: last / 3}},
		{"time range", EventQuery{SinceTS: 1_001_000, UntilTS: 1_002_000}},
		{"since", EventQuery{SinceTS: 1_001_500}},
		{"until, up to an arrival", EventQuery{UntilTS: 1_000_500, UpToSeq: last - 10}},
		{"by arrival, bounded", EventQuery{ByArrival: true, AfterSeq: 17, UpToSeq: last - 5, SinceTS: 1_000_300}},
	} {
		q := c.q
		t.Run(c.name, func(t *testing.T) {
			var want []string
			for _, e := range all {
				if e.Seq > q.AfterSeq && (q.UpToSeq == 0 || e.Seq <= q.UpToSeq) &&
					(q.SinceTS == 0 || e.OriginServerTS >= q.SinceTS) && (q.UntilTS == 0 || e.OriginServerTS < q.UntilTS) {
					want = append(want, e.ID)
				}
			}
			if !q.ByArrival {
				byID := map[string]SequencedEvent{}
				for _, e := range all {
					byID[e.ID] = e
				}
				slices.SortFunc(want, func(a, b string) int {
					return cmp.Or(cmp.Compare(byID[a].Depth, byID[b].Depth), cmp.Compare(a, b))
				})
			}
			var got []string
			for {
				q.Limit = 9
				page, err := s.QueryEvents(ctx, room, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				if len(page) < q.Limit {
					break
				}
				end := page[len(page)-1]
				if q.ByArrival {
					q.AfterSeq = end.Seq
				} else {
					pos := end.Position()
					q.After = &pos
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("pages:\n got %v\nwant %v", abbreviated(got), abbreviated(want))
			}
		})
	}
	if _, err := s.QueryEvents(ctx, room, EventQuery{}); err == nil {
		t.Error("QueryEvents without a limit: no error")
	}
}

// TestArrivalNumbersConcurrentWriters: writers racing on one room get distinct numbers,
// 1 to N with none skipped.
func TestArrivalNumbersConcurrentWriters(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			u := b.newURL(t)
			events := forkyDAG(room, 400, 60, 9)
			var wg sync.WaitGroup
			for w := range 4 {
				s := openTest(t, u)
				wg.Go(func() {
					for _, batch := range batches(shuffled(events, uint64(w)), 30, uint64(w)) {
						if _, err := s.InsertEvents(context.Background(), room, batch); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			s := openTest(t, u)
			all, err := s.QueryEvents(t.Context(), room, EventQuery{ByArrival: true, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range all {
				if e.Seq != int64(i+1) {
					t.Fatalf("event %d of the arrival order is numbered %d", i, e.Seq)
				}
			}
			if len(all) != len(events) {
				t.Fatalf("%d events numbered, %d stored", len(all), len(events))
			}
		})
	}
}

// TestArrivalMigration: a store from before arrival numbers gets them for the events it
// holds, in the order they were received, when it is opened.
func TestArrivalMigration(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			u := b.newURL(t)
			s := openTest(t, u)
			chain := linearChain(room, 12, 64)
			mustInsert(t, s, chain[6:]) // the newer half first
			mustInsert(t, s, chain[:6])
			other := newDAG("!other:example.org", 64, 5).grow(3, 0, 0)
			if _, err := s.InsertEvents(ctx, "!other:example.org", other); err != nil {
				t.Fatal(err)
			}
			// Back to the schema before arrival numbers, with receipt times a millisecond
			// apart in that order, the later half received first.
			undoEventKeys(t, s)
			var stmts []string
			for i, e := range append(append(slices.Clone(chain[6:]), chain[:6]...), other...) {
				stmts = append(stmts, fmt.Sprintf(`UPDATE events SET received_at = %d WHERE event_id = '%s'`, 1000+i, e.ID))
			}
			stmts = append(stmts, `DROP INDEX events_room_seq`, `ALTER TABLE events DROP COLUMN seq`,
				`ALTER TABLE rooms DROP COLUMN event_seq`, `DELETE FROM schema_migrations WHERE version >= 8`)
			for _, q := range stmts {
				if _, err := s.wdb.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			_ = s.Close()

			s = openTest(t, u)
			checkArrivals(t, s, eventIDs(append(slices.Clone(chain[6:]), chain[:6]...)))
			r, err := s.Room(ctx, "!other:example.org")
			if err != nil || r.LastSeq != 3 {
				t.Fatalf("the other room: LastSeq %d (%v), want 3", r.LastSeq, err)
			}
			// New arrivals follow the migrated ones.
			next := makeEvent(room, "$next", 13, []string{chain[11].ID}, 64)
			mustInsert(t, s, []Event{next})
			checkArrivals(t, s, append(eventIDs(append(slices.Clone(chain[6:]), chain[:6]...)), "$next"))
		})
	}
}

// TestEventQueryPlan: on SQLite, a topological page walks the depth index without sorting,
// whatever arrival bound it has, and an arrival page walks the arrival index.
func TestEventQueryPlan(t *testing.T) {
	s := openTest(t, sqliteTestURL(t))
	for _, c := range []struct {
		q     EventQuery
		index string
	}{
		{EventQuery{UpToSeq: 10, AfterSeq: 2, SinceTS: 5, UntilTS: 9, Limit: 5}, "events_room_depth"},
		{EventQuery{UpToSeq: 10, After: &Position{Depth: 3, EventID: "$x"}, Limit: 5}, "events_room_depth"},
		{EventQuery{ByArrival: true, AfterSeq: 2, UpToSeq: 10, Limit: 5}, "events_room_seq"},
	} {
		q, args := eventQuerySQL(room, c.q)
		rows, err := s.db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		if !strings.Contains(joined, c.index) || strings.Contains(joined, "TEMP B-TREE") {
			t.Errorf("%+v: plan %q, want %s without a sort", c.q, joined, c.index)
		}
	}
}

func seqOf(t *testing.T, s Store, id string) int64 {
	t.Helper()
	all, err := s.QueryEvents(t.Context(), room, EventQuery{ByArrival: true, Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if e.ID == id {
			return e.Seq
		}
	}
	t.Fatalf("%s is not held", id)
	return 0
}

func abbreviated(ids []string) string {
	if len(ids) > 12 {
		return fmt.Sprintf("%v … (%d)", ids[:12], len(ids))
	}
	return fmt.Sprint(ids)
}

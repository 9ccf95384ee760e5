package store

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { runConformance(t, b.newURL) })
	}
}

// runConformance is the behaviour every backend must show. newURL makes the URL of a fresh,
// empty store (and skips or fails the test when the backend is not available).
func runConformance(t *testing.T, newURL func(testing.TB) string) {
	for _, c := range []struct {
		name string
		run  func(*testing.T, func(testing.TB) string)
	}{
		{"OutOfOrderArrival", testOutOfOrderArrival},
		{"ForkAndMerge", testForkAndMerge},
		{"DuplicateBatches", testDuplicateBatches},
		{"FailedBatchChangesNothing", testFailedBatch},
		{"CancelledBatchIsAllOrNothing", testCancelledBatch},
		{"RedactedCopiesUpgrade", testRedactedUpgrade},
		{"ConcurrentWriters", testConcurrentWriters},
		{"TopologicalPaging", testTopologicalPaging},
		{"EventLookups", testEventLookups},
		{"AttemptBookkeeping", testAttemptBookkeeping},
		{"Rooms", testRooms},
		{"ReopenAndConcurrentOpen", testReopen},
		{"Membership", testMembership},
		{"State", testState},
		{"EventsInDepthRange", testEventsInDepthRange},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, newURL) })
	}
}

const room = "!room:example.org"

func mustInsert(t *testing.T, s Store, events []Event) InsertResult {
	t.Helper()
	res, err := s.InsertEvents(t.Context(), room, events)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func testOutOfOrderArrival(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 400, 200, 1)
	m := newModel()
	for _, batch := range batches(shuffled(events, 2), 40, 3) {
		if res := mustInsert(t, s, batch); res.New != len(batch) {
			t.Fatalf("InsertEvents = %+v, want %d new", res, len(batch))
		}
		m.add(batch...)
		checkAgainstModel(t, s, room, m)
	}
	r, err := s.Room(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	if r.BackwardExtremities != 0 || r.MinDepth != 1 || r.MaxDepth != slices.MaxFunc(events, byDepth).Depth {
		t.Fatalf("complete room: %+v", r)
	}

	// A chain inserted newest first, one event at a time: the hole walks down the chain.
	s = openTest(t, newURL(t))
	chain := linearChain(room, 20, 100)
	for i := len(chain) - 1; i >= 0; i-- {
		mustInsert(t, s, chain[i:i+1])
		wantBackward := map[string]depthRange{}
		if i > 0 {
			wantBackward[chain[i-1].ID] = depthRange{chain[i].Depth, chain[i].Depth}
		}
		checkExtremities(t, s, []string{chain[len(chain)-1].ID}, wantBackward)
	}
}

func byDepth(a, b Event) int { return int(a.Depth - b.Depth) }

// checkExtremities compares the extremities with exact expectations.
func checkExtremities(t *testing.T, s Store, wantForward []string, wantBackward map[string]depthRange) {
	t.Helper()
	if err := s.CheckConsistency(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	fwd, err := s.ForwardExtremities(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fwd, slices.Sorted(slices.Values(wantForward))) {
		t.Fatalf("forward extremities %v, want %v", fwd, wantForward)
	}
	bwd, err := s.BackwardExtremities(t.Context(), room, BackwardFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]depthRange{}
	for _, b := range bwd {
		got[b.EventID] = depthRange{b.MinChildDepth, b.MaxChildDepth}
	}
	if !maps.Equal(got, wantBackward) {
		t.Fatalf("backward extremities %v, want %v", got, wantBackward)
	}
}

func testForkAndMerge(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	ev := func(id string, depth int64, prevs ...string) Event { return makeEvent(room, id, depth, prevs, 100) }
	// A ← B ← C1 ← M, B ← C2 ← M (M merges the fork), and later C1 ← D (a new fork).
	a, b, c1, c2 := ev("$a", 1), ev("$b", 2, "$a"), ev("$c1", 3, "$b"), ev("$c2", 3, "$b")
	m, d := ev("$m", 4, "$c1", "$c2"), ev("$d", 4, "$c1")
	for _, step := range []struct {
		insert       []Event
		wantForward  []string
		wantBackward map[string]depthRange
	}{
		{[]Event{m}, []string{"$m"}, map[string]depthRange{"$c1": {4, 4}, "$c2": {4, 4}}},
		{[]Event{c2}, []string{"$m"}, map[string]depthRange{"$c1": {4, 4}, "$b": {3, 3}}},
		// A has no held child yet, so it is a forward extremity of its own fragment.
		{[]Event{a, c1}, []string{"$a", "$m"}, map[string]depthRange{"$b": {3, 3}}},
		{[]Event{b}, []string{"$m"}, map[string]depthRange{}},
		{[]Event{d}, []string{"$d", "$m"}, map[string]depthRange{}},
	} {
		mustInsert(t, s, step.insert)
		checkExtremities(t, s, step.wantForward, step.wantBackward)
	}
}

func testDuplicateBatches(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 300, 300, 5)
	if res := mustInsert(t, s, events[:200]); res != (InsertResult{New: 200}) {
		t.Fatalf("first insert = %+v", res)
	}
	before := dump(t, s)
	if res := mustInsert(t, s, shuffled(events[:200], 6)); res != (InsertResult{Duplicates: 200}) {
		t.Fatalf("second insert = %+v, want 200 duplicates", res)
	}
	if after := dump(t, s); after != before {
		t.Fatal("inserting the same batch twice changed the store")
	}
	if res := mustInsert(t, s, events[150:]); res != (InsertResult{New: 100, Duplicates: 50}) {
		t.Fatalf("overlapping insert = %+v", res)
	}
	x := events[0]
	if res := mustInsert(t, s, []Event{x, x}); res != (InsertResult{Duplicates: 2}) {
		t.Fatalf("held event twice in a batch = %+v", res)
	}
	y := makeEvent(room, "$y", 500, []string{events[299].ID}, 50)
	if res := mustInsert(t, s, []Event{y, y}); res != (InsertResult{New: 1, Duplicates: 1}) {
		t.Fatalf("new event twice in a batch = %+v", res)
	}
	if res, err := s.InsertEvents(t.Context(), room, nil); err != nil || res != (InsertResult{}) {
		t.Fatalf("empty batch = %+v, %v", res, err)
	}
	m := newModel()
	m.add(events...)
	m.add(y)
	checkAgainstModel(t, s, room, m)
}

func testFailedBatch(t *testing.T, newURL func(testing.TB) string) {
	events := forkyDAG(room, 1700, 100, 7)
	prefix, batch := events[:500], shuffled(events[500:], 8)
	for _, c := range []struct {
		name, table, op, cond string
	}{
		// The batch takes three INSERT statements for its events: this fails in the third.
		{"third events statement", "events", "INSERT", "NEW.event_id = '" + batch[len(batch)-1].ID + "'"},
		{"forward extremities, after events and edges", "forward_extremities", "INSERT", "NEW.room_id = '" + room + "'"},
		{"room counters, the last write", "rooms", "UPDATE", "NEW.event_count > 500"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openTest(t, newURL(t))
			mustInsert(t, s, prefix)
			before := dump(t, s)
			installFailure(t, s, c.table, c.op, c.cond)
			_, err := s.InsertEvents(t.Context(), room, batch)
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("InsertEvents error = %v, want the injected failure", err)
			}
			if after := dump(t, s); after != before {
				t.Fatal("a failed batch changed the store")
			}
			removeFailure(t, s, c.table)
			if res := mustInsert(t, s, batch); res.New != len(batch) {
				t.Fatalf("retry = %+v", res)
			}
			m := newModel()
			m.add(events...)
			checkAgainstModel(t, s, room, m)
		})
	}

	t.Run("event of another room in the middle", func(t *testing.T) {
		s := openTest(t, newURL(t))
		mustInsert(t, s, prefix)
		before := dump(t, s)
		bad := slices.Clone(batch)
		bad[600].RoomID = "!other:example.org"
		if _, err := s.InsertEvents(t.Context(), room, bad); !errors.Is(err, ErrConflict) {
			t.Fatalf("InsertEvents error = %v, want ErrConflict", err)
		}
		if after := dump(t, s); after != before {
			t.Fatal("a rejected batch changed the store")
		}
		// An event already held in another room cannot join this one either.
		other := makeEvent("!other:example.org", batch[3].ID, 1, nil, 50)
		if _, err := s.InsertEvents(t.Context(), "!other:example.org", []Event{other}); err != nil {
			t.Fatal(err)
		}
		before = dump(t, s)
		if _, err := s.InsertEvents(t.Context(), room, batch); !errors.Is(err, ErrConflict) {
			t.Fatalf("InsertEvents error = %v, want ErrConflict", err)
		}
		if after := dump(t, s); after != before {
			t.Fatal("a rejected batch changed the store")
		}
	})
}

// testCancelledBatch cancels the context of a large batch at increasing delays: whenever the
// cancellation lands, the batch is stored whole or not at all.
func testCancelledBatch(t *testing.T, newURL func(testing.TB) string) {
	s := openTest(t, newURL(t))
	events := forkyDAG(room, 4000, 200, 9)
	mustInsert(t, s, events[:1000])
	before := dump(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.InsertEvents(ctx, room, events[1000:]); !errors.Is(err, context.Canceled) {
		t.Fatalf("InsertEvents with a cancelled context: %v", err)
	}
	// An error does not prove that nothing was committed: a cancellation that lands during
	// COMMIT leaves the outcome unknown to the client. What must hold is all or nothing.
	failures := 0
	for delay := 100 * time.Microsecond; ; delay = delay * 3 / 2 {
		ctx, cancel := context.WithTimeout(t.Context(), delay)
		_, err := s.InsertEvents(ctx, room, events[1000:])
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("InsertEvents: %v", err)
		}
		r, rerr := s.Room(t.Context(), room)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if r.Events == int64(len(events)) {
			break
		}
		if err == nil {
			t.Fatalf("InsertEvents succeeded, but the room has %d events", r.Events)
		}
		if r.Events != 1000 {
			t.Fatalf("a batch cancelled after %v left %d events, want 1000 or %d", delay, r.Events, len(events))
		}
		if after := dump(t, s); after != before {
			t.Fatalf("a batch cancelled after %v changed the store", delay)
		}
		t.Logf("cancelled after %v: %v", delay, err)
		failures++
	}
	t.Logf("%d cancelled attempts left the store as it was", failures)
	m := newModel()
	m.add(events...)
	checkAgainstModel(t, s, room, m)
}

func testConcurrentWriters(t *testing.T, newURL func(testing.TB) string) {
	u := newURL(t)
	// Two stores on one database: in SQLite two connection pools contend for the file lock,
	// as two processes would; in PostgreSQL they contend for the room's row.
	stores := []Store{openTest(t, u), openTest(t, u)}
	events := forkyDAG(room, 1200, 300, 10)
	const writers = 4
	var created atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			// Each writer sends three quarters of the events, so every event is sent by
			// three writers, in different orders and batches.
			var mine []Event
			for i, e := range events {
				if i%writers != w {
					mine = append(mine, e)
				}
			}
			for _, b := range batches(shuffled(mine, uint64(w)), 80, uint64(w)+100) {
				res, err := stores[w%2].InsertEvents(t.Context(), room, b)
				if err != nil {
					errs <- err
					return
				}
				created.Add(int64(res.New))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if created.Load() != int64(len(events)) {
		t.Fatalf("writers reported %d new events, want each of %d exactly once", created.Load(), len(events))
	}
	m := newModel()
	m.add(events...)
	checkAgainstModel(t, stores[0], room, m)
}

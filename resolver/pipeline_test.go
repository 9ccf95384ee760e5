package resolver_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// insertWatch is a store that, on an insert that brings the store to k /backfill pages of 100
// events, waits (bounded) for the peer to have received a k+1-th /backfill request before
// storing: it notes whether the request for the page below travelled before the pages were
// stored. (The writer may store several pages at once, those that waited for it.)
type insertWatch struct {
	store.Store
	peer *fixturepeer.Peer
	wait time.Duration

	mu                           sync.Mutex
	inserts, pages, whileStoring int64
}

func (w *insertWatch) InsertEvents(ctx context.Context, roomID string, events []store.Event) (store.InsertResult, error) {
	if len(events) > 1 {
		w.mu.Lock()
		w.inserts++
		w.pages += int64(len(events)+99) / 100
		k := w.pages
		w.mu.Unlock()
		deadline := time.Now().Add(w.wait)
		for w.peer.Count(fixturepeer.EndpointBackfill) <= k && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if w.peer.Count(fixturepeer.EndpointBackfill) > k {
			w.mu.Lock()
			w.whileStoring++
			w.mu.Unlock()
		}
	}
	return w.Store.InsertEvents(ctx, roomID, events)
}

// TestBackfillIsPipelined: the /backfill for the page below is asked while a page is stored,
// not after; a pull that waits for the store would make each page wait out the bound.
func TestBackfillIsPipelined(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 11, Events: 1000, Linear: true})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	watch := &insertWatch{Store: h.store, peer: peer, wait: 3 * time.Second}
	h = newHarnessOnStore(t, room, []*fixturepeer.Peer{peer}, watch)

	results := h.syncUntilDone(5)
	if last := results[len(results)-1]; !last.Converged {
		t.Fatalf("last pass %+v: want converged", last)
	}
	h.assertHolds(room.IDSet(), nil)
	// 10 pages of 100: all inserts but the last, which holds the room's first page, have a
	// page below them.
	if watch.pages < 10 || watch.whileStoring < watch.inserts-1 {
		t.Errorf("the next /backfill travelled during %d of %d inserts (%d pages), want all but the last",
			watch.whileStoring, watch.inserts, watch.pages)
	}
	// Following pages asks for nothing twice: one /backfill a page of 100.
	if n := peer.Count(fixturepeer.EndpointBackfill); n > 11 {
		t.Errorf("%d /backfill requests for 1,000 events in pages of 100", n)
	}
}

// slowStore is a store whose inserts of events take at least delay more, as a database
// slower than verification: it notes the size of each insert.
type slowStore struct {
	store.Store
	delay time.Duration

	mu      sync.Mutex
	batches []int
}

func (s *slowStore) InsertEvents(ctx context.Context, roomID string, events []store.Event) (store.InsertResult, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.batches = append(s.batches, len(events))
	s.mu.Unlock()
	return s.Store.InsertEvents(ctx, roomID, events)
}

// TestQueuedAnswersAreStoredTogether: when the store is slower than the peer and the
// verification, the answers that wait for it are stored in one transaction each time, up to
// about 500 events, not one transaction an answer; nothing is asked twice for it.
func TestQueuedAnswersAreStoredTogether(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 14, Events: 2000, Linear: true})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	slow := &slowStore{Store: h.store, delay: 200 * time.Millisecond}
	h = newHarnessOnStore(t, room, []*fixturepeer.Peer{peer}, slow)

	results := h.syncUntilDone(5)
	if last := results[len(results)-1]; !last.Converged {
		t.Fatalf("last pass %+v: want converged", last)
	}
	h.assertHolds(room.IDSet(), nil)
	answers := peer.Count(fixturepeer.EndpointBackfill)
	if minimum := int64(len(room.Events)) / 100; answers > minimum+2 {
		t.Errorf("%d /backfill requests for %d events in pages of 100, want about %d", answers, len(room.Events), minimum)
	}
	largest := 0
	for _, n := range slow.batches {
		largest = max(largest, n)
	}
	// Several answers are verified in the time one waits for the store, under -race too: the
	// queue fills.
	if int64(len(slow.batches)) > answers/2 || largest < 300 || largest > 600 {
		t.Errorf("%d /backfill answers were stored in %d transactions of %v events: want at most half as many, of up to about 500",
			answers, len(slow.batches), slow.batches)
	}
}

// TestLieMidChainStopsTheChain: a peer that slips another room's event into a later page of a
// followed pull has that answer discarded, the request it had in flight dropped without
// counting against it or the pass as a failure, and the honest peer fills the rest.
func TestLieMidChainStopsTheChain(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 12, Events: 1000, Linear: true})
	liar := fixturepeer.Start(t, room, fixturepeer.WithLies(fixturepeer.Lie{
		Kind: fixturepeer.LieForeignEvent, Endpoint: fixturepeer.EndpointBackfill, Events: []id.EventID{room.Events[450].ID},
	}))
	honest := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{liar, honest})
	results := h.syncUntilDone(20)
	h.assertHolds(room.IDSet(), nil)
	discarded := false
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		if strings.Contains(r.Err.Error(), "stopped") || strings.Contains(r.Err.Error(), "canceled") {
			t.Errorf("pass error %q: a chain stopped by us is no failure", r.Err)
		}
		discarded = discarded || strings.Contains(r.Err.Error(), "discarded answer of "+liar.ServerName())
	}
	if !discarded {
		t.Error("no pass reported the liar's discarded answer")
	}
	if honest.Count(fixturepeer.EndpointBackfill)+honest.Count(fixturepeer.EndpointEvent) == 0 {
		t.Error("the honest peer was never asked")
	}
}

// TestForkedRoomIsPulledFromPeersAtOnce: a room that forked early into two long branches, held
// whole by two distant peers, is pulled a branch from each at once (spread), not all of it
// from the first peer while the second idles; nothing is asked twice.
func TestForkedRoomIsPulledFromPeersAtOnce(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 13, Events: 3000, ForkRate: 0.2, MergeRate: -1,
		MaxBranches: 2, JoinRate: -1, LinearRunRate: -1, Heads: 2})
	if st := room.Stats(); st.Merges > 0 || len(room.Heads()) != 2 {
		t.Fatalf("want two branches that never merge, got %+v with %d heads", st, len(room.Heads()))
	}
	a := fixturepeer.Start(t, room, fixturepeer.WithLatency(10*time.Millisecond))
	b := fixturepeer.Start(t, room, fixturepeer.WithLatency(10*time.Millisecond))
	h := newHarness(t, room, []*fixturepeer.Peer{a, b})
	results := h.syncUntilDone(5)
	if last := results[len(results)-1]; !last.Converged {
		t.Fatalf("last pass %+v: want converged", last)
	}
	h.assertHolds(room.IDSet(), nil)
	servedA, servedB := a.PDUsServed(), b.PDUsServed()
	if min(servedA, servedB) < int64(len(room.Events))/4 {
		t.Errorf("peers served %d and %d events of %d: want each a branch's worth", servedA, servedB, len(room.Events))
	}
	requests := a.Count(fixturepeer.EndpointBackfill) + b.Count(fixturepeer.EndpointBackfill)
	if minimum := int64(len(room.Events)) / 100; requests > minimum*11/10+4 {
		t.Errorf("%d /backfill requests, want about %d (100 events each)", requests, minimum)
	}
}

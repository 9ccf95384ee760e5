package e2e

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomsync/roomsync/store"
)

// liveWatch polls the store (read-only, as the manager writes it) for the events being sent,
// from before the first is sent, and notes when each shows up.
type liveWatch struct {
	t     *testing.T
	room  string
	st    store.Store
	mu    sync.Mutex
	sent  map[string]time.Time
	seen  map[string]time.Time
	stop  chan struct{}
	done  chan struct{}
	limit time.Duration
}

func watchStore(t *testing.T, storeURL, room string, limit time.Duration) *liveWatch {
	t.Helper()
	st, err := store.OpenReadOnly(context.Background(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	w := &liveWatch{t: t, room: room, st: st, sent: map[string]time.Time{}, seen: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{}), limit: limit}
	go w.poll()
	t.Cleanup(w.close)
	return w
}

func (w *liveWatch) poll() {
	defer close(w.done)
	// Bounded: 20 ms apart for at most 5 minutes.
	for range 15000 {
		select {
		case <-w.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		w.mu.Lock()
		var pending []string
		for id := range w.sent {
			if _, ok := w.seen[id]; !ok {
				pending = append(pending, id)
			}
		}
		w.mu.Unlock()
		if len(pending) == 0 {
			continue
		}
		has, err := w.st.HasEvents(context.Background(), pending)
		if err != nil {
			continue // the manager holds the write lock; the next poll reads
		}
		now := time.Now()
		w.mu.Lock()
		for id, ok := range has {
			if ok {
				w.seen[id] = now
			}
		}
		w.mu.Unlock()
	}
}

func (w *liveWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	_ = w.st.Close()
}

// sentIDs are the events noted as sent.
func (w *liveWatch) sentIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Collect(maps.Keys(w.sent))
}

// noteSent notes that the event was sent at at.
func (w *liveWatch) noteSent(id string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent[id] = at
}

// wait waits until every sent event is stored, failing when one took longer than the limit,
// and returns the send-to-stored latencies, sorted, and how many of the sent events have two
// or more prev events (they merge a fork of the DAG).
func (w *liveWatch) wait() ([]time.Duration, int) {
	t := w.t
	t.Helper()
	deadline := time.Now().Add(w.limit + 5*time.Second)
	for {
		w.mu.Lock()
		missing := len(w.sent) - len(w.seen)
		w.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events not stored within %v of the last send", missing, len(w.sent), w.limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var latencies []time.Duration
	for id, at := range w.sent {
		latencies = append(latencies, w.seen[id].Sub(at))
	}
	slices.Sort(latencies)
	if worst := latencies[len(latencies)-1]; worst > w.limit {
		t.Errorf("an event took %v from sent to stored, over %v", worst, w.limit)
	}
	merges := 0
	err := w.st.StreamEvents(context.Background(), w.room, func(ev store.Event) error {
		if _, ok := w.sent[ev.ID]; ok && len(ev.PrevEvents) > 1 {
			merges++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return latencies, merges
}

// sendAtOnce has one user of each Dendrite send count messages to room, one at a time, all
// Dendrites at once, noting each in w just before its request.
func sendAtOnce(t *testing.T, w *liveWatch, room string, count int, ds ...*dendrite) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		c, err := d.peer.Login(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for range count {
				at := time.Now()
				ids, err := c.Send(ctx, room, 1, 1)
				if err != nil {
					errs[i] = err
					return
				}
				w.noteSent(ids[0], at)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("sending on %s: %v", ds[i].serverName, err)
		}
	}
}

// waitHolds waits, up to a minute, until the Dendrite shows every sent event.
func waitHolds(t *testing.T, d *dendrite, room string, sent []string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ids := d.eventIDs(t, room)
		missing := 0
		for _, id := range sent {
			if !slices.Contains(ids, id) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still lacks %d of the events sent a minute ago", d.serverName, missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// percentile is the p-th percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

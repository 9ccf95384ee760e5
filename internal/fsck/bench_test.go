package fsck

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// BenchmarkFsck100k checks a SQLite store holding a 100,000-event room of real signed PDUs,
// with the origins' keys kept, as `roomsync fsck` does: the database's quick_check, the
// room's rows against each other, and every event verified again. It reports the seconds of
// the whole check, of its cheap part alone (store.QuickCheck, what the manager runs at
// start-up) and of CheckRoomCounters (what inspect and sync run), and the events verified a
// second.
func BenchmarkFsck100k(b *testing.B) {
	const n = 100_000
	room := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 100, Events: n})
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(b.TempDir(), "events.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	batch := make([]store.Event, 0, 2000)
	for i, e := range room.Events {
		prevs := make([]string, len(e.Prev))
		for j, p := range e.Prev {
			prevs[j] = string(p)
		}
		batch = append(batch, store.Event{ID: string(e.ID), RoomID: string(room.ID), Depth: e.Depth, OriginServerTS: e.TS,
			Type: e.Type, StateKey: e.StateKey, Sender: string(e.Sender), Origin: e.Origin, PrevEvents: prevs, Raw: e.JSON})
		if len(batch) == cap(batch) || i == len(room.Events)-1 {
			if _, err := st.InsertEvents(ctx, string(room.ID), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := st.EnsureRoom(ctx, string(room.ID), string(room.Version), string(room.Create().ID)); err != nil {
		b.Fatal(err)
	}
	keepOriginKeys(b, st, room)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		rep, err := Check(ctx, st, Options{})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if !rep.Summary.Clean || rep.Summary.Verified != n {
			b.Fatalf("%+v", rep.Summary)
		}
		b.ReportMetric(took.Seconds(), "fsck-s")
		b.ReportMetric(float64(n)/took.Seconds(), "events/s")
		start = time.Now()
		if d, err := store.QuickCheck(ctx, st); err != nil || !d.None() {
			b.Fatalf("%+v, %v", d, err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "quickcheck-s")
		start = time.Now()
		if p, err := store.CheckRoomCounters(ctx, st, string(room.ID)); err != nil || len(p) > 0 {
			b.Fatalf("%q, %v", p, err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "counters-s")
	}
}

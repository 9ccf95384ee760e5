package store

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkInsert measures sustained batch inserts of ~1 KiB events into a growing room, for a
// linear chain and for a forky DAG, at two batch sizes. events/s is the figure to watch; run
// with e.g. -benchtime=200x so the room grows past 20,000 events.
func BenchmarkInsert(b *testing.B) {
	shapes := []struct {
		name        string
		fork, merge float64
	}{
		{"chain", 0, 0},
		{"forky", 0.17, 0.2},
	}
	for _, be := range backends {
		for _, shape := range shapes {
			for _, size := range []int{100, 500} {
				b.Run(fmt.Sprintf("%s/%s/batch=%d", be.name, shape.name, size), func(b *testing.B) {
					s := openTest(b, be.newURL(b))
					g := newDAG(room, 1024, 1)
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						batch := g.grow(size, shape.fork, shape.merge)
						b.StartTimer()
						if _, err := s.InsertEvents(b.Context(), room, batch); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
				})
			}
		}
	}
}

// BenchmarkExtremities measures what a reconcile asks when nothing changed, on a room of a
// million events (ROOMSYNC_BENCH_ROOM_EVENTS to change it) with about a thousand holes. The
// room is built once per backend, through InsertEvents with large batches; that takes a minute
// or two, which is why only this benchmark builds it.
func BenchmarkExtremities(b *testing.B) {
	size := 1_000_000
	if v := os.Getenv("ROOMSYNC_BENCH_ROOM_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("ROOMSYNC_BENCH_ROOM_EVENTS: %v", err)
		}
		size = n
	}
	for _, be := range backends {
		// This body runs once (it has sub-benchmarks), so the room is built once.
		b.Run(be.name, func(b *testing.B) {
			s := openTest(b, be.newURL(b))
			r := buildBigRoom(b, s, size)
			ids := make([]string, 0, 100)
			_ = s.StreamEvents(b.Context(), room, func(e Event) error {
				if len(ids) == cap(ids) {
					return errStop
				}
				ids = append(ids, e.ID)
				return nil
			})
			now := time.Now()
			for _, q := range []struct {
				name string
				run  func() error
			}{
				{"Room", func() error { _, err := s.Room(b.Context(), room); return err }},
				{"ForwardExtremities", func() error { _, err := s.ForwardExtremities(b.Context(), room); return err }},
				{"BackwardExtremities/due,fillable,limit=100", func() error {
					_, err := s.BackwardExtremities(b.Context(), room, BackwardFilter{DueBy: now, SkipUnfillable: true, Limit: 100})
					return err
				}},
				{"BackwardExtremities/due,above-half-depth,limit=100", func() error {
					_, err := s.BackwardExtremities(b.Context(), room,
						BackwardFilter{DueBy: now, ChildDepthAtLeast: r.MaxDepth / 2, Limit: 100})
					return err
				}},
				{"HasEvents/100", func() error { _, err := s.HasEvents(b.Context(), ids); return err }},
			} {
				b.Run(q.name, func(b *testing.B) {
					for b.Loop() {
						if err := q.run(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

var errStop = fmt.Errorf("stop")

// buildBigRoom fills the room with a forky DAG of n events of 256 bytes, leaving out one event
// in a thousand (the holes: backward extremities), and gives some holes failed attempts and
// some an unfillable mark, as a long-running sync would.
func buildBigRoom(b *testing.B, s Store, n int) Room {
	b.Helper()
	start := time.Now()
	g := newDAG(room, 256, 42)
	const batch = 5000
	skipped := 0
	for done := 0; done < n; done += batch {
		events := g.grow(min(batch, n-done), 0.17, 0.2)
		kept := events[:0]
		for i, e := range events {
			if (done+i)%1000 == 999 {
				skipped++
				continue
			}
			kept = append(kept, e)
		}
		if _, err := s.InsertEvents(b.Context(), room, kept); err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	holes, err := s.BackwardExtremities(b.Context(), room, BackwardFilter{})
	if err != nil {
		b.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for i, h := range holes {
		switch i % 5 {
		case 1:
			err = s.RecordAttemptFailure(b.Context(), room, h.EventID, "peer timed out", later)
		case 2:
			err = s.MarkUnfillable(b.Context(), room, h.EventID, "no peer has it", later)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	r, err := s.Room(b.Context(), room)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built a room of %d events (%d left out) in %v (%.0f events/s): %d forward, %d backward, %d unfillable extremities",
		r.Events, skipped, took.Round(time.Second), float64(r.Events)/took.Seconds(),
		r.ForwardExtremities, r.BackwardExtremities, r.UnfillableExtremities)
	return r
}

package store

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEventKeysMigration times the migration to integer event keys (schema version 9)
// of a store holding a room of a million events (ROOMSYNC_BENCH_ROOM_EVENTS): the room of
// BenchmarkInsertAtSize, taken back to the schema before (undoEventKeys), then opened. On
// SQLite the room comes from the benchmarks' cache, with 4 KiB pages (a store made before
// version 9 has 16 KiB ones); on PostgreSQL it is built first.
func BenchmarkEventKeysMigration(b *testing.B) {
	size := benchRoomSize(b)
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			var u string
			if be.name == "sqlite" {
				u = openRoomCache(b).sqliteRoomAt(b, size)
			} else {
				u = be.newURL(b)
				s, err := Open(context.Background(), u)
				if err != nil {
					b.Fatal(err)
				}
				took := buildRoom(b, s, newDAG(room, 1024, benchSeed), size, benchBuildBatch)
				b.Logf("built a room of %s events in %v", count(size), took.Round(time.Second))
				s.Close()
			}
			s, err := Open(context.Background(), u)
			if err != nil {
				b.Fatal(err)
			}
			undoEventKeys(b, s.(*sqlStore))
			s.Close()
			start := time.Now()
			s, err = Open(context.Background(), u)
			took := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r, err := s.Room(context.Background(), room)
			if err != nil || r.Events != int64(size) {
				b.Fatalf("after the migration: %d events (%v), want %d", r.Events, err, size)
			}
			b.ReportMetric(took.Seconds(), "s/migration")
			b.Logf("migrated a store of %s events to schema version 9 in %v; %s", count(size), took.Round(100*time.Millisecond), loadAverage())
		})
	}
}

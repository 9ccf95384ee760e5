// Package benchstore keeps the large SQLite stores that benchmarks read from: built once,
// straight through the store, and kept in the temporary directory, so that a benchmark of a
// million-event room costs its build only the first time.
package benchstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomsync/roomsync/store"
)

// Open opens the store kind keeps for a room of n events, building it with build first when
// the temporary directory does not hold it whole. A build is made under another name and
// renamed once complete, so a build cut short is never taken for a store. The store is
// closed when the benchmark ends.
func Open(tb testing.TB, kind, roomID string, n int, build func(ctx context.Context, st store.Store, n int) error) store.Store {
	tb.Helper()
	ctx := context.Background()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("roomsync-bench-%s-%d-v1.db", kind, n))
	if _, err := os.Stat(path); err == nil {
		st, err := store.Open(ctx, "sqlite://"+path)
		if err != nil {
			tb.Fatal(err)
		}
		if room, err := st.Room(ctx, roomID); err == nil && room.Events == int64(n) {
			tb.Cleanup(func() { _ = st.Close() })
			return st
		}
		_ = st.Close()
	}
	building := path + ".building"
	for _, p := range []string{building, building + "-wal", building + "-shm"} {
		_ = os.Remove(p)
	}
	start := time.Now()
	st, err := store.Open(ctx, "sqlite://"+building)
	if err != nil {
		tb.Fatal(err)
	}
	if err := build(ctx, st, n); err != nil {
		tb.Fatal(err)
	}
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(building, path); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("built a %d-event room in %v, kept in %s", n, time.Since(start).Round(time.Second), path)
	st, err = store.Open(ctx, "sqlite://"+path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/roomsync/roomsync/internal/storetest"
)

// TestIsFull: what IsFull takes for "no room left", and what it does not (damage, a lost
// connection, other resource limits), wrapped as the store and the resolver wrap errors.
func TestIsFull(t *testing.T) {
	full := sqliteFullError(t)
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("database or disk is full"), false}, // words are not a code
		{"SQLite SQLITE_FULL, as the driver returns it", full, true},
		{"SQLite SQLITE_FULL, wrapped twice", fmt.Errorf("sync room !r:x: %w", fmt.Errorf("insert events: %w", full)), true},
		{"ENOSPC from a file write", &fs.PathError{Op: "write", Path: "/var/lib/roomsync/events.db-wal", Err: syscall.ENOSPC}, true},
		{"ENOSPC, wrapped", fmt.Errorf("insert events: %w", syscall.ENOSPC), true},
		{"EIO", &fs.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, false},
		{"PostgreSQL disk_full", &pgconn.PgError{Code: "53100", Message: `could not extend file "base/16384/16390": No space left on device`}, true},
		{"PostgreSQL disk_full, wrapped", fmt.Errorf("insert events: %w", &pgconn.PgError{Code: "53100"}), true},
		{"PostgreSQL out_of_memory", &pgconn.PgError{Code: "53200"}, false},
		{"PostgreSQL too_many_connections", &pgconn.PgError{Code: "53300"}, false},
		{"PostgreSQL data_corrupted", &pgconn.PgError{Code: "XX001"}, false},
		{"canceled", context.Canceled, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := IsFull(c.err); got != c.want {
				t.Errorf("IsFull(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

// sqliteFullError is the error a real SQLite store returns when it cannot grow.
func sqliteFullError(t *testing.T) error {
	t.Helper()
	s := openTest(t, sqliteTestURL(t))
	limitPages(t, s, 0)
	events := linearChain(room, 400, 2000)
	for i := 0; i < len(events); i += 20 {
		if _, err := s.InsertEvents(t.Context(), room, events[i:i+20]); err != nil {
			return err
		}
	}
	t.Fatal("the store never filled up")
	return nil
}

// limitPages caps the store's database file at its current size plus extra pages, as a
// full disk would: the writer pool has a single connection, which keeps the setting.
func limitPages(t *testing.T, s *sqlStore, extra int) {
	t.Helper()
	var pages int
	if err := s.wdb.QueryRowContext(t.Context(), "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.wdb.ExecContext(t.Context(), fmt.Sprintf("PRAGMA max_page_count = %d", pages+extra)); err != nil {
		t.Fatal(err)
	}
}

// TestFullStoreKeepsWhatItCommitted: a SQLite store that cannot grow fails the batch that
// needs room with an error IsFull recognises, changes nothing, stays consistent, and takes the
// same batch once it has room again.
func TestFullStoreKeepsWhatItCommitted(t *testing.T) {
	events := forkyDAG(room, 1200, 1500, 3)
	s := openTest(t, sqliteTestURL(t))
	mustInsert(t, s, events[:300])
	limitPages(t, s, 40)
	next, before := 300, dump(t, s)
	var fullErr error
	for next < len(events) {
		batch := events[next:min(next+50, len(events))]
		if _, err := s.InsertEvents(t.Context(), room, batch); err != nil {
			fullErr = err
			break
		}
		next += len(batch)
		before = dump(t, s)
	}
	if !IsFull(fullErr) {
		t.Fatalf("InsertEvents error = %v after %d events, want a full store", fullErr, next)
	}
	t.Logf("full after %d of %d events: %v", next, len(events), fullErr)
	if after := dump(t, s); after != before {
		t.Fatal("the batch that found the store full changed it")
	}
	if err := s.CheckConsistency(t.Context(), room); err != nil {
		t.Fatalf("a full store is inconsistent: %v", err)
	}

	limitPages(t, s, 1<<20)
	for next < len(events) {
		batch := events[next:min(next+50, len(events))]
		mustInsert(t, s, batch)
		next += len(batch)
	}
	m := newModel()
	m.add(events...)
	checkAgainstModel(t, s, room, m)
}

// TestFullPostgresKeepsWhatItCommitted: a PostgreSQL database whose tables sit on a small
// tmpfs (a tablespace there; the server's write-ahead log stays on its own disk) fails the
// batch that cannot extend a table with disk_full (53100), which IsFull recognises, changes
// nothing, stays consistent, and takes the batch once the file system has grown.
func TestFullPostgresKeepsWhatItCommitted(t *testing.T) {
	disk := storetest.MountTmpfs(t, 6<<20)
	s := openTest(t, storetest.PostgresURLOn(t, disk.Dir))
	events := forkyDAG(room, 6000, 1500, 5)
	next, before := 0, dump(t, s)
	var fullErr error
	for next < len(events) {
		batch := events[next:min(next+100, len(events))]
		if _, err := s.InsertEvents(t.Context(), room, batch); err != nil {
			fullErr = err
			break
		}
		next += len(batch)
		before = dump(t, s)
	}
	var perr *pgconn.PgError
	if !IsFull(fullErr) || !errors.As(fullErr, &perr) {
		t.Fatalf("InsertEvents error = %v after %d events, want PostgreSQL's disk_full", fullErr, next)
	}
	used, size := disk.Usage(t)
	t.Logf("full after %d of %d events, %d of %d bytes used: %v", next, len(events), used, size, fullErr)
	if after := dump(t, s); after != before {
		t.Fatal("the batch that found the disk full changed the store")
	}
	if err := s.CheckConsistency(t.Context(), room); err != nil {
		t.Fatalf("a full store is inconsistent: %v", err)
	}

	disk.Resize(t, 256<<20)
	for next < len(events) {
		batch := events[next:min(next+100, len(events))]
		mustInsert(t, s, batch)
		next += len(batch)
	}
	m := newModel()
	m.add(events...)
	checkAgainstModel(t, s, room, m)
}

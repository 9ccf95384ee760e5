package store

import (
	"errors"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// pgDiskFull is PostgreSQL's SQLSTATE disk_full (class 53, insufficient resources): a table
// or index file could not be extended.
const pgDiskFull = "53100"

// IsFull reports whether err is the database saying it has no room left: SQLite's SQLITE_FULL
// (the disk is full, or the file reached max_page_count), a write that failed with ENOSPC, or
// PostgreSQL's disk_full. A failed write is rolled back whole, so what was committed before
// stays; the writer should wait for space rather than retry at once, and say so.
func IsFull(err error) bool {
	if err == nil {
		return false
	}
	var serr *sqlite.Error
	if errors.As(err, &serr) && serr.Code()&0xff == sqlite3.SQLITE_FULL {
		return true
	}
	var perr *pgconn.PgError
	if errors.As(err, &perr) && perr.Code == pgDiskFull {
		return true
	}
	return errors.Is(err, syscall.ENOSPC)
}

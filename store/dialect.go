package store

import (
	"strconv"
	"strings"
)

// dialect is everything that differs between the SQLite and PostgreSQL backends. Queries are
// written once, with ? placeholders, and rebound here; the schema is written once, with a
// couple of {{TOKENS}} for the type and table options that have no common spelling.
type dialect struct {
	name string
	// numbered placeholders ($1, $2, …) instead of ?.
	numbered bool
	// forUpdate is appended to the SELECT that reads a room's row at the start of every write
	// transaction. PostgreSQL takes a row lock, which serialises writers of one room across
	// connections and processes; SQLite has no row locks and needs none, because its write
	// transactions start with BEGIN IMMEDIATE and so already exclude each other.
	forUpdate string
	// migrationLock runs first in the migration transaction so that two processes opening a
	// fresh database at once do not both create the schema. SQLite needs nothing: BEGIN
	// IMMEDIATE is already exclusive among writers.
	migrationLock string
	// insertHead and insertTail frame a multi-row INSERT that skips a conflicting row instead
	// of aborting. Besides idempotency this matters to SQLite: a multi-row statement that may
	// abort half-way must keep a statement journal (a copy of every page it touches, so it can
	// undo just itself), which cost a third of the insert time; OR IGNORE means it never aborts.
	insertHead, insertTail string
	// maxParams bounds the bound parameters of one statement (SQLite's default
	// SQLITE_MAX_VARIABLE_NUMBER is 32766, PostgreSQL's protocol limit is 65535).
	maxParams int
	// ddl tokens.
	blobType     string
	withoutRowID string
}

var (
	sqliteDialect = &dialect{
		name:       "sqlite",
		insertHead: "INSERT OR IGNORE INTO ",
		maxParams:  32766,
		blobType:   "BLOB",
		// Edge and extremity rows are small and always looked up by their key: storing them
		// in the key's b-tree saves a second index and a write per row.
		withoutRowID: " WITHOUT ROWID",
	}
	postgresDialect = &dialect{
		name:       "postgres",
		numbered:   true,
		forUpdate:  " FOR UPDATE",
		insertHead: "INSERT INTO ",
		insertTail: " ON CONFLICT DO NOTHING",
		// The key is arbitrary but fixed, so that every roomsync process takes the same lock:
		// "roomsync" in ASCII, as a big-endian int64.
		migrationLock: "SELECT pg_advisory_xact_lock(8245931958618123875)",
		maxParams:     65535,
		blobType:      "BYTEA",
	}
)

// maxRowsPerStatement caps multi-row statements even where parameters would allow more:
// beyond a few hundred rows a statement gets no faster, only larger to parse.
const maxRowsPerStatement = 500

// rebind rewrites ? placeholders for the dialect. The queries are ours and never hold a ? in
// a string literal or comment, but quoted text is skipped anyway so that a future query with
// one does not silently break.
func (d *dialect) rebind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + len(q)/4)
	n := 0
	inQuote := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			inQuote = !inQuote
			b.WriteByte(c)
		case c == '?' && !inQuote:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ddl fills in the schema tokens.
func (d *dialect) ddl(q string) string {
	return strings.NewReplacer("{{BLOB}}", d.blobType, "{{WITHOUT_ROWID}}", d.withoutRowID).Replace(q)
}

// rowsPerStatement is how many rows of cols columns one multi-row statement may carry.
func (d *dialect) rowsPerStatement(cols int) int {
	return min(maxRowsPerStatement, d.maxParams/cols)
}

// placeholders returns "(?,?,…),(?,?,…)…": rows groups of cols placeholders each.
func placeholders(rows, cols int) string {
	group := "(" + strings.Repeat("?,", cols-1) + "?)"
	var b strings.Builder
	b.Grow(rows * (len(group) + 1))
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(group)
	}
	return b.String()
}

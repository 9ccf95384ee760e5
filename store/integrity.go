package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The integrity of a store as a whole, for `roomsync fsck` and the manager's start-up check:
// the database beneath the rows (SQLite's own checks, or a read of every table on
// PostgreSQL) and the schema the migrations made. What a room's rows say of each other is in
// integrity_room.go; the repair of a room in repair.go. These take a Store as Open returns
// it: they need its SQL.

// DatabaseCheck is what CheckDatabase found beneath the rooms' rows.
type DatabaseCheck struct {
	// Method names the checks that ran.
	Method string
	// SchemaVersion is the version schema_migrations records; 0 when it cannot be read.
	SchemaVersion int
	// Damaged lists damage to the database itself (pages, b-trees, unreadable tables): a
	// repair of rows cannot undo it.
	Damaged []string
	// Schema lists what the schema lacks at its recorded version: tables, columns and
	// indexes, or indexes PostgreSQL left invalid.
	Schema []string
	// MissingTables are the tables the schema lacks: no room can be checked without them.
	MissingTables []string
	// OrphanRooms are rooms whose events are held but that have no row in rooms.
	OrphanRooms []string
}

// OK reports whether nothing was found.
func (c DatabaseCheck) OK() bool {
	return len(c.Damaged) == 0 && len(c.Schema) == 0 && len(c.OrphanRooms) == 0
}

// maxDatabaseProblems bounds the lines one check keeps: past a hundred, more say nothing new.
const maxDatabaseProblems = 100

// CheckDatabase checks the database beneath the rows: on SQLite, PRAGMA quick_check (with
// thorough, integrity_check, which also compares every index with its table: slower); on
// PostgreSQL, which has no such check without the amcheck extension, a sequential read of
// every table, which fails on a page PostgreSQL cannot read. Then, on both, the schema:
// every table, column and index the migrations up to the recorded version make, and the
// rooms whose events have no room row. It costs a read of the whole database.
func CheckDatabase(ctx context.Context, st Store, thorough bool) (DatabaseCheck, error) {
	s, err := sqlStoreOf(st)
	if err != nil {
		return DatabaseCheck{}, err
	}
	var c DatabaseCheck
	if s.d == sqliteDialect {
		err = s.sqliteCheck(ctx, &c, thorough)
	} else {
		err = s.postgresTableReads(ctx, &c)
	}
	if err != nil {
		return c, err
	}
	if err := s.compareSchema(ctx, &c); err != nil {
		return c, err
	}
	if len(c.MissingTables) == 0 {
		if err := s.orphanRooms(ctx, &c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// sqlStoreOf is the SQL store behind st.
func sqlStoreOf(st Store) (*sqlStore, error) {
	s, ok := st.(*sqlStore)
	if !ok {
		return nil, fmt.Errorf("not a store opened by store.Open (%T)", st)
	}
	return s, nil
}

// sqliteCheck runs quick_check or integrity_check. SQLite reports damage as rows of text
// ("ok" alone when there is none), or fails the statement when the damage stops the check.
func (s *sqlStore) sqliteCheck(ctx context.Context, c *DatabaseCheck, thorough bool) error {
	c.Method = "quick_check"
	if thorough {
		c.Method = "integrity_check"
	}
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf("PRAGMA %s(%d)", c.Method, maxDatabaseProblems))
	if err != nil {
		return s.damageOr(ctx, c, c.Method, err)
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return s.damageOr(ctx, c, c.Method, err)
		}
		if line != "ok" {
			c.Damaged = append(c.Damaged, strings.TrimPrefix(line, "*** in database main ***\n"))
		}
	}
	if err := rows.Err(); err != nil {
		return s.damageOr(ctx, c, c.Method, err)
	}
	return nil
}

// postgresTableReads reads every row of each table once, with index scans off so that the
// heap itself is read: a page PostgreSQL cannot read (a failed checksum, a bad header) fails
// the read with data_corrupted. TOASTed values are not read here; fsck's re-verification of
// every event reads those of the events.
func (s *sqlStore) postgresTableReads(ctx context.Context, c *DatabaseCheck) error {
	c.Method = "read of every table"
	tables, err := s.tables(ctx)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	for _, table := range tables {
		if err := s.readTable(ctx, table); err != nil {
			if err := s.damageOr(ctx, c, "read of table "+table, err); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *sqlStore) readTable(ctx context.Context, table string) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	for _, q := range []string{"SET LOCAL enable_indexscan = off", "SET LOCAL enable_indexonlyscan = off",
		"SET LOCAL enable_bitmapscan = off"} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	var n int64
	// The table name comes from the catalog and is one of ours; quoted all the same.
	return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM "`+strings.ReplaceAll(table, `"`, `""`)+`"`).Scan(&n)
}

// damageOr records err as damage if it is one, and returns it otherwise (the context's end,
// a lost connection: nothing to say of the database).
func (s *sqlStore) damageOr(ctx context.Context, c *DatabaseCheck, what string, err error) error {
	if IsDamage(err) {
		c.Damaged = append(c.Damaged, fmt.Sprintf("%s failed: %v", what, err))
		return nil
	}
	return fmt.Errorf("%s: %w", what, withContextErr(ctx, err))
}

// IsDamage reports whether err is the database saying that its own files are damaged
// (SQLite's SQLITE_CORRUPT or SQLITE_NOTADB, PostgreSQL's data_corrupted or
// index_corrupted), as opposed to a wrong query, a lost connection or a missing file.
func IsDamage(err error) bool {
	var serr *sqlite.Error
	if errors.As(err, &serr) {
		switch serr.Code() & 0xff {
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return true
		}
	}
	var perr *pgconn.PgError
	if errors.As(err, &perr) {
		return perr.Code == "XX001" || perr.Code == "XX002"
	}
	return false
}

// orphanRooms finds rooms whose events are held without a room row: the row lost, the
// events kept. The index on (room_id, depth, event_id) is read once.
func (s *sqlStore) orphanRooms(ctx context.Context, c *DatabaseCheck) error {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT e.room_id FROM events e
		WHERE NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = e.room_id) ORDER BY e.room_id`)
	if err != nil {
		return s.damageOr(ctx, c, "look for events of rooms without a room row", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return s.damageOr(ctx, c, "look for events of rooms without a room row", err)
		}
		c.OrphanRooms = append(c.OrphanRooms, id)
	}
	if err := rows.Err(); err != nil {
		return s.damageOr(ctx, c, "look for events of rooms without a room row", err)
	}
	return nil
}

// RoomIDs lists the rooms the store has a row for, sorted.
func RoomIDs(ctx context.Context, st Store) ([]string, error) {
	s, err := sqlStoreOf(st)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT room_id FROM rooms ORDER BY room_id`)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", withContextErr(ctx, err))
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list rooms: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rooms: %w", withContextErr(ctx, err))
	}
	return slices.Clip(ids), nil
}

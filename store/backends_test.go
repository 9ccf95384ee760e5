package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/internal/storetest"
)

// postgresEnv names the server the PostgreSQL tests use; hack/postgres.sh start prints one.
const postgresEnv = storetest.PostgresEnv

// backend makes URLs of fresh, empty stores of one kind.
type backend struct {
	name   string
	newURL func(tb testing.TB) string
}

var backends = []backend{
	{"sqlite", sqliteTestURL},
	{"postgres", postgresTestURL},
}

// sqliteTestURL is a store file in the test's temporary directory.
func sqliteTestURL(tb testing.TB) string { return storetest.SQLiteURL(tb) }

// postgresTestURL creates a database of its own on the server named by ROOMSYNC_TEST_POSTGRES_URL
// and drops it when the test ends (see storetest.PostgresURL).
func postgresTestURL(tb testing.TB) string { return storetest.PostgresURL(tb) }

// openTest opens the store at u and closes it when the test ends.
// openTest opens a store for a test, as the concrete type: the tests also call the methods
// that only the implementation has (EventsPage, Event, HasEvent).
func openTest(tb testing.TB, u string) *sqlStore {
	tb.Helper()
	s, err := Open(context.Background(), u)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s.(*sqlStore)
}

// dump renders every row of every table, in key order, for before/after comparisons.
func dump(tb testing.TB, st Store) string {
	tb.Helper()
	s := st.(*sqlStore)
	var b strings.Builder
	for _, t := range []struct{ table, order string }{
		{"rooms", "room_id"},
		{"events", "event_id"},
		{"event_edges", "room_id, prev_nid, event_id"},
		{"gap_edges", "room_id, prev_event_id, event_id"},
		{"forward_extremities", "room_id, event_id"},
		{"backward_extremities", "room_id, event_id"},
	} {
		rows, err := s.db.QueryContext(context.Background(), "SELECT * FROM "+t.table+" ORDER BY "+t.order)
		if err != nil {
			tb.Fatalf("dump %s: %v", t.table, err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&b, "%s %v\n", t.table, cols)
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatalf("dump %s: %v", t.table, err)
			}
			for _, v := range vals {
				if raw, ok := v.([]byte); ok {
					v = string(raw)
				}
				fmt.Fprintf(&b, " %v", v)
			}
			b.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			tb.Fatalf("dump %s: %v", t.table, err)
		}
		rows.Close()
	}
	return b.String()
}

// installFailure makes the database itself fail a statement part-way through a write
// transaction: a trigger raises an error when a row matching cond is written to table
// (op is INSERT or UPDATE, cond an SQL condition on NEW).
func installFailure(tb testing.TB, st Store, table, op, cond string) {
	tb.Helper()
	s := st.(*sqlStore)
	var stmts []string
	switch s.d {
	case sqliteDialect:
		stmts = []string{fmt.Sprintf(`CREATE TRIGGER injected_failure BEFORE %s ON %s WHEN %s
			BEGIN SELECT RAISE(ABORT, 'injected failure'); END`, op, table, cond)}
	default:
		stmts = []string{
			fmt.Sprintf(`CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN IF %s THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`, cond),
			fmt.Sprintf(`CREATE TRIGGER injected_failure BEFORE %s ON %s FOR EACH ROW
				EXECUTE FUNCTION injected_failure()`, op, table),
		}
	}
	for _, q := range stmts {
		if _, err := s.wdb.ExecContext(context.Background(), q); err != nil {
			tb.Fatalf("install failure trigger: %v", err)
		}
	}
}

// removeFailure drops what installFailure made.
func removeFailure(tb testing.TB, st Store, table string) {
	tb.Helper()
	s := st.(*sqlStore)
	stmts := []string{"DROP TRIGGER injected_failure"}
	if s.d == postgresDialect {
		stmts = []string{"DROP TRIGGER injected_failure ON " + table, "DROP FUNCTION injected_failure()"}
	}
	for _, q := range stmts {
		if _, err := s.wdb.ExecContext(context.Background(), q); err != nil {
			tb.Fatalf("remove failure trigger: %v", err)
		}
	}
}

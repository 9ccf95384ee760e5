package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// insertArrays is insertRowsReturning on PostgreSQL: the rows go as one array a column, which
// unnest turns back into rows. A statement of a dozen parameters is planned in no time, where
// a batch's VALUES list of a thousand parameters or more took PostgreSQL longer to plan than
// to run; and its text is the same for any number of rows, so pgx prepares it once.
//
// The INSERT has no ON CONFLICT clause: with one, PostgreSQL inserts each row speculatively,
// checking every unique index first and confirming the row after, which cost a fifth of the
// events' insert. A row that exists already fails the statement instead, which aborts the
// transaction as the ErrConflict it is reported as does.
func (s *sqlStore) insertArrays(ctx context.Context, tx querier, table string, cols []string,
	n int, row func(i int, args []any) []any, returning string, scan func(*sql.Rows) error) error {
	if n == 0 {
		return nil
	}
	columns := make([]*pgArray, len(cols))
	casts := make([]string, len(cols))
	for j, c := range cols {
		typ, ok := pgColumnTypes[c]
		if !ok {
			return fmt.Errorf("insert into %s: no array type for column %s", table, c)
		}
		columns[j] = &pgArray{typ: typ}
		casts[j] = "?::" + typ + "[]"
	}
	args := make([]any, 0, len(cols))
	for i := range n {
		args = row(i, args[:0])
		for j, v := range args {
			if err := columns[j].add(v); err != nil {
				return fmt.Errorf("insert into %s: column %s: %w", table, cols[j], err)
			}
		}
	}
	params := make([]any, len(cols))
	for j, c := range columns {
		params[j] = c.values()
	}
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") SELECT * FROM unnest(" +
		strings.Join(casts, ", ") + ")"
	var inserted int64
	var err error
	if returning == "" {
		inserted, err = execCount(ctx, tx, s.d.rebind(q), params)
	} else {
		inserted, err = queryCount(ctx, tx, s.d.rebind(q+" RETURNING "+returning), params, scan)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("insert into %s: a row exists already (another writer?): %w: %w", table, ErrConflict, err)
	}
	if err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	if inserted != int64(n) {
		return fmt.Errorf("insert into %s: %d of %d rows exist already (another writer?): %w",
			table, int64(n)-inserted, n, ErrConflict)
	}
	return nil
}

// pgColumnTypes are the PostgreSQL types of the columns insertArrays writes.
var pgColumnTypes = map[string]string{
	"event_id": "text", "room_id": "text", "type": "text", "state_key": "text", "sender": "text",
	"origin": "text", "prev_events": "text", "prev_event_id": "text",
	"depth": "bigint", "origin_server_ts": "bigint", "received_at": "bigint", "seq": "bigint",
	"prev_nid": "bigint", "first_seen": "bigint", "min_child_depth": "bigint", "max_child_depth": "bigint",
	"max_child_ts": "bigint", "group_no": "bigint", "prev_group": "bigint", "chain": "bigint",
	"raw": "bytea", "redacted": "boolean",
}

// pgArray collects one column's values, NULLs included, as the slice pgx encodes as an array
// of the column's type.
type pgArray struct {
	typ   string
	text  []*string
	ints  []*int64
	bytes [][]byte
	bools []*bool
}

func (a *pgArray) add(v any) error {
	switch a.typ {
	case "text":
		switch v := v.(type) {
		case string:
			a.text = append(a.text, &v)
		case *string:
			a.text = append(a.text, v)
		case nil:
			a.text = append(a.text, nil)
		default:
			return fmt.Errorf("%T is no text", v)
		}
	case "bigint":
		switch v := v.(type) {
		case int64:
			a.ints = append(a.ints, &v)
		case int:
			n := int64(v)
			a.ints = append(a.ints, &n)
		case nil:
			a.ints = append(a.ints, nil)
		default:
			return fmt.Errorf("%T is no integer", v)
		}
	case "bytea":
		switch v := v.(type) {
		case []byte:
			a.bytes = append(a.bytes, v)
		default:
			return fmt.Errorf("%T is no byte string", v)
		}
	case "boolean":
		switch v := v.(type) {
		case bool:
			a.bools = append(a.bools, &v)
		default:
			return fmt.Errorf("%T is no boolean", v)
		}
	}
	return nil
}

func (a *pgArray) values() any {
	switch a.typ {
	case "text":
		return a.text
	case "bigint":
		return a.ints
	case "bytea":
		return a.bytes
	}
	return a.bools
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// maxInList caps the IDs of one IN (…) list; longer lists are split over several statements.
const maxInList = 1000

// insertRows inserts n new rows with multi-row INSERT statements: one statement per few hundred
// rows instead of one round trip (PostgreSQL) or one statement execution (SQLite) per row. row
// appends the values of row i, in the order of cols.
//
// Every row must be new: the callers decide that under the room's lock. The statements skip
// conflicting rows rather than abort (see dialect.insertHead), and a skipped row fails the
// call with ErrConflict, which rolls the transaction back.
func (s *sqlStore) insertRows(ctx context.Context, tx querier, table string, cols []string,
	n int, row func(i int, args []any) []any) error {
	return s.insertRowsReturning(ctx, tx, table, cols, n, row, "", nil)
}

// insertRowsReturning is insertRows, and with returning (a list of columns) it calls scan with
// each inserted row's values of those columns: the keys the database handed out.
func (s *sqlStore) insertRowsReturning(ctx context.Context, tx querier, table string, cols []string,
	n int, row func(i int, args []any) []any, returning string, scan func(*sql.Rows) error) error {
	if s.d.arrays {
		return s.insertArrays(ctx, tx, table, cols, n, row, returning, scan)
	}
	per := s.d.rowsPerStatement(len(cols))
	head := s.d.insertHead + table + " (" + strings.Join(cols, ", ") + ") VALUES "
	tail := s.d.insertTail
	if returning != "" {
		tail += " RETURNING " + returning
	}
	args := make([]any, 0, min(n, per)*len(cols))
	var inserted int64
	for start := 0; start < n; start += per {
		end := min(n, start+per)
		args = args[:0]
		for i := start; i < end; i++ {
			args = row(i, args)
		}
		q := s.d.rebind(head + placeholders(end-start, len(cols)) + tail)
		var affected int64
		var err error
		if returning == "" {
			affected, err = execCount(ctx, tx, q, args)
		} else {
			affected, err = queryCount(ctx, tx, q, args, scan)
		}
		if err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
		inserted += affected
	}
	if inserted != int64(n) {
		return fmt.Errorf("insert into %s: %d of %d rows exist already (another writer?): %w",
			table, int64(n)-inserted, n, ErrConflict)
	}
	return nil
}

// execCount runs a statement and returns the rows it affected.
func execCount(ctx context.Context, q querier, query string, args []any) (int64, error) {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// queryCount runs a statement, calls scan with each row it returns and counts them.
func queryCount(ctx context.Context, q querier, query string, args []any, scan func(*sql.Rows) error) (int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		if err := scan(rows); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

// inChunks calls fn with the statement head + "(?,…)" + tail and its arguments (args, then the
// IDs) for each slice of at most maxInList ids.
func (s *sqlStore) inChunks(ids []string, head string, args []any, tail string, fn func(q string, args []any) error) error {
	all := make([]any, 0, len(args)+min(len(ids), maxInList))
	for start := 0; start < len(ids); start += maxInList {
		end := min(len(ids), start+maxInList)
		all = append(all[:0], args...)
		if s.d.arrays && strings.HasSuffix(head, " IN ") {
			// One array parameter: the statement's text is the same for any number of IDs.
			all = append(all, ids[start:end])
			if err := fn(s.d.rebind(strings.TrimSuffix(head, " IN ")+" = ANY(?::text[])"+tail), all); err != nil {
				return err
			}
			continue
		}
		for _, id := range ids[start:end] {
			all = append(all, id)
		}
		q := s.d.rebind(head + "(" + strings.Repeat("?,", end-start-1) + "?)" + tail)
		if err := fn(q, all); err != nil {
			return err
		}
	}
	return nil
}

// queryIn runs a query with an IN list over ids (see inChunks) and calls scan for each row.
func (s *sqlStore) queryIn(ctx context.Context, q querier, head string, args []any, ids []string, tail string,
	scan func(*sql.Rows) error) error {
	return s.inChunks(ids, head, args, tail, func(query string, all []any) error {
		rows, err := q.QueryContext(ctx, query, all...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// execIn runs a statement with an IN list over ids (see inChunks) and returns the rows it
// affected.
func (s *sqlStore) execIn(ctx context.Context, q querier, head string, args []any, ids []string, tail string) (int64, error) {
	var affected int64
	err := s.inChunks(ids, head, args, tail, func(query string, all []any) error {
		res, err := q.ExecContext(ctx, query, all...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		affected += n
		return err
	})
	return affected, err
}

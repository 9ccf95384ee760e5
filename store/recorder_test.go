package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
)

// recorder keeps each distinct statement a store runs, with the arguments of its first run:
// what TestPassQueryPlans explains.
type recorder struct {
	mu    sync.Mutex
	args  map[string][]any
	order []string
}

type recordedStatement struct {
	query string
	args  []any
}

func (r *recorder) add(query string, named []driver.NamedValue) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.args[query]; ok {
		return
	}
	args := make([]any, len(named))
	for i, v := range named {
		args[i] = v.Value
	}
	r.args[query] = args
	r.order = append(r.order, query)
}

func (r *recorder) statements() []recordedStatement {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]recordedStatement, 0, len(r.order))
	for _, q := range r.order {
		out = append(out, recordedStatement{q, slices.Clone(r.args[q])})
	}
	return out
}

// openRecording opens a store at u (a fresh one: see backends) whose statements rec sees.
func openRecording(t *testing.T, u string, rec *recorder) *sqlStore {
	t.Helper()
	rec.args = map[string][]any{}
	loc, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	var base driver.Driver
	var s *sqlStore
	wrap := func(dsn string) (*sql.DB, error) {
		return sql.OpenDB(recordingConnector{dsn: dsn, base: base, rec: rec}), nil
	}
	if loc.dialect == sqliteDialect {
		probe, err := sql.Open("sqlite", "")
		if err != nil {
			t.Fatal(err)
		}
		base = probe.Driver()
		probe.Close()
		s, err = openSQLite(t.Context(), loc.path, wrap)
	} else {
		base = stdlib.GetDefaultDriver()
		s, err = openPostgres(t.Context(), loc.dsn, wrap)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The migrations are no statements of a pass.
	rec.mu.Lock()
	rec.args, rec.order = map[string][]any{}, nil
	rec.mu.Unlock()
	return s
}

// recordingConnector opens connections of the base driver that report to rec.
type recordingConnector struct {
	dsn  string
	base driver.Driver
	rec  *recorder
}

func (c recordingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.base.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: conn, rec: c.rec}, nil
}

func (c recordingConnector) Driver() driver.Driver { return c.base }

// recordingConn passes everything to the base connection, which both drivers make support
// the context forms.
type recordingConn struct {
	driver.Conn
	rec *recorder
}

func (c *recordingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.rec.add(query, args)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *recordingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.rec.add(query, args)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c *recordingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.rec.add(query, nil)
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *recordingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *recordingConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *recordingConn) CheckNamedValue(v *driver.NamedValue) error {
	if n, ok := c.Conn.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (c *recordingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

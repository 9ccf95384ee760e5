package store

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"sync"
)

// maxCachedStatements bounds the statements a stmtCache keeps: the write path's statements
// differ only in how many rows or IDs they carry, so a few hundred cover the batch sizes a
// store sees.
const maxCachedStatements = 256

// stmtCache keeps SQLite's compiled form of the statements of the write path, which the
// driver would otherwise parse and plan at every execution: a batch's multi-row INSERTs and
// IN lists carry hundreds of placeholders, and parsing them cost an eighth of an insert.
// (pgx keeps PostgreSQL's prepared statements itself.)
//
// database/sql prepares a statement for reuse on a free connection of the pool, and the
// writer pool has one, which a transaction holds: so a statement first runs unprepared, and
// is prepared before the next transaction begins, for it and those after to reuse.
type stmtCache struct {
	db     *sql.DB // the writer pool
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	wanted map[string]bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
}

// in returns tx as a querier that runs cached statements; a nil cache returns tx itself.
func (c *stmtCache) in(tx *sql.Tx) querier {
	if c == nil {
		return tx
	}
	return cachedTx{tx, c}
}

// get returns the prepared statement for q, or nil and notes q for prepareWanted.
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.stmts[q]
	if !ok && len(c.stmts)+len(c.wanted) < maxCachedStatements {
		c.wanted[q] = true
	}
	return st
}

// prepareWanted prepares the statements that ran unprepared. It is called before a write
// transaction begins, when the writer's connection is free or about to be, and holds no lock
// while it waits for the connection, which another writer's transaction may hold. A
// statement that fails to prepare is left to run unprepared.
func (c *stmtCache) prepareWanted(ctx context.Context) {
	if c == nil {
		return
	}
	c.mu.Lock()
	wanted := slices.Collect(maps.Keys(c.wanted))
	clear(c.wanted)
	c.mu.Unlock()
	for _, q := range wanted {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, dup := c.stmts[q]; dup || len(c.stmts) >= maxCachedStatements {
			st.Close()
		} else {
			c.stmts[q] = st
		}
		c.mu.Unlock()
	}
}

// close closes the prepared statements.
func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
}

// cachedTx runs the statements of a transaction through the cache.
type cachedTx struct {
	tx *sql.Tx
	c  *stmtCache
}

func (t cachedTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.c.get(q); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, q, args...)
}

func (t cachedTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.c.get(q); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	"modernc.org/sqlite"             // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrBadURL is returned (wrapped) by Open for a URL it cannot use.
var ErrBadURL = errors.New("bad store URL")

// ErrNoStore is returned (wrapped) by OpenReadOnly when the SQLite file does not exist.
var ErrNoStore = errors.New("a read-only open creates none")

const urlForms = "want sqlite:///abs/path.db, sqlite://rel/path.db or postgres://user@host/db"

// location is a parsed store URL.
type location struct {
	dialect *dialect
	path    string // SQLite: the database file
	dsn     string // PostgreSQL: the URL, handed to pgx as is
	display string // for messages: the URL without a password
}

// Open opens the store at rawURL, creating the database file (SQLite) and applying pending
// schema migrations. The URL forms are:
//
//	sqlite:///abs/path.db    an absolute path
//	sqlite://rel/path.db     a path relative to the working directory
//	postgres://… or postgresql://…   any libpq-style URL pgx accepts
func Open(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, false)
}

// OpenReadOnly opens an existing store for reading, as `roomsync inspect` does: a database
// that does not exist is an error rather than created (a mistyped path must not leave an
// empty store behind), no migration is applied, and every write fails. A schema older or
// newer than this roomsync's is reported, not migrated. Same URL forms as Open.
func OpenReadOnly(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, true)
}

func open(ctx context.Context, rawURL string, readOnly bool) (Store, error) {
	how := "open store"
	if readOnly {
		how = "open store read-only"
	}
	loc, err := parseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", how, err)
	}
	var s *sqlStore
	switch {
	case loc.dialect == sqliteDialect && readOnly:
		s, err = openSQLiteReadOnly(ctx, loc.path)
	case loc.dialect == sqliteDialect:
		s, err = openSQLite(ctx, loc.path, openDriver("sqlite"))
	case readOnly:
		s, err = openPostgresReadOnly(ctx, loc.dsn)
	default:
		s, err = openPostgres(ctx, loc.dsn, openDriver("pgx"))
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", how, loc.display, err)
	}
	return s, nil
}

func parseURL(raw string) (location, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return location{}, fmt.Errorf("%w %q: %s", ErrBadURL, raw, urlForms)
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		return parseSQLiteURL(raw, rest)
	case "postgres", "postgresql":
		return parsePostgresURL(raw)
	default:
		return location{}, fmt.Errorf("%w %q: unknown scheme %q, %s", ErrBadURL, raw, scheme, urlForms)
	}
}

func parseSQLiteURL(raw, rest string) (location, error) {
	if strings.ContainsAny(rest, "?#") {
		// The driver would read a query as its own parameters and could undo the settings
		// the store depends on (WAL, busy timeout, immediate transactions).
		return location{}, fmt.Errorf("%w %q: a sqlite URL takes no query or fragment", ErrBadURL, raw)
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		return location{}, fmt.Errorf("%w %q: %w", ErrBadURL, raw, err)
	}
	switch {
	case strings.ContainsAny(path, "?#"):
		return location{}, fmt.Errorf("%w %q: the path may not contain ? or #", ErrBadURL, raw)
	case path == "" || path == "/":
		return location{}, fmt.Errorf("%w %q: no database file path, %s", ErrBadURL, raw, urlForms)
	case strings.HasSuffix(path, "/"):
		return location{}, fmt.Errorf("%w %q: the path names a directory, not a database file", ErrBadURL, raw)
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		// An in-memory database is private to each connection, and the store uses several.
		return location{}, fmt.Errorf("%w %q: only database files are supported", ErrBadURL, raw)
	}
	return location{dialect: sqliteDialect, path: filepath.Clean(path), display: raw}, nil
}

func parsePostgresURL(raw string) (location, error) {
	// pgx's parse errors do not repeat the password.
	if _, err := pgx.ParseConfig(raw); err != nil {
		return location{}, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	return location{dialect: postgresDialect, dsn: raw, display: redactedURL(raw)}, nil
}

// redactedURL is a PostgreSQL URL for messages: without the password of its user info, nor
// that of a password or sslpassword parameter, which libpq and pgx read as well.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "postgres://…"
	}
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, param := range params {
			name, _, hasValue := strings.Cut(param, "=")
			if unescaped, err := url.QueryUnescape(name); err == nil {
				name = unescaped
			}
			if hasValue && strings.Contains(strings.ToLower(name), "password") {
				params[i] = url.QueryEscape(name) + "=xxxxx"
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	return u.Redacted()
}

// opener opens a pool on a data source name: the registered driver's, or in tests a
// wrapper that sees every statement.
type opener func(dsn string) (*sql.DB, error)

func openDriver(name string) opener {
	return func(dsn string) (*sql.DB, error) { return sql.Open(name, dsn) }
}

// sqlitePageSize is the page size of new SQLite files. An insert writes the page of the
// event ID index that takes the new ID, a random one, and SQLite writes whole pages to the
// WAL and again at the checkpoint: at a million events a room, 4 KiB pages took 15-20% less
// CPU an event than 16 KiB ones (the size before schema version 9, which stores made then
// keep), with 8 KiB in between.
const sqlitePageSize = 4096

// sqliteWALBytes is how much WAL the writer lets grow before it checkpoints. A checkpoint
// writes each page the WAL holds once, however often it changed: the random pages of the ID
// index change several times between checkpoints 256 MiB apart, and at a million events
// such a WAL took 15% less CPU an event than one of 64 MiB.
const sqliteWALBytes = 256 << 20

// setWALBudget sets the writer's checkpoint interval to sqliteWALBytes, in pages of the file.
func setWALBudget(ctx context.Context, writer *sql.DB) error {
	var pageSize int
	if err := writer.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return fmt.Errorf("read the page size: %w", err)
	}
	if _, err := writer.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, sqliteWALBytes/pageSize)); err != nil {
		return fmt.Errorf("set the checkpoint interval: %w", err)
	}
	return nil
}

// openSQLite opens two pools on the file: one connection for writes, several for reads. One
// writer connection makes writers of this process queue in database/sql instead of polling
// SQLite's lock under busy_timeout; WAL lets the readers proceed meanwhile. Writers in other
// processes still wait on the lock, for up to busy_timeout.
func openSQLite(ctx context.Context, path string, sqlOpen opener) (*sqlStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	writer, err := sqlOpen(abs + "?" + strings.Join([]string{
		"_busy_timeout=30000",
		"_txlock=immediate", // take the write lock at BEGIN: writers queue instead of deadlocking
		"_journal_mode=WAL", // readers never block the writer, nor the writer them
		// In WAL mode, NORMAL skips the fsync at each commit but still fsyncs the WAL before
		// every checkpoint. A crashed process loses nothing it committed (the WAL is written
		// before COMMIT returns); a crashed machine may lose the last transactions, but the
		// database stays consistent and never shows part of a transaction. A resync fetches
		// lost events again.
		"_synchronous=NORMAL",
		// See sqlitePageSize; page_size only applies to a new file. The WAL's size between
		// checkpoints is set below, in bytes; this is its floor should the connection
		// ever be opened again without it.
		"_pragma=page_size(" + strconv.Itoa(sqlitePageSize) + ")",
		"_pragma=wal_autocheckpoint(16384)",
		"_pragma=cache_size(-65536)", // KiB
		"_pragma=temp_store(memory)",
	}, "&"))
	if err != nil {
		return nil, err
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	err = retryBusy(ctx, func() error {
		if err := writer.PingContext(ctx); err != nil {
			return err
		}
		return migrate(ctx, writer, sqliteDialect)
	})
	if err == nil {
		err = setWALBudget(ctx, writer)
	}
	if err != nil {
		writer.Close()
		return nil, err
	}
	// Readers are opened after the writer has switched the file to WAL (a persistent
	// setting), and made query-only so a write by mistake fails instead of bypassing the
	// writer's lock order.
	reader, err := sqlOpen(abs + "?_busy_timeout=30000&_query_only=1&_pragma=cache_size(-16384)")
	if err != nil {
		writer.Close()
		return nil, err
	}
	reader.SetMaxOpenConns(4)
	reader.SetMaxIdleConns(4)
	return &sqlStore{d: sqliteDialect, db: reader, wdb: writer, stmts: newStmtCache(writer)}, nil
}

// openSQLiteReadOnly opens one read-only pool on an existing file. mode=ro needs the URI form
// of the name (the driver drops SQLite's own parameters from a plain path); it makes SQLite
// refuse to create the file and fail every write with SQLITE_READONLY.
func openSQLiteReadOnly(ctx context.Context, path string) (*sqlStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	// Stat first for a clear message: SQLite says only "unable to open database file".
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no database file at %s (%w)", abs, ErrNoStore)
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory, not a database file", abs)
	}
	dsn := url.URL{Scheme: "file", Path: filepath.ToSlash(abs),
		RawQuery: "mode=ro&_busy_timeout=30000&_pragma=cache_size(-16384)"}
	db, err := sql.Open("sqlite", dsn.String())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	if err := checkSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{d: sqliteDialect, db: db, wdb: db}, nil
}

// retryBusy runs setup again while SQLite answers SQLITE_BUSY, for up to a minute. Processes
// opening a new file at once contend for the switch to WAL, and SQLite reports that contention
// at once rather than through the busy timeout.
func retryBusy(ctx context.Context, setup func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := setup()
		var serr *sqlite.Error
		if !errors.As(err, &serr) || serr.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
		}
	}
}

func openPostgres(ctx context.Context, dsn string, sqlOpen opener) (*sqlStore, error) {
	db, err := sqlOpen(dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := migrate(ctx, db, postgresDialect); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{d: postgresDialect, db: db, wdb: db}, nil
}

// openPostgresReadOnly opens a pool whose sessions start with default_transaction_read_only,
// so that every write fails; nothing here writes, and no migration is applied.
func openPostgresReadOnly(ctx context.Context, dsn string) (*sqlStore, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := checkSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{d: postgresDialect, db: db, wdb: db}, nil
}

// Package storetest makes URLs of fresh, empty stores of each backend for tests: a SQLite
// file in the test's temporary directory, or a database of its own on the PostgreSQL server
// that ROOMSYNC_TEST_POSTGRES_URL names (hack/postgres.sh start prints one), dropped when the
// test ends.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// PostgresEnv names the server the PostgreSQL tests use.
const PostgresEnv = "ROOMSYNC_TEST_POSTGRES_URL"

// Backend makes URLs of fresh, empty stores of one kind.
type Backend struct {
	Name   string
	NewURL func(tb testing.TB) string
}

// Backends are SQLite and PostgreSQL, in that order.
var Backends = []Backend{
	{"sqlite", SQLiteURL},
	{"postgres", PostgresURL},
}

// SQLiteURL is a store file in the test's temporary directory.
func SQLiteURL(tb testing.TB) string {
	return "sqlite://" + filepath.Join(tb.TempDir(), "events.db")
}

// PostgresURL creates a database of its own on the server named by ROOMSYNC_TEST_POSTGRES_URL
// and drops it when the test ends. Without a server the test is skipped, except in CI, where
// skipping would hide that the PostgreSQL backend went untested.
func PostgresURL(tb testing.TB) string {
	base := os.Getenv(PostgresEnv)
	if base == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("no PostgreSQL server: set %s", PostgresEnv)
		}
		tb.Skipf("no PostgreSQL server: set %s (hack/postgres.sh start DIR PORT prints one)", PostgresEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatalf("connect to %s: %v", PostgresEnv, err)
	}
	name := "roomsync_test_" + randomHex(8)
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		// FORCE: a store a failed test left open must not keep the database alive.
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DamageSQLitePage writes garbage over the header of a leaf page of table's b-tree in the
// SQLite file at path, as a bad disk or a stray write would. The store must be closed: the
// page is found through SQLite's dbstat, then written straight into the file.
func DamageSQLitePage(tb testing.TB, path, table string) {
	tb.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		tb.Fatal(err)
	}
	var page, pageSize int64
	// Not the first leaf: the damage should sit among the rows, not at the tree's edge.
	err = db.QueryRow(`SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'
		ORDER BY pageno LIMIT 1 OFFSET 3`, table).Scan(&page)
	if err == nil {
		err = db.QueryRow(`PRAGMA page_size`).Scan(&pageSize)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatalf("find a leaf page of %s: %v", table, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5, 0x5A}, 32), (page-1)*pageSize); err != nil {
		tb.Fatal(err)
	}
}

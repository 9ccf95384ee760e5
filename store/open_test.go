package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url, wantPath, wantDialect string
	}{
		{"sqlite:///var/lib/roomsync/events.db", "/var/lib/roomsync/events.db", "sqlite"},
		{"sqlite://data/events.db", "data/events.db", "sqlite"},
		{"sqlite://events.db", "events.db", "sqlite"},
		{"SQLite:///a%20b.db", "/a b.db", "sqlite"},
		{"postgres://roomsync:secret@db:5432/roomsync?sslmode=disable", "", "postgres"},
		{"postgresql://db/roomsync", "", "postgres"},
	} {
		loc, err := parseURL(c.url)
		if err != nil {
			t.Errorf("parseURL(%q): %v", c.url, err)
			continue
		}
		if loc.dialect.name != c.wantDialect || loc.path != c.wantPath {
			t.Errorf("parseURL(%q) = %s %q, want %s %q", c.url, loc.dialect.name, loc.path, c.wantDialect, c.wantPath)
		}
		if strings.Contains(loc.display, "secret") {
			t.Errorf("parseURL(%q) shows the password: %s", c.url, loc.display)
		}
	}
}

func TestOpenBadURL(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, url string
		badURL    bool // an ErrBadURL, found before connecting
	}{
		{"empty", "", true},
		{"no scheme", "/var/lib/events.db", true},
		{"unknown scheme", "mysql://db/roomsync", true},
		{"no path", "sqlite://", true},
		{"root", "sqlite:///", true},
		{"directory", "sqlite://" + dir + "/", true},
		{"query", "sqlite:///tmp/x.db?_txlock=deferred", true},
		{"escaped query", "sqlite:///tmp/x%3F.db", true},
		{"memory", "sqlite://:memory:", true},
		{"bad escape", "sqlite:///tmp/%zz.db", true},
		{"bad postgres URL", "postgres://db:notaport/x", true},
		{"missing directory", "sqlite://" + filepath.Join(dir, "missing", "events.db"), false},
		{"not a database", "sqlite://" + writeFile(t, dir, "junk.db", strings.Repeat("not sqlite ", 500)), false},
		{"nothing listening", "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			s, err := Open(ctx, c.url)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", c.url)
			}
			if errors.Is(err, ErrBadURL) != c.badURL {
				t.Fatalf("Open(%q) = %v; ErrBadURL %v, want %v", c.url, err, errors.Is(err, ErrBadURL), c.badURL)
			}
			if !strings.HasPrefix(err.Error(), "open store") {
				t.Fatalf("Open(%q) = %q, want an error that says what failed", c.url, err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSQLiteRelativePath opens a store by a relative URL, from the working directory.
func TestSQLiteRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	s := openTest(t, "sqlite://data.db")
	if err := s.EnsureRoom(t.Context(), room, "10", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("data.db"); err != nil {
		t.Fatalf("no database file in the working directory: %v", err)
	}
}

func TestRebind(t *testing.T) {
	q := `SELECT '?' FROM t WHERE a = ? AND b IN (?, ?)`
	if got, want := postgresDialect.rebind(q), `SELECT '?' FROM t WHERE a = $1 AND b IN ($2, $3)`; got != want {
		t.Fatalf("rebind = %s, want %s", got, want)
	}
	if got := sqliteDialect.rebind(q); got != q {
		t.Fatalf("sqlite rebind changed the query: %s", got)
	}
}

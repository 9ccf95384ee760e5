package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		// libpq and pgx take the password as a parameter too.
		{"postgres://db/roomsync?sslmode=disable&password=secret", "", "postgres"},
		{"postgres://db/roomsync?sslpassword=secret", "", "postgres"},
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

// TestOpenReadOnly opens a filled store read-only, on each backend: reads work, every kind of
// write fails, and nothing in the database changes.
func TestOpenReadOnly(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			u := b.newURL(t)
			rw := openTest(t, u)
			if _, err := rw.InsertEvents(ctx, room, linearChain(room, 5, 100)); err != nil {
				t.Fatal(err)
			}
			before := dump(t, rw)
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
			fileBefore := sqliteFile(t, u)

			ro, err := OpenReadOnly(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if r, err := ro.Room(ctx, room); err != nil || r.Events != 5 {
				t.Fatalf("Room through the read-only store = %+v, %v; want 5 events", r, err)
			}
			writes := []struct {
				name  string
				write func() error
			}{
				{"EnsureRoom", func() error { return ro.EnsureRoom(ctx, "!other:example.org", "10", "") }},
				{"InsertEvents", func() error {
					_, err := ro.InsertEvents(ctx, "!other:example.org", linearChain("!other:example.org", 2, 100))
					return err
				}},
				{"SaveServerKeys", func() error {
					return ro.SaveServerKeys(ctx, []ServerKey{{ServerName: "a.example", KeyID: "ed25519:a", Key: "k", ValidUntil: time.Now()}})
				}},
				{"raw SQL", func() error {
					_, err := sqlOf(ro).wdb.ExecContext(ctx, "CREATE TABLE sneaky (x INTEGER)")
					return err
				}},
			}
			for _, w := range writes {
				err := w.write()
				// SQLite: "attempt to write a readonly database"; PostgreSQL: "cannot execute
				// INSERT in a read-only transaction".
				if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), "read-only", "readonly"), "readonly") {
					t.Errorf("%s through the read-only store = %v, want a read-only error", w.name, err)
				}
			}
			if after := dump(t, ro); after != before {
				t.Errorf("the read-only store changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			if fileAfter := sqliteFile(t, u); !bytes.Equal(fileAfter, fileBefore) {
				t.Error("the SQLite file changed under the read-only store")
			}
		})
	}
}

// sqliteFile is the content of the SQLite file of u; nil for another backend.
func sqliteFile(t *testing.T, u string) []byte {
	t.Helper()
	loc, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if loc.dialect != sqliteDialect {
		return nil
	}
	b, err := os.ReadFile(loc.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenReadOnlyRefuses checks what a read-only open refuses: a file that does not exist
// (and it creates none), a database that is not a store, and a schema it would have to
// migrate.
func TestOpenReadOnlyRefuses(t *testing.T) {
	latest := migrations[len(migrations)-1].version
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cases := []struct {
				name string
				// setup prepares the database of u, which Open has just created (the
				// current schema), through its read-write store.
				setup func(t *testing.T, s *sqlStore)
				want  string
			}{
				{"older schema", func(t *testing.T, s *sqlStore) {
					execSQL(t, s, fmt.Sprintf("DELETE FROM schema_migrations WHERE version = %d", latest))
				}, fmt.Sprintf("the schema is at version %d, older than this roomsync's (%d)", latest-1, latest)},
				{"newer schema", func(t *testing.T, s *sqlStore) {
					execSQL(t, s, fmt.Sprintf("INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, 'future', 0)", latest+1))
				}, fmt.Sprintf("the schema is at version %d, newer than this roomsync knows (%d)", latest+1, latest)},
				{"not a store", func(t *testing.T, s *sqlStore) {
					execSQL(t, s, "DROP TABLE schema_migrations")
				}, "is this a roomsync store?"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					u := b.newURL(t)
					rw := openTest(t, u)
					tc.setup(t, sqlOf(rw))
					before := dump(t, rw)
					s, err := OpenReadOnly(ctx, u)
					if err == nil {
						s.Close()
						t.Fatal("OpenReadOnly succeeded")
					}
					if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "open store") {
						t.Errorf("OpenReadOnly = %q, want it to say %q", err, tc.want)
					}
					if after := dump(t, rw); after != before {
						t.Error("OpenReadOnly changed the database")
					}
					if tc.name == "older schema" {
						var n int
						if err := sqlOf(rw).db.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM schema_migrations WHERE version = %d", latest)).Scan(&n); err != nil || n != 0 {
							t.Errorf("the schema was migrated: %d rows of version %d, %v", n, latest, err)
						}
					}
				})
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		for _, path := range []string{filepath.Join(dir, "typo.db"), filepath.Join(dir, "no", "such", "dir.db")} {
			_, err := OpenReadOnly(t.Context(), "sqlite://"+path)
			if !errors.Is(err, ErrNoStore) || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenReadOnly of %s = %v, want ErrNoStore naming the path", path, err)
			}
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
			t.Errorf("OpenReadOnly left %v in the directory (%v)", entries, err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := OpenReadOnly(t.Context(), "sqlite://"+dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
			t.Errorf("OpenReadOnly of a directory = %v", err)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		if _, err := OpenReadOnly(t.Context(), "mysql://x"); !errors.Is(err, ErrBadURL) {
			t.Errorf("OpenReadOnly of a bad URL = %v, want ErrBadURL", err)
		}
	})
}

// sqlOf is the implementation behind a store, for statements the Store interface has no
// method for.
func sqlOf(st Store) *sqlStore { return st.(*sqlStore) }

func execSQL(t *testing.T, s *sqlStore, q string) {
	t.Helper()
	if _, err := s.wdb.ExecContext(context.Background(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

package store

import (
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseURL reads arbitrary store URLs as Open does before it opens anything (no database
// is touched: pgx parses a PostgreSQL URL without connecting). A URL is refused with
// ErrBadURL or read as one of the documented forms, and no password it carries shows in what
// Open would say about it: the display in its errors, or the refusal itself.
func FuzzParseURL(f *testing.F) {
	for _, seed := range []string{
		"sqlite:///var/lib/roomsync/events.db",
		"sqlite://data/events.db",
		"SQLite:///a%20b.db",
		"sqlite://:memory:",
		"sqlite:///tmp/x.db?_txlock=deferred",
		"sqlite:///tmp/x%3F.db",
		"sqlite:///tmp/%zz.db",
		"sqlite://file:x.db",
		"sqlite://./a/../b.db",
		"postgres://roomsync:s3cr3tpw@db:5432/roomsync?sslmode=disable",
		"postgresql://db/roomsync",
		"postgres://db:notaport/x?password=s3cr3tpw",
		"postgres://roomsync:s3cr3tpw@db:notaport/roomsync",
		"postgres://db/roomsync?password=s3cr3tpw&sslmode=disable",
		"postgres://db/roomsync?sslmode=bogus&password=s3cr3tpw",
		"postgres://[::1]:5432,db2:5433/x?target_session_attrs=read-write",
		"postgres:///x?host=/var/run/postgresql",
		"mysql://db/roomsync",
		"/var/lib/events.db",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := parseURL(raw)
		secrets := passwordsIn(raw)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("refusal %v is no ErrBadURL", err)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the refusal of a URL shows its password %q: %v", s, err)
				}
			}
			return
		}
		for _, s := range secrets {
			if strings.Contains(loc.display, s) {
				t.Fatalf("the display of a URL shows its password %q: %s", s, loc.display)
			}
		}
		switch loc.dialect {
		case sqliteDialect:
			if loc.path == "" || loc.path != filepath.Clean(loc.path) || strings.ContainsAny(loc.path, "?#") ||
				loc.path == ":memory:" || strings.HasPrefix(loc.path, "file:") || loc.dsn != "" {
				t.Fatalf("%q read as the SQLite file %q", raw, loc.path)
			}
		case postgresDialect:
			if loc.dsn != raw || loc.path != "" {
				t.Fatalf("%q read as the PostgreSQL DSN %q", raw, loc.dsn)
			}
		default:
			t.Fatalf("%q read as no dialect", raw)
		}
	})
}

// passwordsIn returns the passwords a PostgreSQL URL carries (in its user info, or as the
// password or sslpassword parameter) that are long enough to be told from the rest of it, and
// appear in it only once.
func passwordsIn(raw string) []string {
	scheme, _, _ := strings.Cut(raw, "://")
	if s := strings.ToLower(scheme); s != "postgres" && s != "postgresql" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if len(s) >= 6 && strings.Count(raw, s) == 1 {
			out = append(out, s)
		}
	}
	if p, ok := u.User.Password(); ok {
		add(p)
		add(url.PathEscape(p))
	}
	if q, err := url.ParseQuery(u.RawQuery); err == nil {
		for _, name := range []string{"password", "sslpassword"} {
			for _, p := range q[name] {
				add(p)
			}
		}
	}
	return out
}

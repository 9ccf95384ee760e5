package cli

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// syncWithCLI runs `roomsync sync` against peer into the store at storeURL, as a user would.
func syncWithCLI(t *testing.T, storeURL string, room *fixturepeer.Room, peer *fixturepeer.Peer) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "signing.key")
	writeFile(t, keyFile, mfed.GenerateSigningKey().SynapseString()+"\n")
	var stderr bytes.Buffer
	args := []string{"sync", "--store", storeURL, "--server-name", "cli.test", "--signing-key", keyFile,
		"--insecure-skip-tls-verify", "--join", "never", "--timeout", "1m",
		"--peer", peer.ServerName() + "=" + peer.URL(), "--room", string(room.ID)}
	if code := mainNoPanic(t, args, io.Discard, &stderr); code != ExitOK && code != ExitFailed {
		t.Fatalf("sync exited %d:\n%s", code, stderr.String())
	}
}

// exportWithCLI runs `roomsync export` and returns stdout and the cursor it printed last.
func exportWithCLI(t *testing.T, args ...string) (out []byte, cursor string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := mainNoPanic(t, append([]string{"export"}, args...), &stdout, &stderr); code != ExitOK {
		t.Fatalf("export %v exited %d:\n%s", args, code, stderr.String())
	}
	last := strings.TrimSpace(stderr.String())
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	cursor, ok := strings.CutPrefix(last, "cursor: ")
	if !ok {
		t.Fatalf("export %v did not end with its cursor:\n%s", args, stderr.String())
	}
	return stdout.Bytes(), cursor
}

func ndjsonIDs(t *testing.T, out []byte) []string {
	t.Helper()
	var ids []string
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e struct {
			ID string `json:"event_id"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("not an NDJSON line: %v: %s", err, line)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// TestExportCommand: a room synced from a peer holding its older half, exported; synced
// again from a peer holding it all, exported after the printed cursor: exactly the new
// events, once. Files get the same bytes as stdout, gzipped for .gz, and only once complete.
func TestExportCommand(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 51, Events: 240, JoinRate: 0.03})
	maxDepth := room.Stats().MaxDepth
	dir := t.TempDir()
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	base := []string{"--store", storeURL, "--room", string(room.ID)}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }

	syncWithCLI(t, storeURL, room, fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(0, maxDepth/2))))
	first, cursor := exportWithCLI(t, with("--format", "events")...)
	firstIDs := ndjsonIDs(t, first)
	if len(firstIDs) == 0 || len(firstIDs) >= len(room.Events) {
		t.Fatalf("the first export has %d of %d events", len(firstIDs), len(room.Events))
	}

	syncWithCLI(t, storeURL, room, fixturepeer.Start(t, room))
	second, next := exportWithCLI(t, with("--format", "events", "--after", cursor)...)
	secondIDs := ndjsonIDs(t, second)
	all := slices.Concat(firstIDs, secondIDs)
	if len(all) != len(room.Events) || len(slices.Compact(slices.Sorted(slices.Values(all)))) != len(room.Events) {
		t.Fatalf("first %d + after the cursor %d events, the room %d, each once", len(firstIDs), len(secondIDs), len(room.Events))
	}
	if again, _ := exportWithCLI(t, with("--after", next)...); len(again) != 0 {
		t.Errorf("nothing new arrived, yet the export after the last cursor has %d bytes", len(again))
	}

	// Files: the same bytes as stdout, gzipped for .gz, private, and nothing else left.
	for _, format := range []string{"pdus", "events", "text"} {
		plain, _ := exportWithCLI(t, with("--format", format)...)
		outDir := t.TempDir()
		for _, name := range []string{"room." + format, "room." + format + ".gz"} {
			path := filepath.Join(outDir, name)
			if out, _ := exportWithCLI(t, with("--format", format, "--out", path)...); len(out) != 0 {
				t.Errorf("--out %s wrote %d bytes to stdout", name, len(out))
			}
			got := readFile(t, path)
			if strings.HasSuffix(name, ".gz") {
				got = gunzip(t, got)
			}
			if !bytes.Equal(got, plain) {
				t.Errorf("--out %s: %d bytes, stdout %d", name, len(got), len(plain))
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("--out %s: mode %v (%v), want 0600", name, fi.Mode(), err)
			}
		}
		if entries, _ := os.ReadDir(outDir); len(entries) != 2 {
			t.Errorf("--out left %d files, want 2", len(entries))
		}
	}

	// A time range: half open, on origin_server_ts.
	from, to := room.Events[50].TS, room.Events[120].TS
	ranged, _ := exportWithCLI(t, with("--format", "events", "--since", fmt.Sprint(from), "--until", fmt.Sprint(to))...)
	want := 0
	for _, e := range room.Events {
		if e.TS >= from && e.TS < to {
			want++
		}
	}
	if got := len(ndjsonIDs(t, ranged)); got != want {
		t.Errorf("--since %d --until %d: %d events, want %d", from, to, got, want)
	}
}

// TestExportBadInput: what export refuses, with exit 2 and a message, leaving no file.
func TestExportBadInput(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 53, Events: 20})
	dir := t.TempDir()
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	syncWithCLI(t, storeURL, room, fixturepeer.Start(t, room))
	_, cursor := exportWithCLI(t, "--store", storeURL, "--room", string(room.ID))
	outDir := t.TempDir()
	base := []string{"export", "--store", storeURL, "--room", string(room.ID), "--out", filepath.Join(outDir, "x.ndjson")}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
	otherCursor := export.Cursor{RoomID: "!other:x", Seq: 1}.String()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no store", []string{"export", "--room", "!r:x"}, "--store and --room are required"},
		{"stray argument", with("extra"), "unexpected arguments"},
		{"unknown format", with("--format", "csv"), `--format: unknown format "csv": want pdus, events or text`},
		{"bad since", with("--since", "yesterday"), `--since: time "yesterday": want RFC 3339`},
		{"bad until", with("--until", "2024-13-01T00:00:00Z"), "--until: time"},
		{"since after until", with("--since", "2024-02-01T00:00:00Z", "--until", "2024-01-01T00:00:00Z"), "is not before until"},
		{"unknown room", []string{"export", "--store", storeURL, "--room", "!nope:x"}, "the store holds no room !nope:x"},
		{"malformed cursor", with("--after", "yesterday"), "malformed cursor"},
		{"cursor of another room", with("--after", otherCursor), "the cursor is for room !other:x"},
		{"cursor cut short", with("--after", cursor[:len(cursor)-3]), "malformed cursor"},
		{"out in no directory", with("--out", filepath.Join(outDir, "no", "x.ndjson")), "no directory"},
		{"out is a directory", with("--out", outDir), "a directory, not a file"},
		{"missing store", []string{"export", "--store", "sqlite://" + filepath.Join(dir, "typo.db"), "--room", "!r:x"}, "no database file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := mainNoPanic(t, c.args, &stdout, &stderr); code != ExitBadInput {
				t.Errorf("exit %d, want %d:\n%s", code, ExitBadInput, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr does not say %q:\n%s", c.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "cursor: ") {
				t.Errorf("a refused export printed a cursor:\n%s", stderr.String())
			}
		})
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
		t.Errorf("refused exports left %d files behind", len(entries))
	}
	if _, err := os.Stat(filepath.Join(dir, "typo.db")); err == nil {
		t.Error("export created a store on a mistyped path")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

func TestMainExitCodes(t *testing.T) {
	dir := t.TempDir()
	badKubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, badKubeconfig, "this: is: not: a kubeconfig")
	keyFile := filepath.Join(dir, "signing.key")
	writeFile(t, keyFile, mfed.GenerateSigningKey().SynapseString()+"\n")
	badKey := filepath.Join(dir, "bad.key")
	writeFile(t, badKey, "ed25519 a_abc !!!notbase64\n")
	emptyKey := filepath.Join(dir, "empty.key")
	writeFile(t, emptyKey, "\n# nothing\n")
	shortSeed := filepath.Join(dir, "short.key")
	writeFile(t, shortSeed, "ed25519 a_x QUJD\n")
	storeURL := "sqlite://" + filepath.Join(dir, "store.db")
	st, err := store.Open(t.Context(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// A kubeconfig that parses; nothing connects to it before the identity is checked.
	kubeconfig := filepath.Join(dir, "ok.kubeconfig")
	writeFile(t, kubeconfig, "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n")
	identity := []string{"--store", storeURL, "--server-name", "us.example", "--signing-key", keyFile}
	with := func(base []string, extra ...string) []string { return append(append([]string{}, base...), extra...) }
	syncBase := with(append([]string{"sync"}, identity...), "--peer", "peer.example", "--room", "!r:peer.example")

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // substring of stdout+stderr
	}{
		{"help", []string{"help"}, ExitOK, "inspect"},
		{"unknown subcommand", []string{"frobnicate"}, ExitBadInput, `unknown subcommand "frobnicate"`},
		{"unknown flag", []string{"manager", "--no-such-flag"}, ExitBadInput, "flag provided but not defined: -no-such-flag"},
		{"unknown flag without subcommand", []string{"--no-such-flag"}, ExitBadInput, "no-such-flag"},
		{"stray argument", []string{"manager", "extra"}, ExitBadInput, "unexpected arguments"},
		{"manager without identity", []string{"manager"}, ExitBadInput, "--store is required"},
		{"bad concurrency", with(append([]string{"manager"}, identity...), "--concurrent=0"), ExitBadInput, "--concurrent and --room-concurrency must be at least 1"},
		{"bad federation rate limit", with(append([]string{"manager"}, identity...), "--federation-rate-limit=0"), ExitBadInput, "--federation-rate-limit must be above 0"},
		{"bad selector", with(append([]string{"manager"}, identity...), "--selector", "a in (b"), ExitBadInput, "--selector"},
		{"unreadable kubeconfig", with(append([]string{"manager"}, identity...), "--kubeconfig", badKubeconfig), ExitBadInput, "load kubeconfig"},
		{"manager help", []string{"manager", "-h"}, ExitOK, "-leader-elect"},
		{"manager malformed key", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--signing-key", badKey), ExitBadInput, "the seed is not base64"},
		{"manager seed of the wrong length", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--signing-key", shortSeed), ExitBadInput, "line 1: the seed is 3 bytes, an ed25519 seed is 32"},
		{"manager bad store", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--store", "sqlite://"), ExitBadInput, "store"},
		{"manager listen in use", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--listen", "127.0.0.1:-1"), ExitBadInput, "--listen"},
		{"keygen", []string{"keygen"}, ExitOK, "ed25519 "},
		{"keygen with arguments", []string{"keygen", "x"}, ExitBadInput, "unexpected arguments"},
		{"sync without peers", with(append([]string{"sync"}, identity...), "--room", "!r:x"), ExitBadInput, "at least one --peer"},
		{"sync without rooms", with(append([]string{"sync"}, identity...), "--peer", "x"), ExitBadInput, "at least one --room"},
		{"sync room alias", with(append([]string{"sync"}, identity...), "--peer", "x", "--room", "#alias:x"), ExitBadInput, "is not a room ID"},
		{"sync room with a control character", with(syncBase, "--room", "!a\x01:peer.example"), ExitBadInput, `--room "!a\x01:peer.example" is not a room ID`},
		{"sync room over 255 characters", with(syncBase, "--room", "!"+strings.Repeat("a", 255)), ExitBadInput, "it has 256 characters, a room ID has 2 to 255"},
		{"sync peer URL port over 65535", with(syncBase, "--peer", "p2.example=https://p2.example:99999"), ExitBadInput, "port 99999 is out of range"},
		{"sync peer URL with a query", with(syncBase, "--peer", "p2.example=https://p2.example/?a=b"), ExitBadInput, "must not have a query or fragment"},
		{"sync peer URL empty", with(syncBase, "--peer", "p2.example="), ExitBadInput, `--peer p2.example=: URL ""`},
		{"sync peer name port over 65535", with(syncBase, "--peer", "p2.example:99999"), ExitBadInput, "port must be at most 65535"},
		{"sync negative timeout", with(syncBase, "--timeout", "-5s"), ExitBadInput, "--timeout must not be negative"},
		{"sync insecure with only plain http peers", with(append([]string{"sync"}, identity...), "--peer", "p.example=http://127.0.0.1:1", "--room", "!r:x", "--insecure-skip-tls-verify"), ExitBadInput, "--insecure-skip-tls-verify applies only to TLS"},
		{"sync bad server name", with(syncBase, "--server-name", "https://us.example"), ExitBadInput, "not a Matrix server name"},
		{"sync bad peer name", with(syncBase, "--peer", "a b"), ExitBadInput, "--peer a b"},
		{"sync bad peer URL", with(syncBase, "--peer", "p2.example=ftp://p2"), ExitBadInput, "want http(s)://host"},
		{"sync peer twice", with(syncBase, "--peer", "peer.example"), ExitBadInput, "named twice"},
		{"sync room twice", with(syncBase, "--room", "!r:peer.example"), ExitBadInput, "--room !r:peer.example is named twice"},
		{"sync unknown join policy", with(syncBase, "--join", "sometimes"), ExitBadInput, "want never, if-needed or always"},
		{"sync bad join user", with(syncBase, "--join-user", "Room Sync"), ExitBadInput, "--join-user"},
		{"sync missing key file", with(syncBase, "--signing-key", filepath.Join(dir, "nope")), ExitBadInput, "read signing key"},
		{"sync malformed key", with(syncBase, "--signing-key", badKey), ExitBadInput, "the seed is not base64"},
		{"sync seed of the wrong length", with(syncBase, "--signing-key", shortSeed), ExitBadInput, "line 1: the seed is 3 bytes, an ed25519 seed is 32"},
		{"sync empty key file", with(syncBase, "--signing-key", emptyKey), ExitBadInput, "holds no key"},
		{"sync bad store URL", with(syncBase, "--store", "mysql://x"), ExitBadInput, "mysql"},
		{"sync TLS without listen", with(syncBase, "--tls-cert", "c", "--tls-key", "k"), ExitBadInput, "--tls-cert needs --listen"},
		{"sync half TLS", with(syncBase, "--listen", "127.0.0.1:0", "--tls-cert", "c"), ExitBadInput, "go together"},
		{"inspect without flags", []string{"inspect"}, ExitBadInput, "--store and --room are required"},
		{"inspect both outputs", []string{"inspect", "--store", storeURL, "--room", "!r:x", "--json", "--event-ids"}, ExitBadInput, "exclude each other"},
		{"inspect unknown room", []string{"inspect", "--store", storeURL, "--room", "!r:x"}, ExitFailed, "holds no room"},
		{"inspect missing store", []string{"inspect", "--store", "sqlite://" + filepath.Join(dir, "typo.db"), "--room", "!r:x"}, ExitBadInput, "no database file at " + filepath.Join(dir, "typo.db")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := mainNoPanic(t, tc.args, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tc.wantCode, out)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output does not mention %q:\n%s", tc.wantOut, out)
			}
		})
	}
}

// mainNoPanic runs Main and fails the test, rather than the test binary, if it panics: bad
// input must end in a message and exit code 2, never in a stack trace.
func mainNoPanic(t *testing.T, args []string, stdout, stderr io.Writer) (code int) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("roomsync %v panicked: %v", args, r)
		}
	}()
	return Main(args, stdout, stderr)
}

// TestInspectMissingStoreCreatesNothing runs inspect on a path that does not exist: exit 2,
// and no database file left behind.
func TestInspectMissingStoreCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, extra := range [][]string{nil, {"--json"}, {"--event-ids"}} {
		args := append([]string{"inspect", "--store", "sqlite://" + filepath.Join(dir, "typo.db"), "--room", "!r:x"}, extra...)
		var stdout, stderr bytes.Buffer
		if code := mainNoPanic(t, args, &stdout, &stderr); code != ExitBadInput {
			t.Errorf("%v exited %d, want %d: %s", args, code, ExitBadInput, stderr.String())
		}
		if !strings.Contains(stderr.String(), "no database file at") {
			t.Errorf("%v said %q, want it to name the missing file", args, stderr.String())
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("inspect left %v behind (%v)", entries, err)
	}
}

func TestKeygenOutputLoads(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"keygen"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("keygen exited %d: %s", code, stderr.String())
	}
	path := filepath.Join(t.TempDir(), "k")
	writeFile(t, path, stdout.String())
	key, err := federation.LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(key.ID), "ed25519:") || len(key.Priv) == 0 {
		t.Errorf("loaded key %+v", key)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

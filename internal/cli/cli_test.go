package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
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
	storeURL := "sqlite://" + filepath.Join(dir, "store.db")
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
		{"bad selector", with(append([]string{"manager"}, identity...), "--selector", "a in (b"), ExitBadInput, "--selector"},
		{"unreadable kubeconfig", with(append([]string{"manager"}, identity...), "--kubeconfig", badKubeconfig), ExitBadInput, "load kubeconfig"},
		{"manager help", []string{"manager", "-h"}, ExitOK, "-leader-elect"},
		{"manager malformed key", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--signing-key", badKey), ExitBadInput, "invalid private key"},
		{"manager bad store", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--store", "sqlite://"), ExitBadInput, "store"},
		{"manager listen in use", with(append([]string{"manager", "--kubeconfig", kubeconfig}, identity...), "--listen", "127.0.0.1:-1"), ExitBadInput, "--listen"},
		{"keygen", []string{"keygen"}, ExitOK, "ed25519 "},
		{"keygen with arguments", []string{"keygen", "x"}, ExitBadInput, "unexpected arguments"},
		{"sync without peers", with(append([]string{"sync"}, identity...), "--room", "!r:x"), ExitBadInput, "at least one --peer"},
		{"sync without rooms", with(append([]string{"sync"}, identity...), "--peer", "x"), ExitBadInput, "at least one --room"},
		{"sync room alias", with(append([]string{"sync"}, identity...), "--peer", "x", "--room", "#alias:x"), ExitBadInput, "is not a room ID"},
		{"sync bad server name", with(syncBase, "--server-name", "https://us.example"), ExitBadInput, "not a Matrix server name"},
		{"sync bad peer name", with(syncBase, "--peer", "a b"), ExitBadInput, "--peer a b"},
		{"sync bad peer URL", with(syncBase, "--peer", "p2.example=ftp://p2"), ExitBadInput, "want http(s)://host"},
		{"sync peer twice", with(syncBase, "--peer", "peer.example"), ExitBadInput, "named twice"},
		{"sync room twice", with(syncBase, "--room", "!r:peer.example"), ExitBadInput, "--room !r:peer.example is named twice"},
		{"sync join policy not yet", with(syncBase, "--join", "always"), ExitBadInput, "only never"},
		{"sync missing key file", with(syncBase, "--signing-key", filepath.Join(dir, "nope")), ExitBadInput, "read signing key"},
		{"sync malformed key", with(syncBase, "--signing-key", badKey), ExitBadInput, "invalid private key"},
		{"sync empty key file", with(syncBase, "--signing-key", emptyKey), ExitBadInput, "holds no key"},
		{"sync bad store URL", with(syncBase, "--store", "mysql://x"), ExitBadInput, "mysql"},
		{"sync TLS without listen", with(syncBase, "--tls-cert", "c", "--tls-key", "k"), ExitBadInput, "--tls-cert needs --listen"},
		{"sync half TLS", with(syncBase, "--listen", "127.0.0.1:0", "--tls-cert", "c"), ExitBadInput, "go together"},
		{"inspect without flags", []string{"inspect"}, ExitBadInput, "--store and --room are required"},
		{"inspect both outputs", []string{"inspect", "--store", storeURL, "--room", "!r:x", "--json", "--event-ids"}, ExitBadInput, "exclude each other"},
		{"inspect unknown room", []string{"inspect", "--store", storeURL, "--room", "!r:x"}, ExitFailed, "holds no room"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tc.args, &stdout, &stderr)
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

func TestKeygenOutputLoads(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"keygen"}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("keygen exited %d: %s", code, stderr.String())
	}
	path := filepath.Join(t.TempDir(), "k")
	writeFile(t, path, stdout.String())
	key, err := loadSigningKey(path)
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

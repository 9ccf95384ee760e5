package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// flagCommands are the subcommands whose flags the fuzz reads, each through its parse
// function: all that runs before a subcommand opens a store, a key file, a cluster or a
// socket. keygen has nothing after its flags and runs whole.
var flagCommands = []struct {
	name  string
	parse func(args []string, stderr *bytes.Buffer) (code int, done bool, check func(*testing.T, *fuzzEnv))
}{
	{"sync", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		opts, _, code, done := parseSyncFlags(args, stderr)
		return code, done, func(t *testing.T, env *fuzzEnv) { env.checkSync(t, opts) }
	}},
	{"manager", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		opts, _, code, done := parseManagerFlags(args, stderr)
		return code, done, func(t *testing.T, _ *fuzzEnv) {
			if opts.concurrent < 1 || opts.roomConcurrency < 1 || opts.originRate <= 0 || opts.originBurst < 1 {
				t.Fatalf("manager accepted %+v", opts)
			}
			_ = opts.metricsOptions()
		}
	}},
	{"inspect", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		f, _, code, done := parseInspectFlags(args, stderr)
		return code, done, func(t *testing.T, _ *fuzzEnv) {
			if f.storeURL == "" || f.roomID == "" || countTrue(f.eventIDs, f.check, f.gaps, f.dag.on, f.stateAt != "") > 1 {
				t.Fatalf("inspect accepted %+v", f)
			}
		}
	}},
	{"export", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		f, _, code, done := parseExportFlags(args, stderr)
		return code, done, func(t *testing.T, _ *fuzzEnv) {
			if f.storeURL == "" || f.opts.RoomID == "" || f.opts.Format == "" {
				t.Fatalf("export accepted %+v", f)
			}
		}
	}},
	{"fsck", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		f, _, code, done := parseFsckFlags(args, stderr)
		return code, done, func(t *testing.T, _ *fuzzEnv) {
			if f.storeURL == "" || f.opts.Workers < 0 {
				t.Fatalf("fsck accepted %+v", f)
			}
		}
	}},
	{"keygen", func(args []string, stderr *bytes.Buffer) (int, bool, func(*testing.T, *fuzzEnv)) {
		var stdout bytes.Buffer
		code := runKeygen(args, &stdout, stderr)
		// Help ends keygen with 0 and prints no key.
		return code, code != ExitOK || stdout.Len() == 0, func(t *testing.T, _ *fuzzEnv) {
			if !strings.HasPrefix(stdout.String(), "ed25519 a_") {
				t.Fatalf("keygen printed %q", stdout.String())
			}
		}
	}},
}

// fuzzEnv is what the checks of accepted flags build on: a store in a temporary directory.
type fuzzEnv struct {
	store store.Store
	key   *mfed.SigningKey
}

// checkSync builds the resolver sync would from flags it accepted, with a generated key and
// a store in a temporary directory: flags sync takes are flags the resolver takes, without
// touching the network.
func (env *fuzzEnv) checkSync(t *testing.T, opts *syncOptions) {
	t.Helper()
	res, err := resolver.Open(resolver.Setup{Store: env.store, ServerName: opts.serverName, Key: env.key,
		Peers: opts.peerList(), AllowPrivateNetworks: opts.allowPrivateNetworks, JoinUser: opts.joinUser,
		Join: resolver.JoinPolicy(opts.join), Limits: opts.limits, Log: logr.Discard()})
	if err != nil {
		t.Fatalf("sync accepted flags the resolver refuses: %v", err)
	}
	res.Close()
}

// FuzzFlags gives each subcommand an arbitrary argument vector (NUL-separated). Nothing
// panics; flags are refused with exit 2 and a message, or -h shows help, or they are
// accepted and what the subcommand builds from them holds.
func FuzzFlags(f *testing.F) {
	for _, seed := range []struct {
		command uint8
		args    []string
	}{
		{0, []string{"--store", "sqlite:///var/lib/roomsync/events.db", "--server-name", "replica.example", "--signing-key", "signing.key",
			"--peer", "matrix.org", "--peer", "dendrite.local=https://dendrite.local:8448", "--room", "!abc:matrix.org", "--join", "if-needed"}},
		{0, []string{"-store=sqlite://x.db", "-server-name=replica.example:8448", "-signing-key=k", "-peer=a.example=http://10.0.0.1:8008",
			"-room=!r:a.example", "-insecure-skip-tls-verify", "-listen=:8448", "-tls-cert=c", "-tls-key=k", "-since=2026-01-02T15:04:05Z"}},
		{0, []string{"--store", "x", "--server-name", "[::1]:8448", "--signing-key", "k", "--peer", "[::1]:8448=https://[::1]:8448/prefix/",
			"--room", "!r:x", "--backfill-limit", "1000", "--missing-events-limit", "0", "--timeout", "-1s", "--min-depth", "-5"}},
		{0, []string{"--peer", "a=", "--peer", "a", "--room", "r", "--room", "r", "--join", "sometimes", "--join-user", "Upper", "--since", "yesterday"}},
		{1, []string{"--store", "postgres://u:pw@db/roomsync", "--server-name", "replica.example", "--signing-key", "/keys/signing.key",
			"--leader-elect", "--metrics-bind-address", "0", "--selector", "tier in (a,b),!legacy", "--zap-log-level", "debug"}},
		{1, []string{"--concurrent", "0", "--federation-rate-limit", "-1", "--pass-timeout", "10ms", "--selector", "a in (", "--leader-election-id", ""}},
		{2, []string{"--store", "sqlite://events.db", "--room", "!r:x", "--dag", "--format", "dot", "--around", "$e", "--depth", "3"}},
		{2, []string{"--store", "sqlite://events.db", "--room", "!r:x", "--json", "--gaps"}},
		{2, []string{"--store", "s", "--room", "r", "--json", "--event-ids", "--format", "png", "--depth", "-1"}},
		{3, []string{"--store", "sqlite://events.db", "--room", "!r:x", "--format", "text", "--since", "1704067200000", "--until", "2026-01-02T15:04:05Z", "--out", "room.ndjson.gz"}},
		{3, []string{"--store", "s", "--room", "r", "--format", "xml", "--since", "soon", "--out", "/nonexistent/dir/x"}},
		{4, nil},
		{4, []string{"extra"}},
		{0, []string{"-h"}},
		{2, []string{"--help", "--store"}},
		{3, []string{"--", "positional"}},
	} {
		f.Add(seed.command, strings.Join(seed.args, "\x00"))
	}
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(f.TempDir(), "events.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	env := &fuzzEnv{store: st, key: newSigningKey()}
	f.Fuzz(func(t *testing.T, command uint8, joined string) {
		var args []string
		if joined != "" {
			args = strings.Split(joined, "\x00")
		}
		c := flagCommands[int(command)%len(flagCommands)]
		var stderr bytes.Buffer
		code, done, check := c.parse(args, &stderr)
		switch {
		case !done:
			if code != ExitOK {
				t.Fatalf("%s %q: accepted with code %d", c.name, args, code)
			}
			check(t, env)
		case code == ExitOK:
			if !strings.Contains(stderr.String(), "Usage") && !strings.Contains(stderr.String(), "-") {
				t.Fatalf("%s %q: done with 0 and no help: %q", c.name, args, stderr.String())
			}
		case code == ExitBadInput:
			if strings.TrimSpace(stderr.String()) == "" {
				t.Fatalf("%s %q: refused without a word", c.name, args)
			}
		default:
			t.Fatalf("%s %q: exit %d before doing anything", c.name, args, code)
		}
	})
}

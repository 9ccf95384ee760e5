package cli

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/controllers"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// The listener of `sync --listen` and of the manager serves history: a signed request
// reaches the replica (a server in none of the store's rooms gets Synapse's 403), an unsigned
// one is refused before it.
func TestListenerServesHistory(t *testing.T) {
	// The requester is a fixture peer on loopback, whose key discovery finds at its address.
	ctx, st, key, opts, inbound := listenerSetup(t, true)
	addr, stop, err := opts.keyServer(key, "test", nil, func(srv *federation.Server) {
		serveHistory(srv, opts.serverName, st, inbound, logr.Discard(), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 5, Events: 10})
	peer := fixturepeer.Start(t, room)
	_, err = peer.Pusher(addr, nil).Backfill(ctx, &mfed.ReqBackfill{ServerName: opts.serverName, RoomID: room.ID, Limit: 10,
		BackfillFrom: room.Heads()})
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != http.StatusForbidden || httpErr.RespError.Err != "Host not in room." {
		t.Errorf("signed /backfill of a room not held: %v, want 403 Host not in room.", err)
	}
	resp, err := http.Get("http://" + addr + "/_matrix/federation/v1/backfill/" + string(room.ID) + "?v=" + string(room.Heads()[0]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned /backfill: %d, want 401", resp.StatusCode)
	}
}

// Every endpoint of the manager's listener but our keys and version answers only requests
// signed by their origin: an unsigned request to any of them, with or without a forged
// X-Matrix header, gets 401 before anything reads the store.
func TestManagerListenerNeedsSignaturesButForKeys(t *testing.T) {
	ctx, st, key, opts, inbound := listenerSetup(t, false)
	syncer := &controllers.Syncer{Store: st, ServerName: opts.serverName, Key: key, Metrics: controllers.NewMetrics(), Log: logr.Discard()}
	var routes []federation.Route
	wire := managerRoutes(opts.serverName, 20, 100, st, inbound, syncer)
	addr, stop, err := opts.keyServer(key, "test", resolver.NotaryKeysOf(st), func(srv *federation.Server) {
		wire(srv)
		routes = srv.Routes()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	open := map[string]bool{}
	for _, r := range routes {
		public := strings.HasPrefix(r.Path, "/_matrix/key/v2/") || r.Path == "/_matrix/federation/v1/version"
		if r.Authenticated == public {
			t.Errorf("%s %s: authenticated %t", r.Method, r.Path, r.Authenticated)
		}
		if public {
			open[r.Method+" "+r.Path] = true
			continue
		}
		// A path of the pattern, its wildcards filled in.
		path := regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(r.Path, "x")
		for _, auth := range []string{"", `X-Matrix origin="evil.example",destination="archive.example",key="ed25519:a",sig="c2ln"`} {
			var body io.Reader
			if r.Method != http.MethodGet {
				body = strings.NewReader("{}")
			}
			req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+path, body)
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: %d, want 401", r.Method, path, auth, resp.StatusCode)
			}
		}
	}
	// The routes the issue names, so that a refactor that drops one shows here.
	for _, want := range []string{"PUT /_matrix/federation/v1/send/{txnId}", "PUT /_matrix/federation/v2/invite/{roomId}/{eventId}",
		"GET /_matrix/federation/v1/backfill/{roomId}", "POST /_matrix/federation/v1/get_missing_events/{roomId}"} {
		if !slices.ContainsFunc(routes, func(r federation.Route) bool { return r.Method+" "+r.Path == want && r.Authenticated }) {
			t.Errorf("no authenticated route %s among %v", want, routes)
		}
	}
	if len(open) != 5 {
		t.Errorf("public routes %v, want our key, the key queries and the version", open)
	}
	t.Logf("%d routes, %d of them public", len(routes), len(open))
}

// listenerSetup is a listener's identity, "archive.example" on an ephemeral loopback port,
// with a store and the key ring that checks inbound signatures (reaching loopback peers, TLS
// unchecked, when loopback is set), all closed when the test ends.
func listenerSetup(t *testing.T, loopback bool) (context.Context, store.Store, *mfed.SigningKey, identityOptions, *federation.KeyRing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := mfed.GenerateSigningKey()
	opts := identityOptions{serverName: "archive.example", listen: "127.0.0.1:0"}
	inbound, closeInbound, err := resolver.InboundKeys(st, opts.serverName, key, loopback, loopback)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeInbound)
	return ctx, st, key, opts, inbound
}

package resolver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// TestNotaryForTheDead: a fixture peer's key response, fetched from the peer itself over
// verified TLS, is kept in the store; once the peer is stopped, another server asking our
// listener's /_matrix/key/v2/query (with mautrix's own client) gets it with the peer's
// self-signature intact and ours added. The keys of the room's origins, which only the peer
// vouched for, are not passed on.
func TestNotaryForTheDead(t *testing.T) {
	const us = "roomsync.test"
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ourKey := mfed.GenerateSigningKey()

	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 21, Events: 10})
	peer, err := fixturepeer.New(room)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dead, deadKey := peer.ServerName(), peer.Key()
	origin := room.Origins()[0]
	ep, err := federation.ParseEndpoint(peer.URL(), false)
	if err != nil {
		t.Fatal(err)
	}
	client, err := federation.NewClient(federation.Options{
		ServerName: us, Key: ourKey, Endpoints: map[string]federation.Endpoint{dead: ep},
		RootCAs: certOf(t, peer.URL()), RequestTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ring := federation.NewKeyRing(client, federation.StaticNotaries(dead)).WithKeyStore(resolver.KeyStoreOf(st))
	if k, _, err := ring.Key(ctx, dead, deadKey.ID, time.Now()); err != nil || k != deadKey.Pub {
		t.Fatalf("the peer's own key: %q, %v", k, err)
	}
	originKey := fixturepeer.OriginKey(origin)
	if k, _, err := ring.Key(ctx, origin, originKey.ID, time.Now()); err != nil || k != originKey.Pub {
		t.Fatalf("an origin's key vouched for by the peer: %q, %v", k, err)
	}
	peer.Close()

	srv := federation.NewServer()
	srv.HandleKeysAsNotary(us, ourKey, "test", resolver.NotaryKeysOf(st))
	listener := httptest.NewServer(srv)
	defer listener.Close()
	asker := mfed.NewClient("asker.test", mfed.GenerateSigningKey(), nil, exhttp.ClientSettings{})
	asker.HTTP.Transport = &toListener{base: listener.URL}

	query := func(server string, keyIDs ...id.KeyID) []*mfed.ServerKeyResponse {
		t.Helper()
		criteria := map[id.KeyID]mfed.QueryKeysCriteria{}
		for _, k := range keyIDs {
			criteria[k] = mfed.QueryKeysCriteria{}
		}
		resp, err := asker.QueryKeys(ctx, us, &mfed.ReqQueryKeys{ServerKeys: map[string]map[id.KeyID]mfed.QueryKeysCriteria{server: criteria}})
		if err != nil {
			t.Fatalf("POST query for %s: %v", server, err)
		}
		var get mfed.QueryKeysResponse
		if err := asker.MakeRequest(ctx, us, false, http.MethodGet, mfed.KeyURLPath{"v2", "query", server}, nil, &get); err != nil {
			t.Fatalf("GET query for %s: %v", server, err)
		}
		if len(keyIDs) == 0 && len(get.ServerKeys) != len(resp.ServerKeys) {
			t.Errorf("GET answered %d responses for %s, POST %d", len(get.ServerKeys), server, len(resp.ServerKeys))
		}
		return resp.ServerKeys
	}

	for _, keyIDs := range [][]id.KeyID{nil, {deadKey.ID}} {
		got := query(dead, keyIDs...)
		if len(got) != 1 {
			t.Fatalf("%d responses for the stopped peer (key IDs %v), want its one", len(got), keyIDs)
		}
		r := got[0]
		if r.ServerName != dead || r.VerifyKeys[deadKey.ID].Key != deadKey.Pub {
			t.Errorf("answer %s, want the peer's key %s", r.Raw, deadKey.Pub)
		}
		if err := r.VerifySelfSignature(); err != nil {
			t.Errorf("the peer's own signature does not verify: %v", err)
		}
		if err := signutil.VerifyJSON(us, ourKey.ID, ourKey.Pub, r.Raw); err != nil {
			t.Errorf("our signature does not verify: %v", err)
		}
	}
	if got := query(dead, "ed25519:other"); len(got) != 0 {
		t.Errorf("a key the peer never had: %d responses", len(got))
	}
	if got := query(origin); len(got) != 0 {
		t.Errorf("keys of %s that only the peer vouched for were passed on: %s", origin, got[0].Raw)
	}
	if got := query("unknown.test"); len(got) != 0 {
		t.Errorf("an unknown server: %d responses", len(got))
	}
	if got := query(us); len(got) != 1 || got[0].VerifyKeys[ourKey.ID].Key != ourKey.Pub || got[0].VerifySelfSignature() != nil {
		t.Errorf("our own name: %v", got)
	}
}

// certOf is the certificate a test server at rawURL presents, as the one root to trust.
func certOf(t *testing.T, rawURL string) *x509.CertPool {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reading the certificate to trust
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roots := x509.NewCertPool()
	roots.AddCert(conn.ConnectionState().PeerCertificates[0])
	return roots
}

// toListener sends mautrix's matrix-federation:// requests to our listener, whatever the
// server name.
type toListener struct{ base string }

func (l *toListener) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(l.base)
	if err != nil {
		return nil, fmt.Errorf("listener URL: %w", err)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
	return http.DefaultTransport.RoundTrip(out)
}

package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// peerServer is a TLS server on loopback with a federation client routed to it by name.
type peerServer struct {
	name   string
	srv    *httptest.Server
	client *Client
}

func newPeerServer(t *testing.T, name string, handler http.Handler, opts ...func(*Options)) *peerServer {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	ep, err := ParseEndpoint(srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(), Endpoints: map[string]Endpoint{name: ep}, RequestTimeout: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &peerServer{name: name, srv: srv, client: c}
}

func TestRoutingSignsAndSetsContentType(t *testing.T) {
	var got atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("POST /prefix/_matrix/federation/v1/get_missing_events/{room}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Store(fmt.Sprintf("%s|%s|%s|%s", r.Header.Get("Content-Type"), r.PathValue("room"), r.Header.Get("Authorization"), body))
		_, _ = w.Write([]byte(`{"events":[]}`))
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	ep, err := ParseEndpoint(srv.URL+"/prefix/", true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(), Endpoints: map[string]Endpoint{"peer.example": ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.MissingEvents(context.Background(), "peer.example", "!r:peer.example", []string{"$a"}, []string{"$b"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(got.Load().(string), "|", 4)
	if parts[0] != "application/json" {
		t.Errorf("Content-Type = %q, want application/json (Dendrite refuses bodies without it)", parts[0])
	}
	if parts[1] != "!r:peer.example" {
		t.Errorf("room path = %q", parts[1])
	}
	if !strings.HasPrefix(parts[2], "X-Matrix ") || !strings.Contains(parts[2], `destination="peer.example"`) || !strings.Contains(parts[2], `origin="us.example"`) {
		t.Errorf("Authorization = %q, want a signed X-Matrix header with origin and destination", parts[2])
	}
	if !strings.Contains(parts[3], `"limit":1`) {
		t.Errorf("body %s does not carry a limit (Dendrite answers 500 without one)", parts[3])
	}
}

func TestExplicitTLSVerification(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"server":{"name":"x","version":"1"}}`))
	}))
	defer srv.Close()
	ep, err := ParseEndpoint(srv.URL, false) // verification on: the test server's cert is unknown
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(), Endpoints: map[string]Endpoint{"peer.example": ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.fed.Version(context.Background(), "peer.example")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an unverifiable certificate was accepted: %v", err)
	}
	if outcome, _ := Classify(err); outcome != OutcomeUnreachable {
		t.Errorf("Classify(TLS failure) = %s, want unreachable", outcome)
	}
}

func TestDiscoveredPeersStayOffLoopback(t *testing.T) {
	// A peer reached through discovery may not lead us to loopback: 127.0.0.1:1 is an IP
	// literal, so discovery resolves it to itself, and the dialer refuses it.
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(), RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.fed.Version(context.Background(), "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "refusing to connect") {
		t.Fatalf("discovery reached loopback: %v", err)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		body       string
		header     map[string]string
		want       Outcome
		wantRetry  time.Duration
		hangOnPath bool
	}{
		{"not found", 404, `{"errcode":"M_NOT_FOUND","error":"no"}`, nil, OutcomeNotFound, 0, false},
		{"unrecognized", 404, `{"errcode":"M_UNRECOGNIZED","error":"no"}`, nil, OutcomeNotFound, 0, false},
		{"forbidden", 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, nil, OutcomeForbidden, 0, false},
		{"rate limited", 429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow","retry_after_ms":1500}`, nil, OutcomeRateLimited, 1500 * time.Millisecond, false},
		{"rate limited by header", 429, `{}`, map[string]string{"Retry-After": "3"}, OutcomeRateLimited, 3 * time.Second, false},
		{"server error", 500, `{"errcode":"M_UNKNOWN","error":"boom"}`, nil, OutcomeServerError, 0, false},
		{"bad gateway without JSON", 502, `<html>`, nil, OutcomeUnreachable, 0, false},
		{"bad request", 400, `{"errcode":"M_BAD_JSON","error":"no"}`, nil, OutcomeBadRequest, 0, false},
		{"truncated JSON", 200, `{"origin":"x","pdus":[{"a":`, nil, OutcomeBadResponse, 0, false},
		{"no body", 200, ``, nil, OutcomeBadResponse, 0, false},
		{"timeout", 200, `{}`, nil, OutcomeUnreachable, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.hangOnPath {
					select {
					case <-r.Context().Done():
					case <-time.After(10 * time.Second):
					}
					return
				}
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			p := newPeerServer(t, "peer.example", handler, func(o *Options) { o.RequestTimeout = 300 * time.Millisecond })
			_, err := p.client.Backfill(context.Background(), "peer.example", "!r:x", []string{"$e"}, 10)
			if err == nil {
				t.Fatal("no error")
			}
			got, retry := Classify(err)
			if got != tc.want || retry != tc.wantRetry {
				t.Errorf("Classify(%v) = %s, %v; want %s, %v", err, got, retry, tc.want, tc.wantRetry)
			}
		})
	}
	if got, _ := Classify(nil); got != OutcomeOK {
		t.Errorf("Classify(nil) = %s", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, _ := Classify(ctx.Err()); got != OutcomeCanceled {
		t.Errorf("Classify(canceled) = %s", got)
	}
}

func TestResponseSizeCap(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"origin":"x","pdus":[`))
		chunk := []byte(strings.Repeat(`{"type":"m.room.message"},`, 1000))
		for range 200 { // ~5 MB, more than the cap below
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	p := newPeerServer(t, "peer.example", handler, func(o *Options) { o.MaxResponseBytes = 1 << 20 })
	_, err := p.client.Backfill(context.Background(), "peer.example", "!r:x", []string{"$e"}, 10)
	if got, _ := Classify(err); got != OutcomeBadResponse {
		t.Fatalf("an oversized answer gave %v (%s), want bad_response", err, got)
	}
}

func TestKeyServerServesVerifiableKey(t *testing.T) {
	key := mfed.GenerateSigningKey()
	p := newPeerServer(t, "peer.example", NewKeyServer("peer.example", key, "test"))
	resp, err := p.client.ServerKeys(context.Background(), "peer.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkKeyResponse("peer.example", resp); err != nil {
		t.Fatal(err)
	}
	if resp.VerifyKeys[key.ID].Key != key.Pub {
		t.Errorf("served key %v, want %s", resp.VerifyKeys, key.Pub)
	}
	version, err := p.client.fed.Version(context.Background(), "peer.example")
	if err != nil || version.Server.Name != "roomsync" || version.Server.Version != "test" {
		t.Errorf("/version = %+v, %v", version, err)
	}
}

func TestKeyRingFetchesCachesAndFallsBack(t *testing.T) {
	origin := mfed.GenerateSigningKey()
	var originHits, notaryHits atomic.Int32
	originUp := atomic.Bool{}
	originUp.Store(true)
	originHandler := NewKeyServer("origin.example", origin, "test")

	// The notary answers /key/v2/query with origin's self-signed key response.
	notaryKey := mfed.GenerateSigningKey()
	notaryMux := http.NewServeMux()
	notaryMux.Handle("/", NewKeyServer("notary.example", notaryKey, "test"))
	notarySigns := atomic.Bool{}
	notarySigns.Store(true)
	notaryMux.HandleFunc("POST /_matrix/key/v2/query", func(w http.ResponseWriter, r *http.Request) {
		notaryHits.Add(1)
		resp := origin.GenerateKeyResponse("origin.example", nil)
		if notarySigns.Load() {
			sig, err := notaryKey.SignJSON(resp)
			if err != nil {
				t.Error(err)
			}
			resp.Signatures["notary.example"] = map[id.KeyID]string{notaryKey.ID: sig}
		}
		_ = json.NewEncoder(w).Encode(mfed.QueryKeysResponse{ServerKeys: []*mfed.ServerKeyResponse{resp}})
	})
	originSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		if !originUp.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		originHandler.ServeHTTP(w, r)
	}))
	defer originSrv.Close()
	notarySrv := httptest.NewTLSServer(notaryMux)
	defer notarySrv.Close()
	originEP, _ := ParseEndpoint(originSrv.URL, true)
	notaryEP, _ := ParseEndpoint(notarySrv.URL, true)
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]Endpoint{"origin.example": originEP, "notary.example": notaryEP}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ring := NewKeyRing(c, StaticNotaries("notary.example"))
	clock := time.Now()
	ring.now = func() time.Time { return clock }
	ctx := context.Background()

	got, until, err := ring.Key(ctx, "origin.example", origin.ID, clock)
	if err != nil || got != origin.Pub || until.Before(clock) {
		t.Fatalf("Key = %q, %v, %v; want origin's key valid past now", got, until, err)
	}
	// Cached: no second fetch.
	if _, _, err := ring.Key(ctx, "origin.example", origin.ID, clock); err != nil || originHits.Load() != 1 {
		t.Fatalf("second lookup fetched again (%d fetches, %v)", originHits.Load(), err)
	}
	// An unknown key ID right after a fetch: empty, no refetch storm.
	if k, _, err := ring.Key(ctx, "origin.example", id.KeyID("ed25519:nope"), clock); k != "" || err != nil || originHits.Load() != 1 {
		t.Fatalf("unknown key ID: %q, %v after %d fetches", k, err, originHits.Load())
	}

	// After valid_until_ts the key is fetched again; with the origin down, from the notary.
	originUp.Store(false)
	clock = clock.Add(48 * time.Hour)
	got, _, err = ring.Key(ctx, "origin.example", origin.ID, clock)
	if err != nil || got != origin.Pub || notaryHits.Load() != 1 {
		t.Fatalf("fallback to notary: key %q, err %v, notary asked %d times", got, err, notaryHits.Load())
	}

	// A notary that does not sign what it vouches for is not believed.
	unsignedRing := NewKeyRing(c, StaticNotaries("notary.example"))
	unsignedRing.now = func() time.Time { return clock }
	notarySigns.Store(false)
	if k, _, err := unsignedRing.Key(ctx, "origin.example", origin.ID, clock); err == nil || k != "" {
		t.Fatalf("a key vouched for without the notary's signature was accepted: %q, %v", k, err)
	}
	notarySigns.Store(true)

	// A server nobody knows: an error, remembered for a while instead of asked again.
	before := notaryHits.Load()
	if _, _, err := ring.Key(ctx, "127.0.0.1:1", id.KeyID("ed25519:x"), clock); err == nil {
		t.Fatal("keys of an unknown server were found")
	}
	after := notaryHits.Load()
	if _, _, err := ring.Key(ctx, "127.0.0.1:1", id.KeyID("ed25519:x"), clock); err == nil || notaryHits.Load() != after {
		t.Fatalf("failed fetch not remembered: %v, notary asked %d→%d", err, before, notaryHits.Load())
	}
}

func TestKeyResponseChecks(t *testing.T) {
	key := mfed.GenerateSigningKey()
	good := key.GenerateKeyResponse("a.example", nil)
	raw, _ := json.Marshal(good)
	var parsed mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &parsed); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyResponse("a.example", &parsed); err != nil {
		t.Errorf("good response rejected: %v", err)
	}
	if err := checkKeyResponse("b.example", &parsed); err == nil {
		t.Error("response for another server accepted")
	}
	forged := strings.Replace(string(raw), `"a.example"`, `"a.example","extra":1`, 1)
	var tampered mfed.ServerKeyResponse
	if err := json.Unmarshal([]byte(forged), &tampered); err != nil {
		t.Fatal(err)
	}
	if err := checkKeyResponse("a.example", &tampered); err == nil {
		t.Error("response altered after signing accepted")
	}
}

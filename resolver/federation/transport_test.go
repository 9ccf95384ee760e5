package federation

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
)

// versionServer is a federation peer on loopback with a self-signed certificate that
// answers /version, and counts what it answered.
func versionServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/federation/v1/version" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"server":{"name":"peer","version":"1"}}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newNamedClient(t *testing.T, endpoints map[string]Endpoint, allowPrivate bool) *Client {
	t.Helper()
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(), Endpoints: endpoints,
		AllowPrivateNetworks: allowPrivate, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A peer the user named by its server name alone is the user's choice: it is reached on
// loopback, and its TLS setting applies without a URL.
func TestNamedPeerWithoutURL(t *testing.T) {
	srv := versionServer(t)
	name := srv.Listener.Addr().String() // 127.0.0.1:port, an IP literal with a port

	for _, c := range []struct {
		desc     string
		insecure bool
		wantErr  string
	}{
		{"self-signed, verification skipped", true, ""},
		{"self-signed, verified", false, "certificate"},
	} {
		t.Run(c.desc, func(t *testing.T) {
			client := newNamedClient(t, map[string]Endpoint{name: DiscoveredEndpoint(c.insecure)}, false)
			_, err := client.fed.Version(context.Background(), name)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("named loopback peer: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("err = %v, want one about %q", err, c.wantErr)
			}
			if got := client.VerifiedOrigin(name); got != !c.insecure {
				t.Errorf("VerifiedOrigin = %t, want %t", got, !c.insecure)
			}
		})
	}

	// The same address, not named by the user (an origin found in an event), stays refused.
	client := newNamedClient(t, nil, false)
	if _, err := client.fed.Version(context.Background(), name); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("an unnamed loopback server was contacted: %v", err)
	}
}

// What a named peer's .well-known delegates to is not the user's choice: a private address
// there is refused unless private networks are allowed. The peer is named "localhost", so its
// .well-known is fetched from https://localhost:443; the test needs to bind that port.
func TestWellKnownDelegationToPrivateAddress(t *testing.T) {
	target := versionServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.1:443 for a .well-known server (needs root): %v", err)
	}
	wellKnown := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"m.server":"` + target.Listener.Addr().String() + `"}`))
	}))
	wellKnown.Listener.Close()
	wellKnown.Listener = ln
	wellKnown.StartTLS()
	t.Cleanup(wellKnown.Close)

	refused := newNamedClient(t, map[string]Endpoint{"localhost": DiscoveredEndpoint(true)}, false)
	_, err = refused.fed.Version(context.Background(), "localhost")
	if !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("delegation to %s: err = %v, want %v", target.Listener.Addr(), err, ErrPrivateAddress)
	}
	if outcome, _ := Classify(err); outcome != OutcomeUnreachable {
		t.Errorf("Classify = %s, want unreachable", outcome)
	}

	allowed := newNamedClient(t, map[string]Endpoint{"localhost": DiscoveredEndpoint(true)}, true)
	if _, err := allowed.fed.Version(context.Background(), "localhost"); err != nil {
		t.Fatalf("delegation with private networks allowed: %v", err)
	}
}

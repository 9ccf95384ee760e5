package federation

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	mfed "maunium.net/go/mautrix/federation"
)

// Endpoint is how to reach a peer that the user named with an explicit URL. Such peers skip
// Matrix server discovery and may sit on loopback or private addresses (in-cluster
// homeservers, test peers); peers reached through discovery may not, unless allowed.
type Endpoint struct {
	// BaseURL is the scheme, host and optional path prefix of the peer's federation API.
	BaseURL *url.URL
	// InsecureSkipTLSVerify accepts any certificate. Event signatures are still verified.
	InsecureSkipTLSVerify bool
}

// ParseEndpoint parses a peer's base URL as a RoomSync or `--peer NAME=URL` gives it.
func ParseEndpoint(raw string, insecure bool) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("parse peer URL %q: %w", raw, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Endpoint{}, fmt.Errorf("peer URL %q: want http(s)://host[:port]", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Endpoint{}, fmt.Errorf("peer URL %q: no credentials, query or fragment allowed", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return Endpoint{BaseURL: u, InsecureSkipTLSVerify: insecure}, nil
}

// routingTransport sends requests for peers with an explicit endpoint straight to it, and
// everything else through mautrix's resolving transport (discovery, IP filtering). It also
// sets Content-Type on request bodies: mautrix leaves it out, and Dendrite answers a POST
// without it with 400.
type routingTransport struct {
	endpoints map[string]Endpoint
	direct    *http.Transport // verifies certificates
	insecure  *http.Transport // skips verification, for peers that asked for it
	discovery http.RoundTripper
}

func newRoutingTransport(endpoints map[string]Endpoint, discovery http.RoundTripper, dialTimeout time.Duration, rootCAs *x509.CertPool) *routingTransport {
	newTransport := func(skipVerify bool) *http.Transport {
		dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
		return &http.Transport{
			DialContext:           dialer.DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify, RootCAs: rootCAs}, //nolint:gosec // only for peers configured so
			TLSHandshakeTimeout:   dialTimeout,
			ResponseHeaderTimeout: 2 * time.Minute,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	return &routingTransport{
		endpoints: endpoints,
		direct:    newTransport(false),
		insecure:  newTransport(true),
		discovery: discovery,
	}
}

func (t *routingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Header.Get("Content-Type") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Content-Type", "application/json")
	}
	ep, ok := t.endpoints[req.URL.Host]
	if !ok {
		return t.discovery.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = ep.BaseURL.Scheme
	out.URL.Host = ep.BaseURL.Host
	out.URL.Path = ep.BaseURL.Path + req.URL.Path
	if req.URL.RawPath != "" {
		out.URL.RawPath = ep.BaseURL.Path + req.URL.RawPath
	}
	out.Host = ep.BaseURL.Host
	if ep.InsecureSkipTLSVerify {
		return t.insecure.RoundTrip(out)
	}
	return t.direct.RoundTrip(out)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach both pools.
func (t *routingTransport) CloseIdleConnections() {
	t.direct.CloseIdleConnections()
	t.insecure.CloseIdleConnections()
	switch d := t.discovery.(type) {
	case interface{ CloseIdleConnections() }:
		d.CloseIdleConnections()
	case *mfed.ServerResolvingTransport:
		d.Transport.CloseIdleConnections()
	}
}

package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	mfed "maunium.net/go/mautrix/federation"
)

// Endpoint is how to reach a peer that the user named. A name the user wrote is the user's
// choice, so it may lead to loopback and private addresses (in-cluster homeservers, test
// peers); where a remote .well-known or SRV record leads is not, unless private networks are
// allowed: that is the guard against being steered into the operator's own network.
type Endpoint struct {
	// BaseURL is the scheme, host and optional path prefix of the peer's federation API. Nil:
	// the peer is found by Matrix server discovery from its server name.
	BaseURL *url.URL
	// InsecureSkipTLSVerify accepts any certificate, however the peer is reached (.well-known
	// included). Event signatures are still verified.
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

// DiscoveredEndpoint is a peer the user named without a URL: found by server discovery.
func DiscoveredEndpoint(insecure bool) Endpoint {
	return Endpoint{InsecureSkipTLSVerify: insecure}
}

// ErrPrivateAddress is returned (wrapped) when discovery leads to an address that is not
// public and private networks are not allowed.
var ErrPrivateAddress = errors.New("refusing to connect to a loopback or private address reached through server discovery")

// routingTransport sends requests for the peers the user named to them: straight to their URL,
// or through server discovery from the name the user wrote. Every other server (the origin
// of an event, found only in what peers sent) goes through mautrix's resolving transport,
// which refuses private addresses unless allowed. It also sets Content-Type on request
// bodies: mautrix leaves it out, and Dendrite answers a POST without it with 400.
type routingTransport struct {
	endpoints    map[string]Endpoint
	allowPrivate bool
	// Peers with a URL, and peers found by discovery, have pools of their own: a discovered
	// peer's connections are keyed by the name in its Host header, not by the address dialled.
	direct, insecure               *http.Transport
	discovered, discoveredInsecure *http.Transport
	newTransport                   func(skipVerify bool) *http.Transport
	discovery                      http.RoundTripper

	mu       sync.Mutex
	resolved map[string]resolution
}

// resolution is a named peer's discovery result, kept until it expires.
type resolution struct {
	hostHeader   string
	addr         string // host:port to dial
	allowPrivate bool   // the address is the name the user wrote, not a delegation
	expires      time.Time
}

// dialPolicy travels with a request's context to the dialer: where to connect, and whether a
// private address is acceptable there.
type dialPolicy struct {
	addr         string // "" dials the request's own host
	allowPrivate bool
}

type dialPolicyKey struct{}

func newRoutingTransport(endpoints map[string]Endpoint, discovery http.RoundTripper, allowPrivate bool, dialTimeout time.Duration, rootCAs *x509.CertPool) *routingTransport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, ControlContext: controlDial}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p, ok := ctx.Value(dialPolicyKey{}).(dialPolicy); ok && p.addr != "" {
			addr = p.addr
		}
		return dialer.DialContext(ctx, network, addr)
	}
	newTransport := func(skipVerify bool) *http.Transport {
		return &http.Transport{
			DialContext:           dial,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify, RootCAs: rootCAs}, //nolint:gosec // only for peers configured so
			TLSHandshakeTimeout:   dialTimeout,
			ResponseHeaderTimeout: 2 * time.Minute,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	return &routingTransport{
		endpoints:          endpoints,
		allowPrivate:       allowPrivate,
		direct:             newTransport(false),
		insecure:           newTransport(true),
		discovered:         newTransport(false),
		discoveredInsecure: newTransport(true),
		newTransport:       newTransport,
		discovery:          discovery,
		resolved:           map[string]resolution{},
	}
}

// controlDial refuses a private address unless the request's dial policy allows it. A
// request without a policy (one for a URL the user gave) may go anywhere.
func controlDial(ctx context.Context, _, address string, _ syscall.RawConn) error {
	p, ok := ctx.Value(dialPolicyKey{}).(dialPolicy)
	if !ok || p.allowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("dial %q: %w", address, err)
	}
	if ip := net.ParseIP(host); ip == nil || !mfed.DefaultAllowIP(ip) {
		return fmt.Errorf("%w: %s", ErrPrivateAddress, host)
	}
	return nil
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
	if ep.BaseURL == nil {
		return t.roundTripDiscovered(req, ep.InsecureSkipTLSVerify)
	}
	pool := t.direct
	if ep.InsecureSkipTLSVerify {
		pool = t.insecure
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = ep.BaseURL.Scheme
	out.URL.Host = ep.BaseURL.Host
	out.URL.Path = ep.BaseURL.Path + req.URL.Path
	if req.URL.RawPath != "" {
		out.URL.RawPath = ep.BaseURL.Path + req.URL.RawPath
	}
	out.Host = ep.BaseURL.Host
	return pool.RoundTrip(out)
}

// roundTripDiscovered sends a request to a named peer found by server discovery.
func (t *routingTransport) roundTripDiscovered(req *http.Request, insecure bool) (*http.Response, error) {
	res, err := t.resolve(req.Context(), req.URL.Host, insecure)
	if err != nil {
		return nil, err
	}
	pool := t.discovered
	if insecure {
		pool = t.discoveredInsecure
	}
	ctx := context.WithValue(req.Context(), dialPolicyKey{}, dialPolicy{addr: res.addr, allowPrivate: res.allowPrivate || t.allowPrivate})
	out := req.Clone(ctx)
	out.URL.Scheme = "https"
	out.URL.Host = res.hostHeader
	out.Host = res.hostHeader
	return pool.RoundTrip(out)
}

// resolve runs Matrix server discovery for a named peer, caching the result. The .well-known
// lookup goes to the name the user wrote, so it may be private; what it or an SRV record
// delegates to is held to the network policy.
func (t *routingTransport) resolve(ctx context.Context, serverName string, insecure bool) (resolution, error) {
	now := time.Now()
	t.mu.Lock()
	res, ok := t.resolved[serverName]
	t.mu.Unlock()
	if ok && now.Before(res.expires) {
		return res, nil
	}
	hostname, _, ok := mfed.ParseServerName(serverName)
	if !ok {
		return resolution{}, fmt.Errorf("resolve %q: %w", serverName, mfed.ErrInvalidServerName)
	}
	wellKnownCtx := context.WithValue(ctx, dialPolicyKey{}, dialPolicy{allowPrivate: true})
	// Its own pool: its connection to the name's port 443 must not serve federation requests,
	// which go to the port discovery finds.
	pool := t.newTransport(insecure)
	defer pool.CloseIdleConnections()
	wellKnown := &http.Client{
		Transport: pool,
		Timeout:   DefaultDialTimeout * 2,
		// A redirect leads elsewhere than the name the user wrote: not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	found, err := mfed.ResolveServerName(wellKnownCtx, serverName, &mfed.ResolveServerNameOpts{HTTPClient: wellKnown})
	if err != nil {
		return resolution{}, fmt.Errorf("resolve %q: %w", serverName, err)
	}
	if len(found.IPPort) == 0 {
		return resolution{}, fmt.Errorf("resolve %q: no address", serverName)
	}
	addr := found.IPPort[0]
	target, _, _ := net.SplitHostPort(addr)
	res = resolution{
		hostHeader: found.HostHeader,
		addr:       addr,
		// Not delegated: an IP literal, a name with a port, or a name without .well-known or
		// SRV records, all dialled as the user wrote them.
		allowPrivate: found.HostHeader == serverName && strings.EqualFold(strings.Trim(target, "[]"), strings.Trim(hostname, "[]")),
		expires:      found.Expires,
	}
	t.mu.Lock()
	t.resolved[serverName] = res
	t.mu.Unlock()
	return res, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach every pool.
func (t *routingTransport) CloseIdleConnections() {
	for _, pool := range []*http.Transport{t.direct, t.insecure, t.discovered, t.discoveredInsecure} {
		pool.CloseIdleConnections()
	}
	switch d := t.discovery.(type) {
	case interface{ CloseIdleConnections() }:
		d.CloseIdleConnections()
	case *mfed.ServerResolvingTransport:
		d.Transport.CloseIdleConnections()
	}
}

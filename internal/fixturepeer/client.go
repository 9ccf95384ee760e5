package fixturepeer

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Transport is an http.RoundTripper for a mautrix federation.Client that sends
// "matrix-federation://<peer name>/…" requests straight to the peers' URLs (TLS verification
// off), and fails at once for any other server name. Like roomsync's own transport, it sets
// Content-Type: application/json on request bodies, which mautrix leaves out.
type Transport struct {
	// NoContentType leaves request bodies without a Content-Type, as mautrix sends them.
	NoContentType bool

	routes map[string]*url.URL
	base   *http.Transport
}

// NewTransport routes to the given peers by their server names.
func NewTransport(peers ...*Peer) *Transport {
	t := &Transport{
		routes: make(map[string]*url.URL, len(peers)),
		base: &http.Transport{
			TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test peers have self-signed certificates
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 8,
		},
	}
	for _, p := range peers {
		u, err := url.Parse(p.URL())
		if err != nil {
			panic(err) // httptest URLs parse
		}
		t.routes[p.ServerName()] = u
	}
	return t
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix-federation" {
		return nil, fmt.Errorf("fixturepeer: unsupported scheme %q", req.URL.Scheme)
	}
	u, ok := t.routes[req.URL.Host]
	if !ok {
		return nil, fmt.Errorf("fixturepeer: no route to server %q", req.URL.Host)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = u.Scheme
	out.URL.Host = u.Host
	out.Host = req.URL.Host
	if req.Body != nil && req.Body != http.NoBody && !t.NoContentType && out.Header.Get("Content-Type") == "" {
		out.Header.Set("Content-Type", "application/json")
	}
	return t.base.RoundTrip(out)
}

// CloseIdleConnections closes idle connections.
func (t *Transport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// NewClient returns a mautrix federation client that signs as serverName with key (nil: a new
// key) and reaches the peers through a Transport, loopback allowed.
func NewClient(serverName string, key *federation.SigningKey, peers ...*Peer) *federation.Client {
	if key == nil {
		key = federation.GenerateSigningKey()
	}
	c := federation.NewClient(serverName, key, nil, exhttp.ClientSettings{})
	c.AllowIP = func(net.IP) bool { return true }
	c.HTTP.Transport = NewTransport(peers...)
	return c
}

// Holder says whether it holds an event: a *Peer, an EventSet.
type Holder interface {
	Holds(eventID id.EventID) bool
}

// HeldBy returns the events of the peers' (first) rooms that at least one of them holds.
func HeldBy(peers ...*Peer) EventSet {
	s := make(EventSet)
	for _, p := range peers {
		for e := range p.HeldIDs() {
			s[e] = struct{}{}
		}
	}
	return s
}

// Closure walks prev_events back from the given events through the events that at least one
// holder holds. reached are those events; gaps are the events met (from included) that no
// holder holds: the backward extremities a complete sync ends with, unfillable.
func Closure(r *Room, from []id.EventID, holders ...Holder) (reached, gaps EventSet) {
	reached, gaps = make(EventSet), make(EventSet)
	held := func(e id.EventID) bool {
		for _, h := range holders {
			if h.Holds(e) {
				return true
			}
		}
		return false
	}
	queue := make([]id.EventID, 0, len(from))
	seen := make(EventSet)
	for _, e := range from {
		if !seen.Holds(e) {
			seen[e] = struct{}{}
			queue = append(queue, e)
		}
	}
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		ev := r.Get(e)
		if ev == nil || !held(e) {
			gaps[e] = struct{}{}
			continue
		}
		reached[e] = struct{}{}
		for _, p := range ev.Prev {
			if !seen.Holds(p) {
				seen[p] = struct{}{}
				queue = append(queue, p)
			}
		}
	}
	return reached, gaps
}

// Reachable is what a resolver can fetch from the peers (which serve the same room): the
// Closure from every peer's Heads (the forward extremities make_join reveals) through the
// events any of them holds, and the gaps it must leave.
func Reachable(peers ...*Peer) (reached, gaps EventSet) {
	if len(peers) == 0 {
		return EventSet{}, EventSet{}
	}
	var from []id.EventID
	holders := make([]Holder, len(peers))
	for i, p := range peers {
		from = append(from, p.Heads()...)
		holders[i] = p
	}
	return Closure(peers[0].Room(), from, holders...)
}

// Pusher returns a mautrix federation client that signs requests as the peer (its server
// name and key) and sends each, whatever server it names, over plain HTTP to addr: the peer
// pushing transactions or invites to a listener under test. tamper, when not nil, changes
// each request after it is signed.
func (p *Peer) Pusher(addr string, tamper func(*http.Request)) *federation.Client {
	c := federation.NewClient(p.name, p.key, nil, exhttp.ClientSettings{})
	c.AllowIP = func(net.IP) bool { return true }
	c.HTTP.Transport = pushTransport{addr: addr, tamper: tamper}
	return c
}

type pushTransport struct {
	addr   string
	tamper func(*http.Request)
}

func (t pushTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	// Host stays the destination the request was signed for.
	out.Host = req.URL.Host
	out.URL.Scheme, out.URL.Host = "http", t.addr
	if t.tamper != nil {
		t.tamper(out)
	}
	return http.DefaultTransport.RoundTrip(out)
}

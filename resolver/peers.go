package resolver

import (
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/roomsync/roomsync/resolver/federation"
)

// Back-off after failures: doubling from peerBackoffBase up to peerBackoffMax, with ±20%
// jitter so that peers backed off together do not return together.
const (
	peerBackoffBase = 2 * time.Second
	peerBackoffMax  = 5 * time.Minute
)

// PeerStatus is what the resolver knows of a peer's health.
type PeerStatus struct {
	ServerName string
	// Healthy is false while the peer, or one of its endpoints, is backed off.
	Healthy bool
	// ConsecutiveFailures counts failures since the last answer (of the worst endpoint).
	ConsecutiveFailures int
	BackoffUntil        time.Time
	LastError           string
	LastContact         time.Time
}

// PeerSet tracks the health of the peers and orders them for each request. Health is kept at
// two levels: a peer that cannot be reached (or rate-limits us) is backed off whole; a peer
// that answers one endpoint badly (5xx, a lying or oversized answer) is backed off for that
// endpoint only, so that its other answers neither hide nor reset that back-off. It is shared
// by every room of a sync, so a dead peer is learned about once; the resolver names each
// endpoint with its room (see pass.endpoint), so a bad answer about one room backs off that
// room's requests only.
type PeerSet struct {
	mu    sync.Mutex
	now   func() time.Time
	start time.Time
	peers []*peerHealth
	// recovered is the last time a peer that had failed to answer answered again.
	recovered time.Time
}

type peerHealth struct {
	name      string
	order     int
	failures  int       // unanswered requests in a row
	until     time.Time // backed off whole until then
	endpoints map[string]*endpointHealth
	lastErr   string
	contact   time.Time
	// unimplemented: endpoints (by bare name, for every room) the peer said it does not
	// implement, each with when to ask it again (see PeerSet.Unimplemented).
	unimplemented map[string]time.Time
}

type endpointHealth struct {
	failures int
	until    time.Time
}

// NewPeerSet tracks the named peers, in the user's order of preference.
func NewPeerSet(names []string) *PeerSet {
	s := &PeerSet{now: time.Now}
	s.start = s.now()
	for i, n := range names {
		s.peers = append(s.peers, &peerHealth{name: n, order: i, endpoints: map[string]*endpointHealth{}})
	}
	return s
}

// Available returns the peers to ask at endpoint now: neither the peer nor its endpoint is
// backed off. Fewest recent failures first, then the user's order.
func (s *PeerSet) Available(endpoint string) []string {
	return s.ready(func(p *peerHealth, now time.Time) bool {
		e := p.endpoints[endpoint]
		return e == nil || !now.Before(e.until)
	}, endpoint)
}

// Reachable returns the peers that are not backed off whole (any endpoint), in the order of
// Available: the notaries to ask for keys, and the peers a pass can talk to at all.
func (s *PeerSet) Reachable() []string {
	return s.ready(func(*peerHealth, time.Time) bool { return true }, "")
}

func (s *PeerSet) ready(endpointOK func(*peerHealth, time.Time) bool, endpoint string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var ready []*peerHealth
	for _, p := range s.peers {
		if !now.Before(p.until) && endpointOK(p, now) {
			ready = append(ready, p)
		}
	}
	failures := func(p *peerHealth) int {
		n := p.failures
		if e := p.endpoints[endpoint]; e != nil {
			n += e.failures
		}
		return n
	}
	sort.SliceStable(ready, func(i, j int) bool {
		if fi, fj := failures(ready[i]), failures(ready[j]); fi != fj {
			return fi < fj
		}
		return ready[i].order < ready[j].order
	})
	names := make([]string, len(ready))
	for i, p := range ready {
		names[i] = p.name
	}
	return names
}

// NextAvailable is when the first back-off (of a peer or of an endpoint) ends; zero when
// nothing is backed off.
func (s *PeerSet) NextAvailable() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var next time.Time
	consider := func(t time.Time) {
		if now.Before(t) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, p := range s.peers {
		consider(p.until)
		for _, e := range p.endpoints {
			consider(e.until)
		}
	}
	return next
}

// RetrySince is the time before which an attempt at a gap is stale: when this peer set
// started (a new run tries every gap once, whatever back-off an earlier one left), or when a
// peer last came back (what waited for it is due again).
func (s *PeerSet) RetrySince() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recovered.After(s.start) {
		return s.recovered
	}
	return s.start
}

// RetryAll ends every back-off and makes every gap due once, as at the start of a run: a user
// asked for a pass now.
func (s *PeerSet) RetryAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start = s.now()
	for _, p := range s.peers {
		p.until = time.Time{}
		for _, e := range p.endpoints {
			e.until = time.Time{}
		}
	}
}

// Record notes the outcome of a request to peer's endpoint. An answer, even "not found" or
// "forbidden", shows the peer is up; no answer backs the peer off whole, a bad answer only the
// endpoint, and a rate limit the peer for as long as it asked.
func (s *PeerSet) Record(peer, endpoint string, outcome federation.Outcome, retryAfter time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(peer)
	if p == nil || outcome == federation.OutcomeCanceled {
		return
	}
	now := s.now()
	if err != nil {
		p.lastErr = err.Error()
	}
	e := p.endpoints[endpoint]
	if e == nil {
		e = &endpointHealth{}
		p.endpoints[endpoint] = e
	}
	switch outcome {
	case federation.OutcomeUnreachable:
		// Counted for the endpoint too: a peer that answers make_join but drops every /event
		// must not have that back-off reset by its other answers.
		p.failures++
		p.until = now.Add(backoff(peerBackoffBase, peerBackoffMax, p.failures))
		e.failures++
		e.until = now.Add(backoff(peerBackoffBase, peerBackoffMax, e.failures))
		return
	case federation.OutcomeRateLimited:
		p.contact = now
		p.failures++
		p.until = now.Add(max(retryAfter, backoff(peerBackoffBase, peerBackoffMax, 1)))
		return
	}
	// The peer answered.
	p.contact = now
	if p.failures > 0 {
		s.recovered = now
	}
	p.failures, p.until = 0, time.Time{}
	switch outcome {
	case federation.OutcomeOK, federation.OutcomeNotFound, federation.OutcomeForbidden, federation.OutcomeBadRequest:
		e.failures, e.until = 0, time.Time{}
		if outcome == federation.OutcomeOK && !p.anyEndpointFailing() {
			p.lastErr = ""
		}
	default:
		e.failures++
		e.until = now.Add(backoff(peerBackoffBase, peerBackoffMax, e.failures))
	}
}

// Status returns every peer's state, in the user's order.
func (s *PeerSet) Status() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]PeerStatus, len(s.peers))
	for i, p := range s.peers {
		st := PeerStatus{
			ServerName:          p.name,
			Healthy:             !now.Before(p.until),
			ConsecutiveFailures: p.failures,
			BackoffUntil:        p.until,
			LastError:           p.lastErr,
			LastContact:         p.contact,
		}
		for _, e := range p.endpoints {
			if now.Before(e.until) {
				st.Healthy = false
				if e.until.After(st.BackoffUntil) {
					st.BackoffUntil = e.until
				}
			}
			st.ConsecutiveFailures = max(st.ConsecutiveFailures, e.failures)
		}
		out[i] = st
	}
	return out
}

func (p *peerHealth) anyEndpointFailing() bool {
	for _, e := range p.endpoints {
		if e.failures > 0 {
			return true
		}
	}
	return false
}

func (s *PeerSet) find(name string) *peerHealth {
	for _, p := range s.peers {
		if p.name == name {
			return p
		}
	}
	return nil
}

// backoff is base·2^(attempt−1), capped, with ±20% jitter.
func backoff(base, maxDelay time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	spread := d / 5
	return d - spread + time.Duration(rand.Int64N(int64(2*spread)+1))
}

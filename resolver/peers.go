package resolver

import (
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/roomsync/roomsync/resolver/federation"
)

// Back-off of a peer after failures: doubling from peerBackoffBase up to peerBackoffMax,
// with ±20% jitter so that peers backed off together do not return together.
const (
	peerBackoffBase = 2 * time.Second
	peerBackoffMax  = 5 * time.Minute
)

// PeerStatus is what the resolver knows of a peer's health.
type PeerStatus struct {
	ServerName string
	// Healthy is false while the peer is backed off.
	Healthy bool
	// ConsecutiveFailures counts failures since the last answer.
	ConsecutiveFailures int
	BackoffUntil        time.Time
	LastError           string
	LastContact         time.Time
}

// PeerSet tracks the health of the peers and orders them for each request: peers that answer
// first, in the order the user gave, then peers still backed off are skipped. It is shared by
// every room of a sync so a dead peer is learned about once.
type PeerSet struct {
	mu    sync.Mutex
	now   func() time.Time
	peers []*peerHealth
}

type peerHealth struct {
	name     string
	order    int
	failures int
	until    time.Time
	lastErr  string
	contact  time.Time
}

// NewPeerSet tracks the named peers, in the user's order of preference.
func NewPeerSet(names []string) *PeerSet {
	s := &PeerSet{now: time.Now}
	for i, n := range names {
		s.peers = append(s.peers, &peerHealth{name: n, order: i})
	}
	return s
}

// Available returns the peers that are not backed off, fewest recent failures first, then in
// the user's order.
func (s *PeerSet) Available() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var ready []*peerHealth
	for _, p := range s.peers {
		if !now.Before(p.until) {
			ready = append(ready, p)
		}
	}
	sort.SliceStable(ready, func(i, j int) bool {
		if ready[i].failures != ready[j].failures {
			return ready[i].failures < ready[j].failures
		}
		return ready[i].order < ready[j].order
	})
	names := make([]string, len(ready))
	for i, p := range ready {
		names[i] = p.name
	}
	return names
}

// NextAvailable is when the first backed-off peer becomes available again (zero if one is
// available now).
func (s *PeerSet) NextAvailable() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var next time.Time
	for _, p := range s.peers {
		if !now.Before(p.until) {
			return time.Time{}
		}
		if next.IsZero() || p.until.Before(next) {
			next = p.until
		}
	}
	return next
}

// Record notes the outcome of a request to peer. An answer, even "not found" or "forbidden",
// shows the peer is up; failures to answer back it off, a rate limit for as long as it asked.
func (s *PeerSet) Record(peer string, outcome federation.Outcome, retryAfter time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(peer)
	if p == nil {
		return
	}
	now := s.now()
	switch outcome {
	case federation.OutcomeCanceled:
		return
	case federation.OutcomeOK, federation.OutcomeNotFound, federation.OutcomeForbidden, federation.OutcomeBadRequest:
		p.contact = now
		p.failures = 0
		p.until = time.Time{}
		if outcome == federation.OutcomeOK {
			p.lastErr = ""
		} else if err != nil {
			p.lastErr = err.Error()
		}
		return
	case federation.OutcomeRateLimited:
		p.contact = now
		p.failures++
		p.until = now.Add(max(retryAfter, backoff(peerBackoffBase, peerBackoffMax, 1)))
	default:
		p.failures++
		p.until = now.Add(backoff(peerBackoffBase, peerBackoffMax, p.failures))
	}
	if err != nil {
		p.lastErr = err.Error()
	}
}

// Status returns every peer's state, in the user's order.
func (s *PeerSet) Status() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]PeerStatus, len(s.peers))
	for i, p := range s.peers {
		out[i] = PeerStatus{
			ServerName:          p.name,
			Healthy:             !now.Before(p.until),
			ConsecutiveFailures: p.failures,
			BackoffUntil:        p.until,
			LastError:           p.lastErr,
			LastContact:         p.contact,
		}
	}
	return out
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

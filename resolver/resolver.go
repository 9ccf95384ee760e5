// Package resolver is roomsync's engine: for each room it finds the holes in the stored event
// DAG (peer heads not held, prev events referenced but missing) and fills them with signed
// federation pulls, verifying every event before the store takes it. It imports no
// Kubernetes package: `roomsync sync` and the operator run the same code.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// Limits bound the requests and the work of one pass over a room.
type Limits struct {
	// BackfillLimit is the `limit` of each /backfill (servers cap it at 100).
	BackfillLimit int
	// MissingEventsLimit is the `limit` of each /get_missing_events (Synapse caps it at 20).
	MissingEventsLimit int
	// MaxEventsPerPass stops a pass once it stored this many events, so one large room
	// cannot starve the others; the next pass goes on from the extremities.
	MaxEventsPerPass int
	// BackfillExtremities is how many backward extremities one /backfill names in `v`.
	BackfillExtremities int
}

// DefaultLimits are the RoomSync API's defaults.
func DefaultLimits() Limits {
	return Limits{BackfillLimit: 100, MissingEventsLimit: 50, MaxEventsPerPass: 10000, BackfillExtremities: 5}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.BackfillLimit <= 0 {
		l.BackfillLimit = d.BackfillLimit
	}
	if l.MissingEventsLimit <= 0 {
		l.MissingEventsLimit = d.MissingEventsLimit
	}
	if l.MaxEventsPerPass <= 0 {
		l.MaxEventsPerPass = d.MaxEventsPerPass
	}
	if l.BackfillExtremities <= 0 {
		l.BackfillExtremities = d.BackfillExtremities
	}
	return l
}

// History bounds how far back a room is replicated. The zero value is the full history.
// With both bounds set, the nearer one stops the backfill.
type History struct {
	// MinDepth is the lowest depth to fetch; 0 fetches down to m.room.create.
	MinDepth int64
	// Since is the oldest time to fetch: a gap whose known children were all sent before it
	// is left alone. Zero fetches down to m.room.create.
	Since time.Time
}

// BackwardFilter selects the backward extremities within the bound.
func (h History) BackwardFilter() store.BackwardFilter {
	var f store.BackwardFilter
	if h.MinDepth > 0 {
		// A missing prev sits below its children, so only extremities with a child above
		// MinDepth can hide events at MinDepth or above.
		f.ChildDepthAtLeast = h.MinDepth + 1
	}
	if !h.Since.IsZero() {
		f.ChildTSAtLeast = h.Since.UnixMilli()
	}
	return f
}

// leadsBelow says whether the prevs of an event at depth, sent at ts (Unix milliseconds), are
// within the history bound: the test BackwardFilter applies to a held child.
func (h History) leadsBelow(depth, ts int64) bool {
	return (h.MinDepth <= 0 || depth >= h.MinDepth+1) && (h.Since.IsZero() || ts >= h.Since.UnixMilli())
}

// Observer hears about requests and events, for metrics and progress. Methods must be cheap
// and safe for concurrent use.
type Observer interface {
	Request(peer, endpoint string, outcome federation.Outcome, took time.Duration)
	Stored(roomID string, events int)
	Rejected(roomID string, reason RejectReason, count int)
}

type nopObserver struct{}

func (nopObserver) Request(string, string, federation.Outcome, time.Duration) {}
func (nopObserver) Stored(string, int)                                        {}
func (nopObserver) Rejected(string, RejectReason, int)                        {}

// Config holds what a Resolver works with.
type Config struct {
	Store  store.Store
	Client *federation.Client
	// Keys fetches origin servers' verify keys (federation.KeyRing.Key).
	Keys  KeyFunc
	Peers *PeerSet
	// JoinUserID is our user in make_join requests (which also find a peer's heads and the
	// room version without joining) and in joins: a user of ServerName.
	JoinUserID string
	// Join is the membership policy (JoinNever when empty).
	Join JoinPolicy
	// ServerName and SigningKey sign our join events.
	ServerName string
	SigningKey *mfed.SigningKey
	Limits     Limits
	// NoState skips the room state and the authorization rules: events are stored as
	// verified (IDs, hashes, signatures) and nothing more. For measuring what state costs.
	NoState  bool
	Observer Observer
	Log      logr.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// VerifyWorkers verifies PDUs in parallel (GOMAXPROCS when 0).
	VerifyWorkers int
}

// Resolver syncs rooms. It is safe for concurrent use by several rooms.
type Resolver struct {
	cfg Config

	// redacted is, per room, how far the redacted copies were fetched again after a join.
	mu       sync.Mutex
	redacted map[string]redactedProgress

	// rooms are the rooms replicated here, whose pushed PDUs Receive takes (see SetRooms).
	roomsMu sync.RWMutex
	rooms   map[string]bool

	// states keeps, per room, what the state computation built (see state.go).
	statesMu sync.Mutex
	states   map[string]*roomStates
	// stateUses counts uses of states, to order them (under statesMu); cachedEntries is
	// what their caches hold together (statecache.go).
	stateUses     uint64
	cachedEntries atomic.Int64
}

type redactedProgress struct {
	after *store.Position
	done  bool
}

func (r *Resolver) redactedCursor(roomID string) *store.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.redacted[roomID].after
}

func (r *Resolver) redactedDone(roomID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.redacted[roomID].done
}

func (r *Resolver) setRedactedCursor(roomID string, after *store.Position, done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.redacted == nil {
		r.redacted = map[string]redactedProgress{}
	}
	r.redacted[roomID] = redactedProgress{after: after, done: done}
}

// New checks the configuration and builds a Resolver.
func New(cfg Config) (*Resolver, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("resolver: no store")
	case cfg.Client == nil:
		return nil, errors.New("resolver: no federation client")
	case cfg.Keys == nil:
		return nil, errors.New("resolver: no key source")
	case cfg.Peers == nil:
		return nil, errors.New("resolver: no peers")
	case cfg.JoinUserID == "":
		return nil, errors.New("resolver: no user ID for make_join")
	case cfg.Join != "" && cfg.Join != JoinNever && (cfg.ServerName == "" || cfg.SigningKey == nil):
		return nil, errors.New("resolver: joining needs our server name and signing key")
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.VerifyWorkers <= 0 {
		cfg.VerifyWorkers = runtime.GOMAXPROCS(0)
	}
	return &Resolver{cfg: cfg}, nil
}

// Peers exposes the peer health the resolver keeps.
func (r *Resolver) Peers() *PeerSet { return r.cfg.Peers }

// RoomResult is the outcome of one pass over a room.
type RoomResult struct {
	RoomID      string
	RoomVersion string
	// Stored counts events new to the store (or upgraded from redacted) in this pass.
	Stored int
	// Rejected counts the PDUs refused in this pass, by reason.
	Rejected map[RejectReason]int
	// Requests counts the federation requests of this pass.
	Requests int
	// Room is the store's view of the room after the pass.
	Room store.Room
	// UnknownHeads are peer heads still not stored after the pass.
	UnknownHeads []string
	// Gaps is the number of backward extremities within the history bound.
	Gaps int
	// Membership is our user's membership of the room: MembershipJoined,
	// MembershipJoinFailed, MembershipLeft or MembershipNotJoined.
	Membership string
	// MembershipReason says why a join failed, or what refused us as a non-member.
	MembershipReason string
	// Unfillable is how many of those every peer answered for and none could fill at the
	// last attempt.
	Unfillable int
	// WaitingFor says what the other gaps wait for: peers that did not answer ("peer a.example
	// (unreachable)"), signing keys that could not be fetched ("the signing key of a.example").
	WaitingFor []string
	// Converged: every peer head is stored and no gap remains within the history bound.
	Converged bool
	// BudgetExhausted: the pass stopped at MaxEventsPerPass with work left.
	BudgetExhausted bool
	// StateFrom says whose word the state at the start of a bounded history is: the peers
	// that answered /state_ids, and at which events.
	StateFrom []string
	// PeersAnswered counts the peers that told us their heads.
	PeersAnswered int
	// Err is the last error of the pass that did not stop it (a peer failing, say).
	Err error
}

// SyncRooms runs one pass over each room, at most concurrency at once, and returns the
// results in the order of rooms.
func (r *Resolver) SyncRooms(ctx context.Context, rooms []string, hist History, concurrency int) []RoomResult {
	results := make([]RoomResult, len(rooms))
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	for i, room := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = RoomResult{RoomID: room, Err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			res, err := r.SyncRoom(ctx, room, hist)
			if err != nil {
				res.Err = err
			}
			results[i] = res
		}()
	}
	wg.Wait()
	return results
}

// SyncRoom runs one bounded pass over a room: find the peers' heads, fetch the unknown ones,
// close the forward gap with /get_missing_events, then backfill the backward extremities
// until none is due, the history bound is reached or the pass's budget is spent. It returns
// an error only when the pass could not work at all (no room version, the store failing);
// peer failures are in the result.
func (r *Resolver) SyncRoom(ctx context.Context, roomID string, hist History) (RoomResult, error) {
	p := r.newPass(roomID, hist)
	err := p.run(ctx)
	if err != nil {
		err = fmt.Errorf("sync room %s: %w", roomID, err)
	}
	return p.res, err
}

func (r *Resolver) newPass(roomID string, hist History) *pass {
	p := &pass{r: r, roomID: roomID, hist: hist, budget: r.cfg.Limits.MaxEventsPerPass, keyWaits: map[string]string{},
		log: r.cfg.Log.WithValues("room", roomID),
		res: RoomResult{RoomID: roomID, Rejected: map[RejectReason]int{}}}
	p.maxRequests = max(100, p.budget*maxRequestsPerEvent)
	return p
}

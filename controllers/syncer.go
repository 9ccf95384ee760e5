package controllers

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	mfed "maunium.net/go/mautrix/federation"
	"sigs.k8s.io/controller-runtime/pkg/event"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// Syncer runs resolver passes for RoomSyncs. All RoomSyncs share the event store and the
// operator's federation identity; each gets its own federation client and peer health,
// rebuilt when its spec changes, so one RoomSync's dead peer does not slow another's. Several
// RoomSyncs naming the same room write to the same store copy: the store's inserts are
// idempotent and serialised per room, so they never fight.
type Syncer struct {
	Store                store.Store
	ServerName           string
	Key                  *mfed.SigningKey
	AllowPrivateNetworks bool
	// InsecureSkipTLSVerify skips certificate checks for every peer, whatever its RoomSync
	// says.
	InsecureSkipTLSVerify bool
	// JoinUser is the localpart of our user where a RoomSync names none.
	JoinUser string
	// RoomConcurrency bounds the rooms of one RoomSync synced at once.
	RoomConcurrency int
	// PassTimeout bounds one pass over a RoomSync's rooms.
	PassTimeout time.Duration
	Metrics     *Metrics
	Log         logr.Logger

	mu       sync.Mutex
	sessions map[types.NamespacedName]*session
	// health is what the start-up check found (see StartStoreCheck); nil when none ran.
	health *storeHealth
	// wakes carries the RoomSyncs that live events call for (see Receive).
	wakes chan event.GenericEvent
}

// session is what a RoomSync's passes share while its spec does not change. The UID tells a
// RoomSync deleted and created again under the same name from the one before.
type session struct {
	uid        types.UID
	generation int64
	resolver   *resolver.Resolver
	// rooms are the spec's rooms: a room no session names any more is left.
	rooms []string
	// join is the spec's membership policy: an invite goes to a session that may join.
	join resolver.JoinPolicy
}

// resolverFor returns the RoomSync's resolver, building it for a new spec generation. Rooms
// the new spec drops, and no other RoomSync names, are left.
func (s *Syncer) resolverFor(ctx context.Context, obj *roomsyncv1alpha1.RoomSync) (*resolver.Resolver, error) {
	key := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.sessions[key]; ok && sess.generation == obj.Generation && sess.uid == obj.UID {
		return sess.resolver, nil
	}
	rooms := roomIDs(obj)
	if old, ok := s.sessions[key]; ok {
		delete(s.sessions, key)
		s.leaveUnnamedLocked(ctx, old, rooms)
		old.resolver.Close()
	}

	peers := make([]resolver.Peer, len(obj.Spec.Peers))
	for i, peer := range obj.Spec.Peers {
		peers[i] = resolver.Peer{
			ServerName:            peer.ServerName,
			URL:                   peer.URL,
			InsecureSkipTLSVerify: peer.InsecureSkipTLSVerify || s.InsecureSkipTLSVerify,
		}
	}
	var observer resolver.Observer
	if s.Metrics != nil {
		observer = s.Metrics.Observer()
	}
	join, joinUser := joinPolicyOf(obj.Spec.Membership), s.JoinUser
	if m := obj.Spec.Membership; m != nil && m.User != "" {
		joinUser = m.User
	}
	res, err := resolver.Open(resolver.Setup{
		Store:                s.Store,
		ServerName:           s.ServerName,
		Key:                  s.Key,
		Peers:                peers,
		AllowPrivateNetworks: s.AllowPrivateNetworks,
		JoinUser:             joinUser,
		Join:                 join,
		Limits:               limitsOf(obj.Spec.Limits),
		Observer:             observer,
		Log:                  s.Log.WithValues("roomsync", key.String()),
		UserAgent:            "roomsync-operator",
	})
	if err != nil {
		return nil, err
	}
	if s.sessions == nil {
		s.sessions = map[types.NamespacedName]*session{}
	}
	res.SetRooms(rooms)
	s.sessions[key] = &session{uid: obj.UID, generation: obj.Generation, resolver: res, rooms: rooms, join: join}
	return res, nil
}

// leaveTimeout bounds the leaves of one RoomSync's change or deletion.
const leaveTimeout = time.Minute

// leaveUnnamedLocked leaves, through sess's resolver, each of its rooms that neither keep nor
// any other session names. s.mu is held: leaving is rare, and a RoomSync naming the room
// again meanwhile must not race it.
func (s *Syncer) leaveUnnamedLocked(ctx context.Context, sess *session, keep []string) {
	named := map[string]bool{}
	for _, r := range keep {
		named[r] = true
	}
	for _, other := range s.sessions {
		for _, r := range other.rooms {
			named[r] = true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, leaveTimeout)
	defer cancel()
	for _, room := range sess.rooms {
		if named[room] {
			continue
		}
		if err := sess.resolver.Leave(ctx, room); err != nil {
			s.Log.Error(err, "Could not leave a room no RoomSync names any more", "room", room)
		}
	}
}

func roomIDs(obj *roomsyncv1alpha1.RoomSync) []string {
	ids := make([]string, len(obj.Spec.Rooms))
	for i, r := range obj.Spec.Rooms {
		ids[i] = r.ID
	}
	return ids
}

// Forget drops a deleted RoomSync's session and metrics, and leaves the rooms no other
// RoomSync names. Its events stay in the store.
func (s *Syncer) Forget(ctx context.Context, key types.NamespacedName) {
	s.mu.Lock()
	if sess, ok := s.sessions[key]; ok {
		delete(s.sessions, key)
		s.leaveUnnamedLocked(ctx, sess, nil)
		sess.resolver.Close()
	}
	s.mu.Unlock()
	if s.Metrics != nil {
		s.Metrics.forget(key.Namespace, key.Name)
	}
}

// hasSession reports whether a RoomSync has a live session.
func (s *Syncer) hasSession(key types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[key]
	return ok
}

// Sync runs one bounded pass over every room of the RoomSync. With retryNow (a new
// requestedAt) peers and gaps in back-off are asked again.
func (s *Syncer) Sync(ctx context.Context, obj *roomsyncv1alpha1.RoomSync, retryNow bool) ([]resolver.RoomResult, []resolver.PeerStatus, error) {
	res, err := s.resolverFor(ctx, obj)
	if err != nil {
		return nil, nil, err
	}
	if retryNow {
		res.Peers().RetryAll()
	}
	if s.PassTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.PassTimeout)
		defer cancel()
	}
	rooms := roomsBySyncAge(obj)
	results := res.SyncRooms(ctx, rooms, historyOf(obj.Spec.History), max(1, s.RoomConcurrency))
	return results, res.Peers().Status(), nil
}

// roomsBySyncAge lists the spec's rooms, those never synced or synced longest ago first: when
// a pass runs out of time, the next one starts with the rooms it did not reach.
func roomsBySyncAge(obj *roomsyncv1alpha1.RoomSync) []string {
	last := make(map[string]time.Time, len(obj.Status.Rooms))
	for _, st := range obj.Status.Rooms {
		if st.LastSyncTime != nil {
			last[st.ID] = st.LastSyncTime.Time
		}
	}
	rooms := roomIDs(obj)
	slices.SortStableFunc(rooms, func(a, b string) int { return last[a].Compare(last[b]) })
	return rooms
}

// joinPolicyOf maps spec.membership.join to the resolver's policy; IfNeeded is the default.
func joinPolicyOf(m *roomsyncv1alpha1.Membership) resolver.JoinPolicy {
	if m == nil {
		return resolver.JoinIfNeeded
	}
	switch m.Join {
	case roomsyncv1alpha1.JoinNever:
		return resolver.JoinNever
	case roomsyncv1alpha1.JoinAlways:
		return resolver.JoinAlways
	default:
		return resolver.JoinIfNeeded
	}
}

func limitsOf(l *roomsyncv1alpha1.SyncLimits) resolver.Limits {
	limits := resolver.DefaultLimits()
	if l == nil {
		return limits
	}
	if l.BackfillLimit > 0 {
		limits.BackfillLimit = int(l.BackfillLimit)
	}
	if l.MissingEventsLimit > 0 {
		limits.MissingEventsLimit = int(l.MissingEventsLimit)
	}
	if l.MaxEventsPerReconcile > 0 {
		limits.MaxEventsPerPass = int(l.MaxEventsPerReconcile)
	}
	return limits
}

func historyOf(h *roomsyncv1alpha1.History) resolver.History {
	if h == nil || h.Mode != roomsyncv1alpha1.HistoryBounded {
		return resolver.History{}
	}
	hist := resolver.History{}
	if h.MinDepth != nil {
		hist.MinDepth = *h.MinDepth
	}
	if h.Since != nil {
		hist.Since = h.Since.Time
	}
	return hist
}

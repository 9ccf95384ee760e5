package resolver

import (
	"context"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// Serving the replica: other servers recover a room's history from the store when its
// origin is gone, with the federation endpoints homeservers backfill with (see
// federation.HistorySource, which Replica implements). A request is answered only for a
// server the room's current state admits: one of its users is joined, and the room's server
// ACL allows it. Every other server gets 403, in Synapse's words ("Host not in room.", or
// "Server is banned from room." for the ACL), whether or not the store holds the room: a
// server outside a room learns nothing of what we hold.
// Rooms of versions 1 and 2, whose state is not computed here, admit nobody.

// Refusals of history requests, as Synapse words them.
var (
	errHostNotInRoom = mautrix.MForbidden.WithMessage("Host not in room.")
	errServerDenied  = mautrix.MForbidden.WithMessage("Server is banned from room.")
	errEventNotFound = mautrix.MNotFound.WithMessage("Event not found.")
)

// ReplicaConfig is what a Replica serves from.
type ReplicaConfig struct {
	Store store.Store
	Log   logr.Logger
}

// Replica answers other servers' requests for the history of the rooms in the store. It is
// safe for concurrent use; what it keeps in memory (room states, contents of state events)
// is bounded.
type Replica struct {
	st     store.Store
	log    logr.Logger
	groups *groupCache
	facts  *stateFacts
	chains *authCache

	mu    sync.Mutex
	rooms map[string]*roomView
}

// maxCachedRooms bounds the current room states a Replica keeps.
const maxCachedRooms = 1000

// NewReplica builds a Replica over a store.
func NewReplica(cfg ReplicaConfig) *Replica {
	groups := newGroupCache(cfg.Store)
	return &Replica{st: cfg.Store, log: cfg.Log, groups: groups, facts: newStateFacts(cfg.Store, groups),
		chains: newAuthCache(), rooms: map[string]*roomView{}}
}

// roomView is a room's current state as serving sees it: the state after its forward
// extremities (resolved when there are several), with what admission asks of it.
type roomView struct {
	id      string
	version id.RoomVersion
	// key names the state groups it was built from: the same key is the same state.
	key   string
	state stateres.StateMap
	acl   *ServerACL // nil: no m.room.server_acl

	mu      sync.Mutex
	members map[string]serverMembership // by server, as looked up
}

// admit returns the room's current view if origin may read its history, else the Matrix
// error refusing it.
func (r *Replica) admit(ctx context.Context, origin, roomID string) (*roomView, error) {
	view, err := r.current(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if view == nil {
		return nil, errHostNotInRoom
	}
	if view.acl != nil && !view.acl.Allows(origin) {
		return nil, errServerDenied
	}
	m, err := r.viewMembership(ctx, view, origin)
	if err != nil {
		return nil, err
	}
	if m != serverJoined {
		return nil, errHostNotInRoom
	}
	return view, nil
}

// maxMembersPerView bounds the servers whose membership a room view remembers.
const maxMembersPerView = 10_000

func (r *Replica) viewMembership(ctx context.Context, view *roomView, server string) (serverMembership, error) {
	view.mu.Lock()
	m, ok := view.members[server]
	view.mu.Unlock()
	if ok {
		return m, nil
	}
	m, err := r.facts.stateMembership(ctx, view.state, server)
	if err != nil {
		return serverAbsent, fmt.Errorf("membership of %s in %s: %w", server, view.id, err)
	}
	view.mu.Lock()
	defer view.mu.Unlock()
	if len(view.members) >= maxMembersPerView {
		clear(view.members)
	}
	view.members[server] = m
	return m, nil
}

// current returns the room's current view, nil when the store holds no state of the room
// (no such room, a room version whose state is not computed, or no event with state yet).
// It reads the forward extremities and their state groups, three indexed reads; the state
// itself is rebuilt, and resolved, only when those groups change.
func (r *Replica) current(ctx context.Context, roomID string) (*roomView, error) {
	room, err := r.st.Room(ctx, roomID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read room %s: %w", roomID, err)
	}
	if !stateSupported(room.Version) {
		return nil, nil
	}
	heads, err := r.st.ForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("read the forward extremities of %s: %w", roomID, err)
	}
	states, err := r.st.EventStates(ctx, heads)
	if err != nil {
		return nil, fmt.Errorf("read the state of the forward extremities of %s: %w", roomID, err)
	}
	var groups []int64
	var stateless []string
	for _, h := range heads {
		if s := states[h]; s.Before > 0 {
			if !slices.Contains(groups, s.After) {
				groups = append(groups, s.After)
			}
		} else {
			stateless = append(stateless, h)
		}
	}
	// Extremities without state (a live event past a hole) are left out while others have
	// one; when none has, the nearest states before them stand in.
	if len(groups) == 0 && len(stateless) > 0 {
		if groups, err = nearestStates(ctx, r.st, roomID, stateless); err != nil {
			return nil, fmt.Errorf("current state of %s: %w", roomID, err)
		}
	}
	if len(groups) == 0 {
		return nil, nil
	}
	slices.Sort(groups)
	key := fmt.Sprint(groups)

	r.mu.Lock()
	view := r.rooms[roomID]
	r.mu.Unlock()
	if view != nil && view.key == key {
		return view, nil
	}
	if view, err = r.buildView(ctx, roomID, id.RoomVersion(room.Version), key, groups); err != nil {
		return nil, fmt.Errorf("current state of %s: %w", roomID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rooms) >= maxCachedRooms {
		clear(r.rooms)
	}
	r.rooms[roomID] = view
	return view, nil
}

// buildView makes a room view from the states after the forward extremities: one state as
// it is, several resolved as the room version says. When resolution cannot run (an event of
// the states' auth chains is missing), the state of the highest-numbered group stands in:
// the last the store computed.
func (r *Replica) buildView(ctx context.Context, roomID string, version id.RoomVersion, key string, groups []int64) (*roomView, error) {
	states := make([]stateres.StateMap, len(groups))
	for i, g := range groups {
		s, err := r.groups.load(ctx, roomID, g)
		if err != nil {
			return nil, err
		}
		states[i] = s
	}
	state := states[len(states)-1]
	if len(states) > 1 {
		resolved, err := stateres.Resolve(ctx, version, states, storeLoader(r.st))
		switch {
		case errors.Is(err, stateres.ErrMissingEvent):
			r.log.V(1).Info("Serving from the newest state: the states of the forward extremities cannot be resolved", "room", roomID, "error", err.Error())
		case err != nil:
			return nil, err
		default:
			state = resolved
		}
	}
	view := &roomView{id: roomID, version: version, key: key, state: state, members: map[string]serverMembership{}}
	if aclID, ok := state[pdu.StateKey{Type: "m.room.server_acl"}]; ok {
		events, err := r.st.Events(ctx, []string{string(aclID)})
		if err != nil {
			return nil, fmt.Errorf("read the server ACL: %w", err)
		}
		if ev, ok := events[string(aclID)]; ok {
			acl := ParseServerACL([]byte(gjson.GetBytes(ev.Raw, "content").Raw))
			view.acl = &acl
		}
	}
	return view, nil
}

// storeLoader is a stateres.Loader over the store: the held events among ids, parsed, with
// their rejection.
func storeLoader(st store.Store) stateres.Loader {
	return func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
		strs := make([]string, len(ids))
		for i, evID := range ids {
			strs[i] = string(evID)
		}
		held, err := st.Events(ctx, strs)
		if err != nil {
			return nil, err
		}
		out := make([]*pdu.PDU, 0, len(held))
		for _, evID := range slices.Sorted(maps.Keys(held)) {
			ev := held[evID]
			var p pdu.PDU
			if err := jsonv2.Unmarshal(ev.Raw, &p); err != nil {
				return nil, fmt.Errorf("parse stored event %s: %w", evID, err)
			}
			p.InternalMeta.EventID = id.EventID(evID)
			p.InternalMeta.Rejected = ev.Rejected != ""
			out = append(out, &p)
		}
		return out, nil
	}
}

package fixturepeer

import (
	"fmt"
	"net/http"
	"slices"
	"sync"

	"maunium.net/go/mautrix/id"
)

// The room state at an event, served by /state_ids and /state.
//
// The state before an event E is, for each (type, state_key), the newest (highest Index)
// state event among E's ancestors that is not in Room.Unauthorized; the state after E adds E
// when it is an authorized state event. That is what state resolution gives for a generated
// room, and so what a real server answers: the generator changes state only where every
// branch has merged, so the state events among an event's ancestors are totally ordered and
// no conflict is ever left to resolve. Unauthorized events change nothing: a server rejects
// them, and a rejected event is never part of the state.
//
// Synapse's /state_ids answers the state before the event, Dendrite v0.13.8's the state
// after it (WithStateAfter).
//
// All room versions are served: event references differ in versions 1 and 2, but Event.Auth
// holds plain IDs in every version, and that is all the auth chain walk needs.

// WithStateAfter makes /state_ids and /state answer the state after the event (the event
// included when it is an authorized state event), as Dendrite v0.13.8 does. The default is
// the state before it, as Synapse.
func WithStateAfter() Option { return func(c *peerConfig) { c.stateAfter = true } }

type stateKey struct{ typ, stateKey string }

// stateSet is one room state. Most events change no state, so events share sets: a set is
// built only where the state changes (an authorized state event) or where branches whose
// states differ merge (never, in a generated room), so a room has about as many sets as
// authorized state events.
type stateSet struct {
	byKey  map[stateKey]int32
	events []int32 // byKey's values, in generation order

	chainOnce sync.Once
	chain     []int32
}

// roomStates are the state before and after every event of a room, by Index.
type roomStates struct {
	before, after []*stateSet
}

// with returns the set with event i in its (type, state_key).
func (s *stateSet) with(r *Room, i int32) *stateSet {
	e := r.Events[i]
	byKey := make(map[stateKey]int32, len(s.byKey)+1)
	for k, v := range s.byKey {
		byKey[k] = v
	}
	byKey[stateKey{e.Type, *e.StateKey}] = i
	return newStateSet(byKey)
}

// merge returns, for each (type, state_key) of s or o, the newer of their events: the state
// among the ancestors of both. It returns s or o itself when one already has it all, so that
// merging branches that changed no state builds nothing.
func (s *stateSet) merge(o *stateSet) *stateSet {
	var byKey map[stateKey]int32
	for k, v := range o.byKey {
		if cur, ok := s.byKey[k]; ok && cur >= v {
			continue
		}
		if byKey == nil {
			byKey = make(map[stateKey]int32, max(len(s.byKey), len(o.byKey)))
			for k2, v2 := range s.byKey {
				byKey[k2] = v2
			}
		}
		byKey[k] = v
	}
	if byKey == nil {
		return s // o adds nothing newer
	}
	if len(byKey) == len(o.byKey) {
		same := true
		for k, v := range byKey {
			if o.byKey[k] != v {
				same = false
				break
			}
		}
		if same {
			return o
		}
	}
	return newStateSet(byKey)
}

func newStateSet(byKey map[stateKey]int32) *stateSet {
	s := &stateSet{byKey: byKey, events: make([]int32, 0, len(byKey))}
	for _, i := range byKey {
		s.events = append(s.events, i)
	}
	slices.Sort(s.events)
	return s
}

// authChain is every event reachable from the set's events through auth_events, in one step
// or more, in generation order. As Synapse's, it may hold state events too (the create event,
// the power levels: other state events name them) and superseded ones (a member event a
// rename replaced): it is closed under auth_events, whatever the set holds.
func (s *stateSet) authChain(r *Room) []int32 {
	s.chainOnce.Do(func() {
		seen := make(map[int32]bool)
		queue := slices.Clone(s.events)
		for len(queue) > 0 {
			i := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			for _, a := range r.Events[i].Auth {
				// Generated events only name events of their own room as auth events.
				if j, ok := r.byID[a]; ok && !seen[j] {
					seen[j] = true
					s.chain = append(s.chain, j)
					queue = append(queue, j)
				}
			}
		}
		slices.Sort(s.chain)
	})
	return s.chain
}

// states computes the state before and after every event once, on first use, in one pass in
// generation order (which is topological: an event's prev_events come before it). The state
// before an event merges the states after its prev_events, which is the state among all its
// ancestors, since the newest event of a key among a union of ancestor sets is the newest
// among the newest of each.
func (r *Room) states() *roomStates {
	r.stateOnce.Do(func() {
		n := len(r.Events)
		s := &roomStates{before: make([]*stateSet, n), after: make([]*stateSet, n)}
		empty := newStateSet(map[stateKey]int32{})
		for i, e := range r.Events {
			b := empty
			for k, p := range r.prev[i] {
				if k == 0 {
					b = s.after[p]
				} else if s.after[p] != b {
					b = b.merge(s.after[p])
				}
			}
			s.before[i] = b
			s.after[i] = b
			if _, rejected := r.Unauthorized[e.ID]; e.StateKey != nil && !rejected {
				s.after[i] = b.with(r, int32(i))
			}
		}
		r.stateMemo = s
	})
	return r.stateMemo
}

// StateBefore returns the room state before the event (what Synapse's /state_ids answers)
// and its auth chain, both in generation order; nil for an event not in the room. The state
// is, for each (type, state_key), the newest state event among the event's ancestors that is
// not in Room.Unauthorized; the auth chain is every event the state's auth_events reach.
func (r *Room) StateBefore(eventID id.EventID) (state, authChain []id.EventID) {
	i, ok := r.byID[eventID]
	if !ok {
		return nil, nil
	}
	set := r.states().before[i]
	return r.ids(set.events), r.ids(set.authChain(r))
}

// StateAfter returns the room state after the event (what Dendrite v0.13.8's /state_ids
// answers): the state before it, with the event itself when it is a state event not in
// Room.Unauthorized, and its auth chain; nil for an event not in the room.
func (r *Room) StateAfter(eventID id.EventID) (state, authChain []id.EventID) {
	i, ok := r.byID[eventID]
	if !ok {
		return nil, nil
	}
	set := r.states().after[i]
	return r.ids(set.events), r.ids(set.authChain(r))
}

// stateAt finds the state a /state_ids or /state request asks for. Refusals are those of
// the history endpoints (members-only 403, unknown room 404), then 404 M_NOT_FOUND for a
// missing event_id (Synapse answers 400 M_MISSING_PARAM at /state_ids; a resolver always
// sends one, so tests lose nothing) or an event the peer does not hold in that room.
//
// The state is the room's as the DAG defines it, whether or not the peer holds the state
// events themselves: a server that holds an event knows the state at it even when it lacks
// the older history (it was given the state when it joined).
func (p *Peer) stateAt(req *http.Request) (*Room, *stateSet, int, any) {
	r, hs, status, refusal := p.historyRoom(req)
	if refusal != nil {
		return nil, nil, status, refusal
	}
	eventID := id.EventID(req.URL.Query().Get("event_id"))
	if eventID == "" {
		status, body := errBody(http.StatusNotFound, "M_NOT_FOUND", "Missing event_id parameter")
		return nil, nil, status, body
	}
	i, ok := hs.has(eventID)
	if !ok {
		status, body := errBody(http.StatusNotFound, "M_NOT_FOUND", fmt.Sprintf("Could not find event %s in room %s", eventID, r.ID))
		return nil, nil, status, body
	}
	if p.stateAfter {
		return r, r.states().after[i], 0, nil
	}
	return r, r.states().before[i], 0, nil
}

// stateIDs serves GET /_matrix/federation/v1/state_ids/{roomId}?event_id=E.
func (p *Peer) stateIDs(req *http.Request, _ []lieState) (int, any) {
	r, set, status, refusal := p.stateAt(req)
	if refusal != nil {
		return status, refusal
	}
	return http.StatusOK, map[string]any{"pdu_ids": r.ids(set.events), "auth_chain_ids": r.ids(set.authChain(r))}
}

// state serves GET /_matrix/federation/v1/state/{roomId}?event_id=E: the events of
// /state_ids, rendered as the other endpoints render events, lies applied.
func (p *Peer) state(req *http.Request, lies []lieState) (int, any) {
	r, set, status, refusal := p.stateAt(req)
	if refusal != nil {
		return status, refusal
	}
	pdus, err := p.renderAll(EndpointState, r, set.events, lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", fmt.Sprintf("render state: %v", err))
	}
	chain, err := p.renderAll(EndpointState, r, set.authChain(r), lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", fmt.Sprintf("render auth chain: %v", err))
	}
	return http.StatusOK, map[string]any{"pdus": pdus, "auth_chain": chain}
}

// Package stateres merges the room states of several branches of a Matrix room's event graph
// into one, with the state resolution algorithm of the room's version: version 2 for room
// versions 2 to 11, version 2.1 (MSC4297) for room version 12.
//
// State resolution version 1 (room version 1) is not implemented: Resolve refuses that room
// version with ErrUnsupportedVersion.
//
// Authorization itself is mautrix-go's eventauth.Authorize; this package decides which events
// are checked, in which order, and against which state.
package stateres

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// StateMap is a room state: (type, state_key) → event ID.
type StateMap map[pdu.StateKey]id.EventID

// Loader returns the events with the given IDs, each with InternalMeta.EventID set and
// InternalMeta.Rejected set for events rejected by the authorization rules. An ID it does not
// know is left out of the result (Resolve then fails with an error wrapping ErrMissingEvent).
type Loader func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error)

var (
	// ErrUnsupportedVersion is returned for room version 1 (state resolution v1 is not
	// implemented) and for room versions mautrix-go does not know.
	ErrUnsupportedVersion = errors.New("stateres: unsupported room version")
	// ErrMissingEvent is returned when an event of a state, or of the auth chain of one, is
	// not known to the Loader: without the whole auth chains the result would be a guess.
	ErrMissingEvent = errors.New("stateres: missing event")
)

// Resolve returns the state that results from merging states (the states after each prev event
// of the event whose state-before we want), for a room of the given version.
//
// One state, or states that are all equal, resolve to themselves without loading anything.
// Otherwise an event rejected by the authorization rules (InternalMeta.Rejected) is never part
// of the result, not even when every state holds it.
func Resolve(ctx context.Context, version id.RoomVersion, states []StateMap, load Loader) (StateMap, error) {
	if !version.IsKnown() || version.StateResVersion() == id.StateResV1 {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedVersion, version)
	}
	if len(states) == 0 {
		return StateMap{}, nil
	}
	if allEqual(states) {
		out := make(StateMap, len(states[0]))
		maps.Copy(out, states[0])
		return out, nil
	}
	r := &resolver{ctx: ctx, version: version, load: load, events: map[id.EventID]*pdu.PDU{}}
	return r.resolve(states)
}

func allEqual(states []StateMap) bool {
	for _, s := range states[1:] {
		if !maps.Equal(s, states[0]) {
			return false
		}
	}
	return true
}

// eventSet is a set of event IDs.
type eventSet map[id.EventID]struct{}

func (s eventSet) add(evID id.EventID) { s[evID] = struct{}{} }

func (s eventSet) has(evID id.EventID) bool {
	_, ok := s[evID]
	return ok
}

// separate splits the states into the unconflicted state map (the keys every state has, with
// the same event) and the conflicted state set (every event of the other keys).
func separate(states []StateMap) (StateMap, eventSet) {
	unconflicted, conflicted := StateMap{}, eventSet{}
	for _, s := range states {
		for key := range s {
			if _, done := unconflicted[key]; done {
				continue
			}
			if evID, same := agreed(states, key); same {
				unconflicted[key] = evID
				continue
			}
			for _, other := range states {
				if evID, ok := other[key]; ok {
					conflicted.add(evID)
				}
			}
		}
	}
	return unconflicted, conflicted
}

// agreed reports whether every state has the same event for key. A state without the key
// disagrees: a key missing on one branch is as conflicted as a key set differently.
func agreed(states []StateMap, key pdu.StateKey) (id.EventID, bool) {
	first, ok := states[0][key]
	if !ok {
		return "", false
	}
	for _, s := range states[1:] {
		if s[key] != first {
			return "", false
		}
	}
	return first, true
}

func stateKeyOf(evt *pdu.PDU) pdu.StateKey {
	return pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}
}

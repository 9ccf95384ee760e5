package stateres

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// resolver holds what one Resolve call needs: the events it loaded so far, so that no event is
// asked of the Loader twice.
type resolver struct {
	ctx     context.Context
	version id.RoomVersion
	load    Loader
	events  map[id.EventID]*pdu.PDU
	// loadErr is the first Loader failure seen by eventauth.Authorize's getEvents: Authorize
	// would report it as a rule failure, but an event must not lose because a database hiccuped.
	loadErr error
}

var powerLevelsKey = pdu.StateKey{Type: event.StatePowerLevels.Type}

// resolve follows the five steps of the spec's algorithm (room versions 2 to 12).
func (r *resolver) resolve(states []StateMap) (StateMap, error) {
	unconflicted, conflicted := separate(states)

	// The auth difference needs the full auth chain of every event of every state, unconflicted
	// ones included: an event in their chains is in every state's chain, so it is not part of
	// the difference even when only one branch's conflicted events point at it.
	var all []id.EventID
	for _, s := range states {
		all = slices.AppendSeq(all, maps.Values(s))
	}
	if err := r.loadAuthChains(all); err != nil {
		return nil, err
	}
	// A rejected event stays out of the result even when every branch holds it, and out of
	// the replay's starting state, where it would vouch for other events.
	for key, evID := range unconflicted {
		if r.events[evID].InternalMeta.Rejected {
			delete(unconflicted, key)
		}
	}

	full := r.authDifference(states)
	maps.Copy(full, conflicted)
	if r.version.StateResVersion() == id.StateResV2_1 {
		// MSC4297: a branch whose state holds an old event (e.g. from a partial /state) would
		// otherwise replay it without the events between it and the other branch's newer one.
		maps.Copy(full, r.conflictedSubgraph(conflicted))
	}

	// Step 1: the power events, with what they need from the full conflicted set, oldest first.
	powerSet := eventSet{}
	for evID := range full {
		if isPowerEvent(r.events[evID]) {
			powerSet.add(evID)
		}
	}
	for evID := range r.authChain(slices.Collect(maps.Keys(powerSet))) {
		if full.has(evID) {
			powerSet.add(evID)
		}
	}
	powerOrder, err := r.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}

	// Step 2. Version 2.1 starts from nothing, so each power event is checked against its own
	// auth events (where no earlier power event replaced them) instead of an unconflicted
	// state that may not be the one its branch saw (MSC4297, problem A).
	partial := StateMap{}
	if r.version.StateResVersion() == id.StateResV2 {
		maps.Copy(partial, unconflicted)
	}
	if err := r.iterativeAuthChecks(powerOrder, partial); err != nil {
		return nil, err
	}

	// Steps 3 and 4: the other events, ordered by how recent the power levels they were
	// authorized by are in the history of the power levels step 2 settled on.
	var others []id.EventID
	for evID := range full {
		if !powerSet.has(evID) {
			others = append(others, evID)
		}
	}
	r.sortByMainline(others, partial[powerLevelsKey])
	if err := r.iterativeAuthChecks(others, partial); err != nil {
		return nil, err
	}

	// Step 5: what every branch agrees on stands, whatever the replay did to it.
	maps.Copy(partial, unconflicted)
	return partial, nil
}

// isPowerEvent reports whether evt may take a right away from someone: those are replayed
// first, in auth order, so that a revocation applies before what it revokes.
func isPowerEvent(evt *pdu.PDU) bool {
	if evt.StateKey == nil {
		return false
	}
	switch evt.Type {
	case event.StatePowerLevels.Type, event.StateJoinRules.Type:
		return *evt.StateKey == ""
	case event.StateMember.Type:
		membership := event.Membership(gjson.GetBytes(evt.Content, "membership").Str)
		return (membership == event.MembershipLeave || membership == event.MembershipBan) &&
			*evt.StateKey != evt.Sender.String()
	}
	return false
}

// loadAuthChains loads the given events and everything their auth_events lead to, one Loader
// call per generation of the walk rather than one per event.
func (r *resolver) loadAuthChains(ids []id.EventID) error {
	walked := eventSet{}
	for frontier := ids; len(frontier) > 0; {
		if err := r.require(frontier); err != nil {
			return err
		}
		var next []id.EventID
		for _, evID := range frontier {
			if walked.has(evID) {
				continue
			}
			walked.add(evID)
			for _, authID := range r.events[evID].AuthEvents {
				if !walked.has(authID) {
					next = append(next, authID)
				}
			}
		}
		frontier = next
	}
	return nil
}

// require loads the given events that are not loaded yet; an event the Loader does not know
// is an error.
func (r *resolver) require(ids []id.EventID) error {
	unknown, err := r.fetch(ids)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingEvent, unknown[0])
	}
	return nil
}

// fetch loads the given events that are not loaded yet and returns those the Loader did not
// know.
func (r *resolver) fetch(ids []id.EventID) (unknown []id.EventID, err error) {
	want := eventSet{}
	var missing []id.EventID
	for _, evID := range ids {
		if _, ok := r.events[evID]; !ok && !want.has(evID) {
			want.add(evID)
			missing = append(missing, evID)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	loaded, err := r.load(r.ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("stateres: loading events: %w", err)
	}
	for _, evt := range loaded {
		if evt != nil && want.has(evt.InternalMeta.EventID) {
			r.events[evt.InternalMeta.EventID] = evt
		}
	}
	for _, evID := range missing {
		if _, ok := r.events[evID]; !ok {
			unknown = append(unknown, evID)
		}
	}
	return unknown, nil
}

// authChain returns the auth chain of the given events: what their auth_events lead to, not
// the events themselves (unless one leads to another). The events must have been loaded with
// loadAuthChains.
func (r *resolver) authChain(ids []id.EventID) eventSet {
	chain := eventSet{}
	var stack []id.EventID
	for _, evID := range ids {
		stack = append(stack, r.events[evID].AuthEvents...)
	}
	for len(stack) > 0 {
		evID := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if chain.has(evID) {
			continue
		}
		chain.add(evID)
		stack = append(stack, r.events[evID].AuthEvents...)
	}
	return chain
}

// authDifference returns the events that are in the full auth chain of some states but not of
// all: what one branch saw that another did not, and so has to be replayed.
func (r *resolver) authDifference(states []StateMap) eventSet {
	seen := map[id.EventID]int{}
	for _, s := range states {
		for evID := range r.authChain(slices.Collect(maps.Values(s))) {
			seen[evID]++
		}
	}
	diff := eventSet{}
	for evID, n := range seen {
		if n < len(states) {
			diff.add(evID)
		}
	}
	return diff
}

// conflictedSubgraph returns the events on an auth_events path from one conflicted event to
// another (MSC4297). Those are the ancestors of a conflicted event that have a conflicted
// event among their own ancestors, or are one.
func (r *resolver) conflictedSubgraph(conflicted eventSet) eventSet {
	leadsToConflict := map[id.EventID]bool{}
	var leads func(evID id.EventID) bool
	leads = func(evID id.EventID) bool {
		if v, ok := leadsToConflict[evID]; ok {
			return v
		}
		v := conflicted.has(evID)
		for _, authID := range r.events[evID].AuthEvents {
			// No short-circuit: every ancestor gets memoized once, keeping the walk linear.
			v = leads(authID) || v
		}
		leadsToConflict[evID] = v
		return v
	}
	sub := eventSet{}
	for evID := range r.authChain(slices.Collect(maps.Keys(conflicted))) {
		if leads(evID) {
			sub.add(evID)
		}
	}
	return sub
}

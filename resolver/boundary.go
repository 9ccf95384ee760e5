package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// Where a bounded history begins, the oldest events held name prev events we will never
// fetch, so the state before them cannot be computed from the DAG: a peer says it instead.
// For each such missing prev, /state gives the state at it with the auth chain, verified and
// stored like any events, and the state after the missing event is recorded as a boundary
// state, with the peer whose word it is.
//
// Servers differ on what "the state at an event" is: Synapse answers the state before it,
// Dendrite the state after it. They agree unless the event is itself a state event; then the
// answer holding the event at its own key is the state after it, and an answer that does not
// is the state before it, to which the event is added.

const (
	// maxBoundaryStates bounds the boundary states one pass asks for.
	maxBoundaryStates = 10
	// maxAuthChainFetches bounds the auth chain events kept from one /state answer.
	maxAuthChainFetches = 500
	// boundaryScan bounds the events without state looked at to find the boundary.
	boundaryScan = 2000
)

// bounded says whether the pass keeps only part of the room's history.
func (h History) bounded() bool { return h.MinDepth > 0 || !h.Since.IsZero() }

// within says whether an event is within the history bound.
func (h History) within(ev store.Event) bool {
	return ev.Depth >= h.MinDepth && (h.Since.IsZero() || ev.OriginServerTS >= h.Since.UnixMilli())
}

// fetchBoundaryStates asks the peers for the state after each missing prev of the oldest
// events synced that has none yet.
func (p *pass) fetchBoundaryStates(ctx context.Context) error {
	if !p.hist.bounded() || p.r.cfg.NoState || !stateSupported(p.version) {
		return nil
	}
	st := p.r.cfg.Store
	known, err := st.BoundaryStates(ctx, p.roomID)
	if err != nil {
		return err
	}
	wanted, err := p.boundary(ctx, known)
	if err != nil {
		return err
	}
	for _, b := range wanted {
		if ctx.Err() != nil || p.requestsLeft() <= 0 {
			return ctx.Err()
		}
		if err := p.boundaryState(ctx, b); err != nil {
			p.log.Info("No peer gave the state at the start of the history", "event", b, "error", err.Error())
			p.stateWaiting = "the state at " + b + " from a peer (/state)"
		}
	}
	return nil
}

// boundary lists the missing prevs of the oldest events synced that have no state, and no
// boundary state yet.
func (p *pass) boundary(ctx context.Context, known map[string]store.BoundaryState) ([]string, error) {
	st := p.r.cfg.Store
	var out []string
	seen := map[string]bool{}
	var after *store.Position
	for scanned := 0; scanned < boundaryScan && len(out) < maxBoundaryStates; {
		page, err := st.EventsWithoutState(ctx, p.roomID, after, statePageSize)
		if err != nil || len(page) == 0 {
			return out, err
		}
		scanned += len(page)
		last := page[len(page)-1]
		after = &store.Position{Depth: last.Depth, EventID: last.ID}
		var prevs []string
		for _, ev := range page {
			// The bottom of the history synced, which a backfill page may take somewhat
			// below the bound. Old state events fetched for a boundary state have missing
			// prevs too, but asking the state at those would walk the history down.
			if ev.StateKey == nil || p.hist.within(ev) {
				prevs = append(prevs, ev.PrevEvents...)
			}
		}
		held, err := st.HasEvents(ctx, prevs)
		if err != nil {
			return nil, err
		}
		for _, prev := range prevs {
			if held[prev] || seen[prev] {
				continue
			}
			seen[prev] = true
			if _, ok := known[prev]; !ok && len(out) < maxBoundaryStates {
				out = append(out, prev)
			}
		}
	}
	return out, nil
}

type stateAnswer struct {
	state, authChain []json.RawMessage
}

// boundaryState gets the state after the missing event b from the first peer that gives it
// in full, and records it.
func (p *pass) boundaryState(ctx context.Context, b string) error {
	var failures []string
	for _, peer := range p.r.cfg.Peers.Available(p.endpoint("state")) {
		err := p.boundaryStateFrom(ctx, peer, b)
		if err == nil {
			return nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", peer, err))
	}
	return fmt.Errorf("state at %s: %v", b, failures)
}

func (p *pass) boundaryStateFrom(ctx context.Context, peer, b string) error {
	ans, err := ask(ctx, p, peer, "state", func(ctx context.Context) (stateAnswer, error) {
		state, chain, err := p.r.cfg.Client.State(ctx, peer, p.roomID, b)
		return stateAnswer{state, chain}, err
	})
	if err != nil {
		return err
	}
	// b itself, verified, says whether the answer is the state before or after it.
	raw, err := p.event(ctx, peer, b)
	if err != nil {
		return err
	}
	bEvent, rej := VerifyPDU(ctx, p.roomID, p.version, raw, p.r.cfg.Keys)
	if rej != nil {
		return rej
	}
	if bEvent.ID != b {
		return fmt.Errorf("/event %s gave %s", b, bEvent.ID)
	}
	// The state events and their auth chain are verified and stored like any events.
	held, _, err := p.accept(ctx, peer, "state", append(append([]json.RawMessage{}, ans.state...), ans.authChain[:min(len(ans.authChain), maxAuthChainFetches)]...), nil)
	if err != nil {
		return err
	}
	// accept verified them; what is held is read back by ID rather than verified again.
	st := p.r.cfg.Store
	ids := make([]string, len(ans.state))
	for i, raw := range ans.state {
		ids[i] = pduEventID(raw, id.RoomVersion(p.version))
	}
	events, err := st.Events(ctx, ids)
	if err != nil {
		return err
	}
	state := stateres.StateMap{}
	for i, e := range ids {
		ev, ok := events[e]
		switch {
		case e == "" || !ok || !held[e]:
			return fmt.Errorf("state event %d of the answer was not stored (refused, or not a PDU)", i)
		case ev.StateKey == nil:
			return fmt.Errorf("state event %s is not a state event", e)
		}
		state[pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = id.EventID(e)
	}
	if bEvent.StateKey != nil {
		key := pdu.StateKey{Type: bEvent.Type, StateKey: *bEvent.StateKey}
		if state[key] != id.EventID(b) {
			// The state before b: b is taken as accepted, as the peer that sent it holds it.
			if _, err := p.keep(ctx, peer, []store.Event{bEvent}); err != nil {
				return err
			}
			state[key] = id.EventID(b)
		}
	}
	no, err := st.AllocateStateGroups(ctx, p.roomID, 1)
	if err != nil {
		return err
	}
	group := store.StateGroup{No: no, Entries: map[store.StateKey]string{}}
	for k, e := range state {
		group.Entries[store.StateKey{Type: k.Type, StateKey: k.StateKey}] = string(e)
	}
	if err := st.SaveBoundaryState(ctx, p.roomID, b, group, peer); err != nil {
		return err
	}
	p.log.Info("The state at the start of the history, from a peer", "event", b, "peer", peer, "entries", len(state))
	return nil
}

// stateFrom says whose word the room's boundary states are, for the status.
func stateFrom(bs map[string]store.BoundaryState) []string {
	var out []string
	for _, b := range bs {
		out = append(out, fmt.Sprintf("%s (/state at %s, %s)", b.Source, b.EventID, b.FetchedAt.UTC().Format(time.RFC3339)))
	}
	return out
}

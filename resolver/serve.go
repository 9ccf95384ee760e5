package resolver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"maunium.net/go/mautrix"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// The history endpoints (federation.HistorySource). Each admits the requester to the room
// first (see admit), walks or reads what it answers from the store, and presents each event
// as the requester may see it (see present). Events the authorization rules rejected are
// never served: walks go through them to their prev events, and /event answers 404.

var _ federation.HistorySource = (*Replica)(nil)

// walkReads bounds the rows a walk for limit events may read: what it serves, the windows
// it prefetches, and the rejected and known events it goes through.
func walkReads(limit int) int { return 6*limit + 200 }

// Backfill returns up to limit events of the room from the events of from, included, back
// through their prev events, deepest first (the order Synapse and Dendrite answer in).
func (r *Replica) Backfill(ctx context.Context, origin, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	view, err := r.admit(ctx, origin, roomID)
	if err != nil {
		return nil, r.failed(err, federation.EndpointBackfill, roomID)
	}
	w := newHistoryWalk(r.st, roomID, walkReads(limit), limit)
	for _, evID := range from {
		w.add(evID, false, noChild)
	}
	var events []store.Event
	for len(events) < limit {
		ev, _, ok, err := w.next(ctx)
		if err != nil {
			return nil, r.failed(err, federation.EndpointBackfill, roomID)
		}
		if !ok {
			break
		}
		if ev.Rejected == "" {
			events = append(events, ev)
		}
		w.expand(ev, false)
	}
	out, err := r.presentRaw(ctx, view, origin, events)
	return out, r.failed(err, federation.EndpointBackfill, roomID)
}

// MissingEvents returns up to req.Limit events that lead to req.Latest from req.Earliest:
// the walk starts at the prev events of the latest events and never hands out an earliest
// event, nor any of its ancestors (the requester holds them), nor the latest events
// themselves, nor an event below req.MinDepth. The answer is oldest first, as Synapse's.
//
// The ancestors of the earliest events are found by walking them too, deepest first with
// the rest, so that an event is known to be one of them before it is taken. That walk shares
// the other's bound (walkReads): the walk stops at the bound, before anything it could no
// longer place is taken.
func (r *Replica) MissingEvents(ctx context.Context, origin, roomID string, req federation.MissingEventsRequest) ([]json.RawMessage, error) {
	view, err := r.admit(ctx, origin, roomID)
	if err != nil {
		return nil, r.failed(err, federation.EndpointMissingEvents, roomID)
	}
	w := newHistoryWalk(r.st, roomID, walkReads(req.Limit), req.Limit)
	for _, evID := range req.Earliest {
		w.add(evID, true, noChild)
	}
	// The latest events are walked as the others, and never handed out: an earliest event
	// that descends from one makes its ancestors known through it.
	latest := map[string]bool{}
	for _, evID := range req.Latest {
		latest[evID] = true
		w.add(evID, false, noChild)
	}
	var events []store.Event
	for len(events) < req.Limit && w.openLeft() {
		ev, known, ok, err := w.next(ctx)
		if err != nil {
			return nil, r.failed(err, federation.EndpointMissingEvents, roomID)
		}
		if !ok {
			break
		}
		if known {
			w.expand(ev, true)
			continue
		}
		if ev.Depth < req.MinDepth {
			break // every event left is at this depth or below
		}
		if ev.Rejected == "" && !latest[ev.ID] {
			events = append(events, ev)
		}
		w.expand(ev, false)
	}
	slices.SortFunc(events, func(a, b store.Event) int {
		return cmp.Or(cmp.Compare(a.Depth, b.Depth), cmp.Compare(a.ID, b.ID))
	})
	out, err := r.presentRaw(ctx, view, origin, events)
	return out, r.failed(err, federation.EndpointMissingEvents, roomID)
}

// Event returns one event of a room origin may read. An event not held, or rejected by the
// authorization rules, is 404.
func (r *Replica) Event(ctx context.Context, origin, eventID string) (json.RawMessage, error) {
	ev, err := r.servedEvent(ctx, "", eventID)
	if err != nil {
		return nil, r.failed(err, federation.EndpointEvent, "")
	}
	view, err := r.admit(ctx, origin, ev.RoomID)
	if err != nil {
		return nil, r.failed(err, federation.EndpointEvent, ev.RoomID)
	}
	out, err := r.presentRaw(ctx, view, origin, []store.Event{ev})
	if err != nil {
		return nil, r.failed(err, federation.EndpointEvent, ev.RoomID)
	}
	return out[0], nil
}

// servedEvent reads an event that may be served: held, in roomID (any room when ""), and not
// rejected.
func (r *Replica) servedEvent(ctx context.Context, roomID, eventID string) (store.Event, error) {
	held, err := r.st.Events(ctx, []string{eventID})
	if err != nil {
		return store.Event{}, fmt.Errorf("read event %s: %w", eventID, err)
	}
	ev, ok := held[eventID]
	if !ok || ev.Rejected != "" || roomID != "" && ev.RoomID != roomID {
		return store.Event{}, errEventNotFound
	}
	return ev, nil
}

// StateIDs returns the IDs of the room state before an event (as Synapse answers) and of the
// auth chain of that state.
func (r *Replica) StateIDs(ctx context.Context, origin, roomID, eventID string) ([]string, []string, error) {
	state, chain, err := r.stateBefore(ctx, origin, roomID, eventID)
	return state, chain, r.failed(err, federation.EndpointStateIDs, roomID)
}

// State is StateIDs with the events, as stored: state events are not redacted, as Synapse
// serves them (a server in the room needs them to authorize events).
func (r *Replica) State(ctx context.Context, origin, roomID, eventID string) ([]json.RawMessage, []json.RawMessage, error) {
	stateIDs, chainIDs, err := r.stateBefore(ctx, origin, roomID, eventID)
	if err != nil {
		return nil, nil, r.failed(err, federation.EndpointState, roomID)
	}
	state, err := r.rawEvents(ctx, stateIDs)
	if err != nil {
		return nil, nil, r.failed(err, federation.EndpointState, roomID)
	}
	chain, err := r.rawEvents(ctx, chainIDs)
	return state, chain, r.failed(err, federation.EndpointState, roomID)
}

func (r *Replica) stateBefore(ctx context.Context, origin, roomID, eventID string) ([]string, []string, error) {
	view, err := r.admit(ctx, origin, roomID)
	if err != nil {
		return nil, nil, err
	}
	if _, err := r.servedEvent(ctx, roomID, eventID); err != nil {
		return nil, nil, err
	}
	states, err := r.st.EventStates(ctx, []string{eventID})
	if err != nil {
		return nil, nil, fmt.Errorf("read the state of %s: %w", eventID, err)
	}
	s := states[eventID]
	if s.Before == 0 {
		return nil, nil, mautrix.MNotFound.WithMessage("The state at %s is not known here yet.", eventID)
	}
	state, err := r.groups.load(ctx, roomID, s.Before)
	if err != nil {
		return nil, nil, err
	}
	ids, err := r.sortedStateIDs(ctx, state)
	if err != nil {
		return nil, nil, err
	}
	chain, err := r.authChain(ctx, roomID, view.version, ids)
	if err != nil {
		return nil, nil, err
	}
	return ids, chain, nil
}

// EventAuth returns the auth chain of one event: its auth events, theirs, and so on.
func (r *Replica) EventAuth(ctx context.Context, origin, roomID, eventID string) ([]json.RawMessage, error) {
	view, err := r.admit(ctx, origin, roomID)
	if err != nil {
		return nil, r.failed(err, federation.EndpointEventAuth, roomID)
	}
	if _, err := r.servedEvent(ctx, roomID, eventID); err != nil {
		return nil, r.failed(err, federation.EndpointEventAuth, roomID)
	}
	ids, err := r.authChain(ctx, roomID, view.version, []string{eventID})
	if err != nil {
		return nil, r.failed(err, federation.EndpointEventAuth, roomID)
	}
	chain, err := r.rawEvents(ctx, ids)
	return chain, r.failed(err, federation.EndpointEventAuth, roomID)
}

// rawEvents returns the stored bytes of the held events among ids, in the order of ids.
func (r *Replica) rawEvents(ctx context.Context, ids []string) ([]json.RawMessage, error) {
	held, err := r.st.Events(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("read %d events: %w", len(ids), err)
	}
	out := make([]json.RawMessage, 0, len(ids))
	for _, evID := range ids {
		if ev, ok := held[evID]; ok {
			out = append(out, ev.Raw)
		}
	}
	return out, nil
}

// presentRaw is present, as the wire takes it.
func (r *Replica) presentRaw(ctx context.Context, view *roomView, origin string, events []store.Event) ([]json.RawMessage, error) {
	shown, err := r.present(ctx, view, origin, events)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(shown))
	for i, s := range shown {
		out[i] = s.raw
	}
	return out, nil
}

// failed logs an error that is not a refusal (the requester gets a plain 500) and returns err.
func (r *Replica) failed(err error, endpoint, roomID string) error {
	var refusal mautrix.RespError
	if err != nil && !errors.As(err, &refusal) && !errors.Is(err, context.Canceled) {
		r.log.Error(err, "Serving history failed", "endpoint", endpoint, "room", roomID)
	}
	return err
}

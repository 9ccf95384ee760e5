// Package rawbackfill measures how fast a homeserver serves a room's history over /backfill
// when nothing but the walk is done with it: each page is parsed, each event's ID computed
// (the reference hash, from room version 3), and the next request asks for the prev_events
// not yet seen. No signature, hash or auth check, no storage. hack/bench-dendrite.sh holds
// `roomsync sync`, which does all of those, against this rate (hack/dendrite.sh backfill-rate).
package rawbackfill

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// MaxFrom caps the event IDs of one request's v: a wide room's frontier is asked in turns,
// so that the URL stays short.
const MaxFrom = 50

// PageFunc asks for up to limit events preceding, and including, the events of from: one
// /backfill request.
type PageFunc func(ctx context.Context, from []string, limit int) ([]json.RawMessage, error)

// Result is what Walk measured.
type Result struct {
	// Events is the number of distinct events the walk was given, Requests the pages asked.
	Events, Requests int
	// Seconds runs from the first request to the end of the last page's parsing.
	Seconds float64
	// ReachedCreate: m.room.create was among the events.
	ReachedCreate bool
	// RoomVersion is the room's version, as make_join named it.
	RoomVersion string
}

// String is the one line hack/bench-dendrite.sh reads.
func (r Result) String() string {
	return fmt.Sprintf("events=%d requests=%d seconds=%.3f reached_create=%t room_version=%s",
		r.Events, r.Requests, r.Seconds, r.ReachedCreate, r.RoomVersion)
}

// Rate is events a second.
func (r Result) Rate() float64 { return float64(r.Events) / max(r.Seconds, 1e-9) }

// Walk pages the room back from heads, limit events a request, until no event it was given
// names a prev_event it has not seen: the next request's v is the prev_events not yet seen
// (the first MaxFrom of them in the order they were first named; the rest wait their turn).
// It fails when a page brings nothing new while events are still wanted, rather than asking
// for them forever.
func Walk(ctx context.Context, version id.RoomVersion, heads []string, limit int, page PageFunc) (Result, error) {
	r := Result{RoomVersion: string(version)}
	if limit < 1 {
		return r, errors.New("backfill walk: limit must be at least 1")
	}
	if len(heads) == 0 {
		return r, errors.New("backfill walk: no events to start from")
	}
	parse, err := parser(version)
	if err != nil {
		return r, err
	}
	seen := map[string]bool{}
	// wanted holds the IDs referenced and not yet seen, in the order first referenced.
	var wanted []string
	inWanted := map[string]bool{}
	want := func(evID string) {
		if !seen[evID] && !inWanted[evID] {
			inWanted[evID] = true
			wanted = append(wanted, evID)
		}
	}
	for _, h := range heads {
		want(h)
	}
	t0 := time.Now()
	for len(wanted) > 0 {
		from := wanted[:min(len(wanted), MaxFrom)]
		pdus, err := page(ctx, from, limit)
		r.Requests++
		if err != nil {
			r.Seconds = time.Since(t0).Seconds()
			return r, fmt.Errorf("backfill walk: request %d: %w", r.Requests, err)
		}
		fresh := 0
		for i, raw := range pdus {
			ev, err := parse(raw)
			if err != nil {
				r.Seconds = time.Since(t0).Seconds()
				return r, fmt.Errorf("backfill walk: request %d, event %d: %w", r.Requests, i, err)
			}
			if seen[ev.id] {
				continue
			}
			seen[ev.id] = true
			fresh++
			r.ReachedCreate = r.ReachedCreate || ev.typ == "m.room.create"
			for _, p := range ev.prevs {
				want(p)
			}
		}
		// Drop what this page brought from the wanted list.
		kept := wanted[:0]
		for _, w := range wanted {
			if !seen[w] {
				kept = append(kept, w)
			} else {
				delete(inWanted, w)
			}
		}
		wanted = kept
		if fresh == 0 && len(wanted) > 0 {
			r.Events, r.Seconds = len(seen), time.Since(t0).Seconds()
			return r, fmt.Errorf("backfill walk: request %d for %d events brought none not seen before; %d events still wanted",
				r.Requests, len(from), len(wanted))
		}
	}
	r.Events, r.Seconds = len(seen), time.Since(t0).Seconds()
	return r, nil
}

// walked is what the walk needs of an event.
type walked struct {
	id, typ string
	prevs   []string
}

// parser reads events of the room version: from version 3 the ID is the reference hash,
// computed; versions 1 and 2 carry it in the event.
func parser(version id.RoomVersion) (func(json.RawMessage) (walked, error), error) {
	if !version.IsKnown() {
		return nil, fmt.Errorf("backfill walk: unknown room version %q", version)
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return func(raw json.RawMessage) (walked, error) {
			var p pdu.RoomV1PDU
			if err := jsonv2.Unmarshal(raw, &p); err != nil {
				return walked{}, err
			}
			if p.EventID == "" {
				return walked{}, errors.New("no event_id in a room of version 1 or 2")
			}
			w := walked{id: string(p.EventID), typ: p.Type}
			for _, ref := range p.PrevEvents {
				w.prevs = append(w.prevs, string(ref.ID))
			}
			return w, nil
		}, nil
	}
	return func(raw json.RawMessage) (walked, error) {
		var p pdu.PDU
		if err := jsonv2.Unmarshal(raw, &p); err != nil {
			return walked{}, err
		}
		evID, err := p.GetEventID(version)
		if err != nil {
			return walked{}, err
		}
		w := walked{id: string(evID), typ: p.Type, prevs: make([]string, len(p.PrevEvents))}
		for i, prev := range p.PrevEvents {
			w.prevs[i] = string(prev)
		}
		return w, nil
	}, nil
}

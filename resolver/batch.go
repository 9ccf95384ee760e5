package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// accept verifies one response's PDUs and stores those that pass, in one atomic batch. expect,
// when set, lists the IDs that were asked for by ID: any other event in the answer is a lie.
// A response holding another room's event, or an event that was not asked for, is discarded
// whole (ok is false) and the peer is marked as having answered badly: a peer that lies once
// is not trusted for the rest of that answer. It returns which of the response's events are
// now held.
func (p *pass) accept(ctx context.Context, peer, endpoint string, raws []json.RawMessage, expect []string) (held map[string]bool, ok bool, err error) {
	return p.apply(ctx, peer, endpoint, p.check(ctx, raws, nil, expect))
}

// checkedAnswer is a response verified, not yet acted on: its events that verified, the
// PDUs refused, and the lie that discards it whole, if any.
type checkedAnswer struct {
	events     []store.Event
	rejections []*Rejection
	lie        *Rejection
}

// check verifies a response (see accept), with its PDUs parsed already where parsed has them
// (it may be nil). It changes nothing of the pass, so the next response can be checked while
// the one before is stored.
func (p *pass) check(ctx context.Context, raws []json.RawMessage, parsed []*parsedPDU, expect []string) checkedAnswer {
	var a checkedAnswer
	a.events, a.rejections = p.verifyAll(ctx, raws, parsed)
	for _, rej := range a.rejections {
		if rej.Reason == RejectWrongRoom {
			a.lie = rej
			return a
		}
	}
	if len(expect) > 0 {
		expected := make(map[string]bool, len(expect))
		for _, id := range expect {
			expected[id] = true
		}
		for _, ev := range a.events {
			if !expected[ev.ID] {
				a.lie = reject(RejectEventIDMismatch, ev.ID, "asked for %v", expect)
				a.rejections = append(a.rejections, a.lie)
				break
			}
		}
	}
	return a
}

// apply counts what a checked response refused and stores what it gave, unless it lied (see
// accept).
func (p *pass) apply(ctx context.Context, peer, endpoint string, a checkedAnswer) (held map[string]bool, ok bool, err error) {
	if !p.admit(peer, endpoint, a) {
		return nil, false, nil
	}
	held, err = p.keep(ctx, peer, a.events)
	if err != nil {
		return nil, false, err
	}
	return held, true, nil
}

// admit counts what a checked response refused, and says whether its events may be stored:
// not if it lied, which is recorded against the peer.
func (p *pass) admit(peer, endpoint string, a checkedAnswer) bool {
	p.countRejections(peer, a.rejections)
	if a.lie == nil {
		return true
	}
	// Every event of the answer is dropped, including the ones that verified.
	p.r.cfg.Peers.Record(peer, p.endpoint(endpoint), federation.OutcomeBadResponse, 0, a.lie)
	p.mu.Lock()
	p.res.Err = fmt.Errorf("discarded answer of %s: %w", peer, a.lie)
	p.mu.Unlock()
	return false
}

// countRejections records refused PDUs: in the result and the observer, and, for a key that
// could not be fetched, as what the event waits for.
func (p *pass) countRejections(peer string, rejections []*Rejection) {
	for _, rej := range rejections {
		if rej.Reason == RejectKeyUnavailable && rej.EventID != "" {
			p.keyWaits[rej.EventID] = rej.Server
		}
		p.res.Rejected[rej.Reason]++
		p.r.cfg.Observer.Rejected(p.roomID, rej.Reason, 1)
	}
	if len(rejections) > 0 {
		p.log.Info("Rejected events from peer", "peer", peer, "events", len(rejections), "first", rejections[0].Error())
	}
}

// keep stores verified events from peer in one atomic batch, records the room version once
// the create event is among them, and counts what was new. It returns the events now held.
func (p *pass) keep(ctx context.Context, peer string, events []store.Event) (map[string]bool, error) {
	if len(events) == 0 {
		return map[string]bool{}, nil
	}
	result, err := p.r.cfg.Store.InsertEvents(ctx, p.roomID, events)
	if err != nil {
		return nil, fmt.Errorf("store %d events from %s: %w", len(events), peer, err)
	}
	for _, ev := range events {
		if ev.Type == "m.room.create" && ev.StateKey != nil && *ev.StateKey == "" {
			// The create event verified under the version in use: now the version is known.
			if err := p.r.cfg.Store.EnsureRoom(ctx, p.roomID, p.version, ev.ID); err != nil {
				return nil, fmt.Errorf("record room version %s: %w", p.version, err)
			}
		}
	}
	n := result.New + result.Upgraded
	p.res.Stored += n
	p.budget -= n
	if n > 0 {
		p.r.cfg.Observer.Stored(p.roomID, n)
	}
	held := make(map[string]bool, len(events))
	for _, ev := range events {
		held[ev.ID] = true
	}
	return held, nil
}

// verifyAll verifies PDUs on VerifyWorkers goroutines; events come back in input order with
// duplicates (the same ID twice in one answer) removed. A rejection that verification could
// not name (a PDU without a type, say) is named here where the ID can still be computed, so
// that an answer to the sender can key it.
func (p *pass) verifyAll(ctx context.Context, raws []json.RawMessage, parsed []*parsedPDU) ([]store.Event, []*Rejection) {
	seen := make(map[string]bool, len(raws))
	var events []store.Event
	var rejections []*Rejection
	for i, r := range p.verifyEach(ctx, raws, parsed) {
		if r.rej != nil {
			if r.rej.EventID == "" {
				r.rej.EventID = pduEventID(raws[i], id.RoomVersion(p.version))
			}
			rejections = append(rejections, r.rej)
			continue
		}
		if seen[r.ev.ID] {
			continue
		}
		seen[r.ev.ID] = true
		events = append(events, r.ev)
	}
	return events, rejections
}

// verified is the outcome of verifying one PDU: the event, or why it was refused.
type verified struct {
	ev  store.Event
	rej *Rejection
}

// verifyEach verifies PDUs on VerifyWorkers goroutines, those parsed already (parsed[i], if
// parsed has it) from their parse; the outcomes are in input order, one per PDU.
func (p *pass) verifyEach(ctx context.Context, raws []json.RawMessage, parsed []*parsedPDU) []verified {
	results := make([]verified, len(raws))
	workers := min(p.r.cfg.VerifyWorkers, len(raws))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if i < len(parsed) && parsed[i] != nil {
					ev, rej := verifyParsed(ctx, p.roomID, id.RoomVersion(p.version), parsed[i], p.r.cfg.Keys)
					results[i] = verified{ev, rej}
					continue
				}
				ev, rej := VerifyPDU(ctx, p.roomID, p.version, raws[i], p.r.cfg.Keys)
				results[i] = verified{ev, rej}
			}
		}()
	}
	for i := range raws {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

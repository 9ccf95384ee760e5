package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// A /backfill page names what lies below it: the prevs of its events that it does not hold
// itself. So the next request can be made as soon as a page is parsed, and travel while the
// page is verified and stored; waiting for the store would leave the peer idle while we check
// signatures and our CPU idle while the peer reads its database.

// followedPages bounds the pages of one chain that are received and not yet verified: the
// one being verified and the one waiting. With the request in flight, one page verified and
// waiting, and the one being stored, memory holds five pages, whatever the room's size.
const followedPages = 2

// recentPages is how many pages back a chain remembers the IDs of the events it received:
// those not yet stored (the store does not know them yet) and a margin. Older pages are
// stored, or refused, by the time a page is parsed.
const recentPages = followedPages + 4

// errChainStopped cancels the request a chain has in flight when its pull ends early (a lie,
// a store error): not a failure of the peer, nor of the pass.
var errChainStopped = errors.New("backfill chain stopped")

// follow stores first, an answer of peer to /backfill, and follows it down the room: while a
// page is stored, the page below it is verified and the one below that is asked of the same
// peer, until the peer gives nothing new, the page reaches the history bound or the room's
// start, the budget or the request bound is spent, or the peer fails (what is left stays a
// backward extremity, due in the pass's next round). kept is false when the first answer was
// discarded as a lie.
func (p *pass) follow(ctx context.Context, peer string, first []json.RawMessage) (kept bool, err error) {
	chainCtx, stop := context.WithCancelCause(ctx)
	pages := make(chan []json.RawMessage, followedPages-1)
	checked := make(chan checkedAnswer, 1)
	budget := p.budget - len(first)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(pages)
		p.fetchBelow(chainCtx, peer, first, budget, pages)
	})
	wg.Go(func() {
		defer close(checked)
		hand := func(a checkedAnswer) bool {
			select {
			case checked <- a:
				return true
			case <-chainCtx.Done():
				return false
			}
		}
		if !hand(p.check(chainCtx, first, nil)) {
			return
		}
		for raws := range pages {
			if !hand(p.check(chainCtx, raws, nil)) {
				return
			}
		}
	})
	defer func() {
		stop(errChainStopped)
		for range checked {
			// Drained so the stages, stopped, can end.
		}
		wg.Wait()
	}()

	firstPage := true
	for a := range checked {
		_, ok, err := p.apply(ctx, peer, "backfill", a)
		if firstPage {
			kept, firstPage = ok, false
		}
		if err != nil || !ok {
			return kept, err
		}
	}
	return kept, nil
}

// fetchBelow asks peer, page after page, for the events below page, and hands each answer to
// pages. It runs beside the pass's goroutine, which stores what it hands over.
// budget is what the pass may still store once page is: events received count against it
// before they are stored, so the chain never asks for more than the pass may keep.
func (p *pass) fetchBelow(ctx context.Context, peer string, page []json.RawMessage, budget int, pages chan<- []json.RawMessage) {
	version := id.RoomVersion(p.version)
	recent := make([]map[string]bool, 0, recentPages)
	for {
		ids := pageEventIDs(page, version)
		recent = append(recent, ids)
		if len(recent) > recentPages {
			recent = recent[1:]
		}
		below, err := p.below(ctx, page, version, recent)
		limit := min(p.r.cfg.Limits.BackfillLimit, budget)
		if err != nil || len(below) == 0 || limit <= 0 || p.requestsLeft() <= 0 || ctx.Err() != nil ||
			!slices.Contains(p.r.cfg.Peers.Available(p.endpoint("backfill")), peer) {
			return
		}
		raws, err := ask(ctx, p, peer, "backfill", func(ctx context.Context) ([]json.RawMessage, error) {
			return p.r.cfg.Client.Backfill(ctx, peer, p.roomID, below, limit)
		})
		if err != nil || len(raws) == 0 {
			return
		}
		select {
		case pages <- raws:
		case <-ctx.Done():
			return
		}
		page, budget = raws, budget-len(raws)
	}
}

// below lists the events a page leads to and nobody holds: prevs of its events within the
// history bound that are neither in the page, in the pages before it not yet stored
// (recent), nor in the store; at most BackfillExtremities of them, in the order met. The rest
// are backward extremities once the page is stored.
func (p *pass) below(ctx context.Context, page []json.RawMessage, version id.RoomVersion, recent []map[string]bool) ([]string, error) {
	seen := map[string]bool{}
	var candidates []string
	for _, raw := range page {
		if !p.hist.leadsBelow(gjson.GetBytes(raw, "depth").Int(), gjson.GetBytes(raw, "origin_server_ts").Int()) {
			continue
		}
		for _, prev := range gjson.GetBytes(raw, "prev_events").Array() {
			prevID := prev.Str
			if version.EventIDFormat() == id.EventIDFormatCustom {
				// Room versions 1 and 2 name a prev as [event ID, hashes].
				prevID = prev.Get("0").Str
			}
			if prevID == "" || seen[prevID] || inRecent(recent, prevID) {
				continue
			}
			seen[prevID] = true
			candidates = append(candidates, prevID)
		}
	}
	missing, err := p.missing(ctx, candidates)
	if err != nil {
		return nil, err
	}
	return missing[:min(len(missing), p.r.cfg.Limits.BackfillExtremities)], nil
}

// pageEventIDs is the set of the IDs of a page's events (those that have one: a PDU too
// broken to name is left to verification to refuse).
func pageEventIDs(page []json.RawMessage, version id.RoomVersion) map[string]bool {
	ids := make(map[string]bool, len(page))
	for _, raw := range page {
		if eventID := pduEventID(raw, version); eventID != "" {
			ids[eventID] = true
		}
	}
	return ids
}

func inRecent(recent []map[string]bool, eventID string) bool {
	for _, ids := range recent {
		if ids[eventID] {
			return true
		}
	}
	return false
}

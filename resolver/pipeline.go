package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/store"
)

// A /backfill page names what lies below it: the prevs of its events that it does not hold
// itself. So the next request can be made as soon as a page is parsed, and travel while the
// page is verified and stored; waiting for the store would leave the peer idle while we check
// signatures and our CPU idle while the peer reads its database.

// followedPages bounds the pages of one chain that are received and not yet verified: the
// one being verified and the one waiting.
const followedPages = 2

// writeQueue is how many verified answers wait for the writer. The writer stores what waits
// in one transaction, up to maxWriteEvents events: when the store is slower than verifying,
// it pays its cost per transaction (a commit, a statement per table; most of PostgreSQL's
// time at a hundred events) once for several answers rather than once for each.
const (
	writeQueue     = 4
	maxWriteEvents = 500
)

// recentPages is how many pages back a chain remembers the IDs of the events it received:
// those not yet stored (the store does not know them yet) and a margin of one. Older pages
// are stored, or refused, by the time a page is parsed. Not stored then: the page parsed,
// those waiting to be verified and the one being verified, those waiting for the writer and
// the ones it is storing. So memory holds a dozen pages or so, whatever the room's size.
const recentPages = followedPages + 1 + 2*writeQueue + 1 + 1

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
	_, keptFirst, err := p.pullChains(ctx, []chain{{peer: peer, first: first}})
	return keptFirst[0], err
}

// chain is one pull down the room from one peer: its first answer already in hand, or the
// events to ask for first.
type chain struct {
	peer  string
	first []json.RawMessage
	want  []string
}

// chainPage is an answer a chain received, with its PDUs parsed (see parsePage).
type chainPage struct {
	chain  int
	first  bool
	raws   []json.RawMessage
	parsed []*parsedPDU
	checkedAnswer
}

// pullChains runs chains at once, each followed as follow does, through one verifier and one
// writer: the pass's state and the store see one answer at a time, in the order they came.
// A lie stops the chain that told it, not the others. It returns, per chain, the error of its
// first request (chains with an answer in hand have none) and whether its first answer was
// kept (false also when none came).
func (p *pass) pullChains(ctx context.Context, chains []chain) (firstErr []error, keptFirst []bool, err error) {
	firstErr, keptFirst = make([]error, len(chains)), make([]bool, len(chains))
	ctxs := make([]context.Context, len(chains))
	stops := make([]context.CancelCauseFunc, len(chains))
	for i := range chains {
		ctxs[i], stops[i] = context.WithCancelCause(ctx)
	}
	pages := make(chan chainPage, followedPages-1)
	checked := make(chan chainPage, writeQueue)
	var budget atomic.Int64
	budget.Store(int64(p.budget))
	claims := &claimed{ids: map[string]bool{}}

	var fetchers, stages sync.WaitGroup
	for i, c := range chains {
		fetchers.Go(func() {
			firstErr[i] = p.fetchChain(ctxs[i], i, c, &budget, claims, pages)
		})
	}
	stages.Go(func() {
		fetchers.Wait()
		close(pages)
	})
	stages.Go(func() {
		defer close(checked)
		for pg := range pages {
			pg.checkedAnswer = p.check(ctxs[pg.chain], pg.raws, pg.parsed, nil)
			select {
			case checked <- pg:
			case <-ctx.Done():
			}
		}
	})
	defer func() {
		for _, stop := range stops {
			stop(errChainStopped)
		}
		for range checked {
			// Drained so the stages, stopped, can end.
		}
		stages.Wait()
	}()

	stopped := make([]bool, len(chains))
	for pg := range checked {
		batch := append(make([]chainPage, 0, writeQueue+1), pg)
		events := len(pg.events)
	queued:
		for events < maxWriteEvents {
			select {
			case more, ok := <-checked:
				if !ok {
					break queued // the range ends at its next turn
				}
				batch = append(batch, more)
				events += len(more.events)
			default:
				break queued
			}
		}
		if err := p.applyPages(ctx, chains, batch, stopped, keptFirst); err != nil {
			return firstErr, keptFirst, err
		}
		for i, stop := range stopped {
			if stop {
				stops[i](errChainStopped)
			}
		}
	}
	return firstErr, keptFirst, nil
}

// applyPages acts on verified answers of the chains, in the order they came: each one's
// refusals are counted; an answer that lied stops its chain, and the answers after it of that
// chain are dropped; what the others gave is stored in one transaction. It records, per
// chain, whether its first answer was kept.
func (p *pass) applyPages(ctx context.Context, chains []chain, batch []chainPage, stopped, keptFirst []bool) error {
	var events []store.Event
	var peers []string
	var kept []chainPage
	for _, pg := range batch {
		if stopped[pg.chain] {
			continue
		}
		peer := chains[pg.chain].peer
		if !p.admit(peer, "backfill", pg.checkedAnswer) {
			stopped[pg.chain] = true
			continue
		}
		events = append(events, pg.events...)
		if !slices.Contains(peers, peer) {
			peers = append(peers, peer)
		}
		kept = append(kept, pg)
	}
	if _, err := p.keep(ctx, strings.Join(peers, ", "), events); err != nil {
		return err
	}
	for _, pg := range kept {
		if pg.first {
			keptFirst[pg.chain] = true
		}
	}
	return nil
}

// fetchChain asks the first page of a chain, if it has none in hand, then, page after page,
// the page below, and hands each to pages. It runs beside the pass's goroutine, which stores
// what it hands over. budget is what the pass may still store: events received count against
// it before they are stored, so chains never ask for much more than the pass may keep.
func (p *pass) fetchChain(ctx context.Context, i int, c chain, budget *atomic.Int64, claims *claimed, pages chan<- chainPage) (firstErr error) {
	version := id.RoomVersion(p.version)
	page := c.first
	if page == nil {
		limit := min(int64(p.r.cfg.Limits.BackfillLimit), budget.Load())
		if limit <= 0 || len(c.want) == 0 {
			return nil
		}
		raws, err := p.askBackfill(ctx, c.peer, c.want, int(limit))
		if err != nil || len(raws) == 0 {
			return err
		}
		page = raws
	}
	budget.Add(-int64(len(page)))
	recent := make([]map[string]bool, 0, recentPages)
	for first := true; ; first = false {
		// The page's event IDs say what lies below it; the parse that found them is handed
		// to verification with the page, which then need not parse it again.
		parsed, ids := parsePage(page, version)
		select {
		case pages <- chainPage{chain: i, first: first, raws: page, parsed: parsed}:
		case <-ctx.Done():
			return nil
		}
		recent = append(recent, ids)
		if len(recent) > recentPages {
			recent = recent[1:]
		}
		below, err := p.below(ctx, page, version, recent, claims)
		limit := min(int64(p.r.cfg.Limits.BackfillLimit), budget.Load())
		if err != nil || len(below) == 0 || limit <= 0 || p.requestsLeft() <= 0 || ctx.Err() != nil ||
			!slices.Contains(p.r.cfg.Peers.Available(p.endpoint("backfill")), c.peer) {
			return nil
		}
		raws, err := p.askBackfill(ctx, c.peer, below, int(limit))
		if err != nil || len(raws) == 0 {
			return nil
		}
		budget.Add(-int64(len(raws)))
		page = raws
	}
}

// claimed are the events some chain of a pull asked for: another chain does not ask for them
// again. Forgotten past maxClaims (a stored event is known to the store anyway), so a pull of
// a large room holds a frontier's worth, not the room.
type claimed struct {
	mu  sync.Mutex
	ids map[string]bool
}

const maxClaims = 4096

// take keeps the IDs no chain asked for yet, and marks them asked.
func (c *claimed) take(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) > maxClaims {
		clear(c.ids)
	}
	var out []string
	for _, id := range ids {
		if !c.ids[id] {
			c.ids[id] = true
			out = append(out, id)
		}
	}
	return out
}

// below lists the events a page leads to and nobody holds: prevs of its events within the
// history bound that are neither in the page, in the pages before it not yet stored
// (recent), in the store, nor asked for by another chain of the pull; at most
// BackfillExtremities of them, in the order met. The rest are backward extremities once the
// page is stored.
func (p *pass) below(ctx context.Context, page []json.RawMessage, version id.RoomVersion, recent []map[string]bool, claims *claimed) ([]string, error) {
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
	missing = missing[:min(len(missing), p.r.cfg.Limits.BackfillExtremities)]
	return claims.take(missing), nil
}

// parsePage parses a page's PDUs for their IDs and their verification (parsePDU), and
// returns the set of the IDs of the events that have one. Room versions 1 and 2 name their
// events in the PDU: those are read, and not parsed (parsed is nil), as are the PDUs of a
// version VerifyPDU refuses, which it refuses again.
func parsePage(page []json.RawMessage, version id.RoomVersion) (parsed []*parsedPDU, ids map[string]bool) {
	ids = make(map[string]bool, len(page))
	if !slices.Contains(supportedRoomVersions, string(version)) || version.EventIDFormat() == id.EventIDFormatCustom {
		for _, raw := range page {
			if eventID := pduEventID(raw, version); eventID != "" {
				ids[eventID] = true
			}
		}
		return nil, ids
	}
	parsed = make([]*parsedPDU, len(page))
	for i, raw := range page {
		parsed[i] = parsePDU(raw, version)
		if parsed[i].rej == nil {
			ids[parsed[i].id] = true
		}
	}
	return parsed, ids
}

func inRecent(recent []map[string]bool, eventID string) bool {
	for _, ids := range recent {
		if ids[eventID] {
			return true
		}
	}
	return false
}

// spread pulls several gaps at once from several peers: each peer in turn takes the next gap,
// and each share is followed down the room as its own chain (pullChains), so a forked room
// or a room with gaps far apart comes in as fast as the peers serve together. What a share's
// peer did not give stays due; it is filled as any gap is (fill: every peer in turn, with the
// attempt recorded), and is not spread again in this pass.
func (p *pass) spread(ctx context.Context, exts []store.BackwardExtremity, peers []string) error {
	shares := make([]chain, min(len(peers), len(exts)))
	for i, e := range exts {
		shares[i%len(shares)].want = append(shares[i%len(shares)].want, e.EventID)
		if p.spreadTried == nil {
			p.spreadTried = map[string]bool{}
		}
		p.spreadTried[e.EventID] = true
	}
	for i := range shares {
		shares[i].peer = peers[i]
		shares[i].want = shares[i].want[:min(len(shares[i].want), p.r.cfg.Limits.BackfillExtremities)]
	}
	_, _, err := p.pullChains(ctx, shares)
	return err
}

// unspread are the gaps of exts this pass has not spread yet.
func (p *pass) unspread(exts []store.BackwardExtremity) []store.BackwardExtremity {
	var out []store.BackwardExtremity
	for _, e := range exts {
		if !p.spreadTried[e.EventID] {
			out = append(out, e)
		}
	}
	return out
}

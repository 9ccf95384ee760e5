package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/tidwall/gjson"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// Back-off of a gap (a backward extremity) that no peer filled: doubling from gapRetryBase up
// to gapRetryMax. Gaps are retried forever, but never in a hot loop.
const (
	gapRetryBase = 30 * time.Second
	gapRetryMax  = 6 * time.Hour
)

// maxRequestsPerEvent bounds the requests of a pass relative to its budget, so a peer that
// keeps answering uselessly cannot hold a pass forever.
const maxRequestsPerEvent = 1

// maxHeadsPerPeer caps the heads taken from one peer's answer; the rest wait for next pass.
const maxHeadsPerPeer = 50

// errNoRoomVersion: no peer told us the room version, so no event can be verified.
var errNoRoomVersion = errors.New("room version unknown: no peer answered make_join (or let us join), and no create event is stored")

// pass is one bounded sync pass over one room.
type pass struct {
	r      *Resolver
	roomID string
	hist   History
	log    logr.Logger
	res    RoomResult

	version     string
	budget      int
	maxRequests int
	// authWaiting and stateWaiting say what the room state waits for: auth events no peer
	// gave, the state at the start of a bounded history.
	authWaiting, stateWaiting string

	// keyWaits names, for events refused because their signing key could not be fetched,
	// the server whose key it was: a gap on them waits for that key.
	keyWaits map[string]string

	// refusals are the history requests refused to us as a non-member ("peer: 403 …"):
	// 403 on /backfill or /get_missing_events, or on /event for a head the peer itself named
	// (Dendrite answers 403 too for an event it does not hold, which says nothing of us).
	refusals []string
	// announced are the heads each peer named.
	announced map[string]map[string]bool
	// member is our membership of the room, once read (see membership).
	member *store.Membership
	// spreadTried are the gaps this pass pulled from several peers at once (spread).
	spreadTried map[string]bool

	// mu guards the request counters of res and refusals, which concurrent head requests
	// update.
	mu sync.Mutex
}

// requestsLeft is how many more requests the pass may make.
func (p *pass) requestsLeft() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxRequests - p.res.Requests
}

func (p *pass) run(ctx context.Context) error {
	st := p.r.cfg.Store
	room, err := st.Room(ctx, p.roomID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read room: %w", err)
	}
	p.version = room.Version
	oldForward, err := st.ForwardExtremities(ctx, p.roomID)
	if err != nil {
		return fmt.Errorf("read forward extremities: %w", err)
	}

	heads, version := p.discoverHeads(ctx)
	if p.version == "" {
		// A peer's word, used for this pass only: the version is recorded once the create
		// event verifies under it (see store), so a peer that names a wrong one cannot wedge
		// the room.
		p.version = version
	}
	if p.version == "" && len(heads) > 0 {
		if p.version = p.versionFromCreateEvent(ctx, heads[0]); p.version != "" {
			if err := st.EnsureRoom(ctx, p.roomID, p.version, ""); err != nil {
				return fmt.Errorf("record room version: %w", err)
			}
		}
	}
	if p.version == "" {
		// Nothing of the room is known and no peer named its version. Joining is the last
		// way in (Always, an invite we took, or IfNeeded after make_join refused us): the
		// join template names the version.
		joined, err := p.maybeJoin(ctx)
		if err != nil {
			return err
		}
		if !joined {
			if err := p.membershipStatus(ctx); err != nil {
				return err
			}
			return errNoRoomVersion
		}
	}

	// With the Always policy, join before pulling: what we pull is then what a member sees.
	if _, err := p.maybeJoin(ctx); err != nil {
		return err
	}
	if err := p.pull(ctx, heads, oldForward); err != nil {
		return err
	}
	// IfNeeded: a refusal, or redacted copies, call for a join; then what was refused or
	// stripped is asked for again.
	joined, err := p.maybeJoin(ctx)
	if err != nil {
		return err
	}
	if joined {
		if err := p.pull(ctx, heads, oldForward); err != nil {
			return err
		}
	}
	if err := p.membershipStatus(ctx); err != nil {
		return err
	}
	if p.res.Membership == store.MembershipJoined && !p.r.redactedDone(p.roomID) {
		if err := p.refetchRedacted(ctx); err != nil {
			return err
		}
	}
	if err := p.computeState(ctx); err != nil {
		return fmt.Errorf("compute the room state: %w", err)
	}
	return p.summarize(ctx, heads)
}

// pull fetches the heads we lack, closes the forward gap to them, and backfills.
func (p *pass) pull(ctx context.Context, heads, oldForward []string) error {
	unknown, err := p.missing(ctx, heads)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		if err := p.fetchEvents(ctx, unknown); err != nil {
			return err
		}
		// Refused as a non-member: join before pulling anything more. Dendrite, once it has
		// served a non-member redacted copies, keeps serving its cached redacted copies to
		// the member we become.
		if len(p.refusals) > 0 {
			if _, err := p.maybeJoin(ctx); err != nil {
				return err
			}
		}
		// A head /event would not give (Dendrite refuses a non-member an event of a room
		// with shared history) may still come with /backfill, which answers with the events
		// asked from, redacted where we may not see them.
		if err := p.backfillFrom(ctx, unknown); err != nil {
			return err
		}
		if len(oldForward) > 0 && p.budget > 0 {
			if err := p.closeForwardGap(ctx, oldForward, unknown); err != nil {
				return err
			}
		}
	}
	return p.backfill(ctx)
}

// backfillFrom asks the peers, in turn, for the events of ids the store still lacks with
// /backfill from them, until none is missing.
func (p *pass) backfillFrom(ctx context.Context, ids []string) error {
	want, err := p.missing(ctx, ids)
	if err != nil {
		return err
	}
	limit := min(p.r.cfg.Limits.BackfillLimit, max(p.budget, 1))
	for _, peer := range p.r.cfg.Peers.Available(p.endpoint("backfill")) {
		if len(want) == 0 || ctx.Err() != nil || p.requestsLeft() <= 0 {
			return nil
		}
		raws, err := p.askBackfill(ctx, peer, want, limit)
		if err != nil {
			continue
		}
		if _, err := p.follow(ctx, peer, raws); err != nil {
			return err
		}
		if want, err = p.missing(ctx, want); err != nil {
			return err
		}
	}
	return nil
}

// discoverHeads asks every available peer, all at once so that a slow peer costs one timeout
// and not one per peer, for its newest events: make_join's prev_events (all of the peer's
// forward extremities, and the room version), or where make_join is refused,
// /timestamp_to_event (one event, the newest). Nothing is joined.
func (p *pass) discoverHeads(ctx context.Context) (heads []string, version string) {
	peers := p.r.cfg.Peers.Reachable()
	joinable := p.r.cfg.Peers.Available(p.endpoint("make_join"))
	answers := make([]headsAnswer, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = p.peerHeads(ctx, peer, slices.Contains(joinable, peer))
		}()
	}
	wg.Wait()

	seen := map[string]bool{}
	p.announced = make(map[string]map[string]bool, len(peers))
	for i, a := range answers {
		if !a.ok {
			continue
		}
		p.announced[peers[i]] = make(map[string]bool, len(a.heads))
		for _, h := range a.heads {
			p.announced[peers[i]][h] = true
		}
		p.res.PeersAnswered++
		if version == "" {
			version = a.version
		}
		for _, id := range a.heads {
			if id != "" && !seen[id] {
				seen[id] = true
				heads = append(heads, id)
			}
		}
	}
	return heads, version
}

// headsAnswer is one peer's answer to "what are your newest events?".
type headsAnswer struct {
	ok      bool
	version string
	heads   []string
}

// peerHeads asks one peer for its heads (see discoverHeads): make_join unless that endpoint
// is backed off, else /timestamp_to_event.
func (p *pass) peerHeads(ctx context.Context, peer string, tryJoin bool) (a headsAnswer) {
	if tryJoin {
		template, err := ask(ctx, p, peer, "make_join", func(ctx context.Context) (joinTemplate, error) {
			version, heads, err := p.r.cfg.Client.JoinTemplate(ctx, peer, p.roomID, p.r.cfg.JoinUserID, supportedRoomVersions)
			return joinTemplate{version: version, heads: heads}, err
		})
		if err == nil {
			// A peer cannot make us fetch without bound: a healthy room has a few extremities.
			return headsAnswer{ok: true, version: template.version, heads: template.heads[:min(len(template.heads), maxHeadsPerPeer)]}
		}
		if outcome, _ := federation.Classify(err); ctx.Err() != nil || outcome == federation.OutcomeUnreachable || outcome == federation.OutcomeRateLimited {
			// Not a refusal of make_join: the peer is not there, or asked for quiet.
			return a
		}
		p.log.V(1).Info("make_join refused; asking timestamp_to_event", "peer", peer, "error", err.Error())
	}
	if p.r.cfg.Peers.Unimplemented(peer, "timestamp_to_event") {
		// It said lately that it has no such endpoint (Dendrite v0.13.8): asked again hourly.
		return a
	}
	head, err := ask(ctx, p, peer, "timestamp_to_event", func(ctx context.Context) (string, error) {
		return p.r.cfg.Client.LatestEvent(ctx, peer, p.roomID, p.r.cfg.Now())
	})
	p.r.cfg.Peers.RecordUnimplemented(peer, "timestamp_to_event", err)
	if err == nil {
		a.ok, a.heads = true, []string{head}
	}
	return a
}

type joinTemplate struct {
	version string
	heads   []string
	raw     json.RawMessage
}

// versionFromCreateEvent finds the room version where no peer gave it with make_join: it
// fetches a head, then among its auth events the m.room.create event (in room version 12,
// the event whose hash is the room ID), and reads content.room_version. The create event
// must verify under the version it names, with the ID it was asked for, or it is not believed;
// each peer is tried until one gives a create event that verifies.
func (p *pass) versionFromCreateEvent(ctx context.Context, head string) string {
	var fromRoomID []string
	if !strings.Contains(p.roomID, ":") {
		fromRoomID = append(fromRoomID, "$"+strings.TrimPrefix(p.roomID, "!"))
	}
	for _, peer := range p.r.cfg.Peers.Available(p.endpoint("event")) {
		raw, err := p.event(ctx, peer, head)
		if err != nil {
			continue
		}
		for _, id := range append(slices.Clone(fromRoomID), federation.ReferencedIDs(raw, "auth_events")...) {
			createRaw, err := p.event(ctx, peer, id)
			if err != nil || gjson.GetBytes(createRaw, "type").Str != "m.room.create" {
				continue
			}
			version := "1"
			if v := gjson.GetBytes(createRaw, "content.room_version"); v.Exists() {
				version = v.Str
			}
			if ev, rej := VerifyPDU(ctx, p.roomID, version, createRaw, p.r.cfg.Keys); rej == nil && ev.ID == id {
				return version
			}
			p.log.Info("Create event does not verify under the version it names", "peer", peer, "event", id)
			break
		}
		if ctx.Err() != nil {
			return ""
		}
	}
	return ""
}

// missing returns the IDs the store does not hold, in their order.
func (p *pass) missing(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	held, err := p.r.cfg.Store.HasEvents(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("look up events: %w", err)
	}
	var out []string
	for _, id := range ids {
		if !held[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// fetchEvents gets events one by one with /event, each from the first peer that has it.
func (p *pass) fetchEvents(ctx context.Context, ids []string) error {
	return p.fetchEventsNoting(ctx, ids, nil)
}

// fetchEventsNoting is fetchEvents telling att, when not nil, what each peer answered for
// each event it did not give.
func (p *pass) fetchEventsNoting(ctx context.Context, ids []string, att *gapAttempt) error {
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.requestsLeft() <= 0 {
			return nil
		}
		for _, peer := range p.r.cfg.Peers.Available(p.endpoint("event")) {
			raw, err := p.event(ctx, peer, id)
			if err != nil {
				p.noteRefusal(peer, "event", id, err)
				att.noteEvent(id, peer, err, "")
				continue
			}
			held, ok, err := p.accept(ctx, peer, "event", []json.RawMessage{raw}, []string{id})
			if err != nil {
				return err
			}
			if ok && held[id] {
				break
			}
			att.noteEvent(id, peer, nil, p.notAccepted(id, ok))
		}
	}
	return nil
}

// notAccepted says why an event a peer gave was not stored.
func (p *pass) notAccepted(id string, answerKept bool) string {
	switch server, keyWait := p.keyWaits[id]; {
	case keyWait:
		return "gave the event; the signing key of " + server + " could not be fetched to verify it"
	case !answerKept:
		return "gave an answer that was discarded as a lie"
	default:
		return "gave the event; it did not verify"
	}
}

// askBackfill asks peer for up to limit events of the room, from want back.
func (p *pass) askBackfill(ctx context.Context, peer string, want []string, limit int) ([]json.RawMessage, error) {
	return ask(ctx, p, peer, "backfill", func(ctx context.Context) ([]json.RawMessage, error) {
		return p.r.cfg.Client.Backfill(ctx, peer, p.roomID, want, limit)
	})
}

// event fetches one event from peer.
func (p *pass) event(ctx context.Context, peer, id string) (json.RawMessage, error) {
	return ask(ctx, p, peer, "event", func(ctx context.Context) (json.RawMessage, error) {
		return p.r.cfg.Client.Event(ctx, peer, id)
	})
}

// closeForwardGap asks for the events between what we held (earliest) and the new heads
// (latest) in one /get_missing_events round; what it leaves is left to backfill.
func (p *pass) closeForwardGap(ctx context.Context, earliest, latest []string) error {
	held, err := p.r.cfg.Store.HasEvents(ctx, latest)
	if err != nil {
		return fmt.Errorf("look up events: %w", err)
	}
	var have []string
	for _, id := range latest {
		if held[id] {
			have = append(have, id)
		}
	}
	if len(have) == 0 {
		return nil
	}
	limit := min(p.r.cfg.Limits.MissingEventsLimit, p.budget)
	for _, peer := range p.r.cfg.Peers.Available(p.endpoint("get_missing_events")) {
		raws, err := ask(ctx, p, peer, "get_missing_events", func(ctx context.Context) ([]json.RawMessage, error) {
			return p.r.cfg.Client.MissingEvents(ctx, peer, p.roomID, earliest, have, limit, p.hist.MinDepth)
		})
		if err != nil || len(raws) == 0 {
			continue
		}
		if _, ok, err := p.accept(ctx, peer, "get_missing_events", raws, nil); err != nil || ok {
			return err
		}
	}
	return nil
}

// backfill fills backward extremities, a few at a time, from the peers in order, until none
// is due within the history bound or the budget is spent. Gaps last attempted before the peer
// set's RetrySince (an earlier run, or before a peer came back) are due whatever their
// back-off said.
func (p *pass) backfill(ctx context.Context) error {
	for p.budget > 0 && p.requestsLeft() > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		peers := p.r.cfg.Peers.Available(p.endpoint("backfill"))
		if len(peers) == 0 {
			// Every peer is backed off: asking nobody is not an attempt on the gaps.
			return nil
		}
		perRequest := p.r.cfg.Limits.BackfillExtremities
		filter := p.hist.BackwardFilter()
		filter.DueBy = p.r.cfg.Now()
		filter.StaleBefore = p.r.cfg.Peers.RetrySince()
		filter.Limit = perRequest * len(peers)
		due, err := p.r.cfg.Store.BackwardExtremities(ctx, p.roomID, filter)
		if err != nil {
			return fmt.Errorf("read backward extremities: %w", err)
		}
		if len(due) == 0 {
			return nil
		}
		if fresh := p.unspread(due); len(peers) > 1 && len(fresh) > 1 {
			if err := p.spread(ctx, fresh, peers); err != nil {
				return err
			}
			continue
		}
		if err := p.fill(ctx, due[:min(len(due), perRequest)]); err != nil {
			return err
		}
	}
	p.res.BudgetExhausted = p.budget <= 0
	return nil
}

// gapAttempt is what one attempt at some gaps learned of the peers.
type gapAttempt struct {
	// answered counts the peers that answered: with events, or that they have none to show.
	answered int
	// refusals are the answers that showed nothing ("peer: not_found").
	refusals []string
	// waiting names each configured peer that was not asked (backed off) or did not answer,
	// with why: the gaps wait for it.
	waiting map[string]string
	// backfill is each configured peer's answer to this attempt's /backfill (or why it was
	// not asked); events, per gap, the answers to the /event that followed for it, which
	// replace the peer's /backfill answer for that gap. What the store keeps (GapAttempts).
	backfill map[string]store.PeerAttempt
	events   map[string]map[string]store.PeerAttempt
	at       time.Time
}

func newGapAttempt(at time.Time) gapAttempt {
	return gapAttempt{waiting: map[string]string{}, backfill: map[string]store.PeerAttempt{},
		events: map[string]map[string]store.PeerAttempt{}, at: at}
}

// noteBackfill records a peer's answer to the /backfill of the attempt: err, or, when the
// peer answered, what became of the answer (detail).
func (a *gapAttempt) noteBackfill(peer string, err error, detail string) {
	a.backfill[peer] = peerAttempt(peer, "backfill", err, detail, a.at)
}

// noteEvent records a peer's answer to /event for one gap. A nil receiver notes nothing
// (fetchEvents outside a gap attempt).
func (a *gapAttempt) noteEvent(id, peer string, err error, detail string) {
	if a == nil {
		return
	}
	if a.events[id] == nil {
		a.events[id] = map[string]store.PeerAttempt{}
	}
	a.events[id][peer] = peerAttempt(peer, "event", err, detail, a.at)
}

// answersFor is what each peer answered for the gap id, by peer name.
func (a *gapAttempt) answersFor(id string) []store.PeerAttempt {
	merged := maps.Clone(a.backfill)
	maps.Copy(merged, a.events[id])
	out := make([]store.PeerAttempt, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, merged[name])
	}
	return out
}

// peerAttempt classifies one answer as the request metrics do.
func peerAttempt(peer, endpoint string, err error, detail string, at time.Time) store.PeerAttempt {
	outcome, _ := federation.Classify(err)
	a := store.PeerAttempt{Peer: peer, Endpoint: endpoint, Outcome: string(outcome), Error: detail, At: at}
	if err != nil {
		a.Error = err.Error()
	}
	return a
}

// fill backfills the given extremities from each peer in turn (what one peer leaves goes to
// the next), then asks for stragglers one by one, and schedules a retry for what stays
// missing.
func (p *pass) fill(ctx context.Context, exts []store.BackwardExtremity) error {
	want := make([]string, len(exts))
	for i, e := range exts {
		want[i] = e.EventID
	}
	limit := min(p.r.cfg.Limits.BackfillLimit, max(p.budget, 1))
	att := newGapAttempt(p.r.cfg.Now())
	asked := map[string]bool{}
	for _, peer := range p.r.cfg.Peers.Available(p.endpoint("backfill")) {
		if len(want) == 0 || ctx.Err() != nil {
			break
		}
		asked[peer] = true
		raws, err := p.askBackfill(ctx, peer, want, limit)
		if err != nil {
			if outcome, _ := federation.Classify(err); outcome == federation.OutcomeNotFound || outcome == federation.OutcomeForbidden {
				// The peer answered: it does not have the events, or will not show them to us.
				att.answered++
				att.refusals = append(att.refusals, fmt.Sprintf("%s: %s", peer, outcome))
			} else {
				att.waiting[peer] = string(outcome)
			}
			att.noteBackfill(peer, err, "")
			continue
		}
		att.answered++
		kept, err := p.follow(ctx, peer, raws)
		if err != nil {
			return err
		}
		detail := fmt.Sprintf("answered %d events, not this one", len(raws))
		if !kept {
			detail = fmt.Sprintf("answered %d events, discarded as a lie", len(raws))
		}
		att.noteBackfill(peer, nil, detail)
		if want, err = p.missing(ctx, want); err != nil {
			return err
		}
	}
	// Stragglers: a peer may serve an event by ID that its backfill did not reach.
	for _, id := range slices.Clone(want) {
		if err := p.fetchEventsNoting(ctx, []string{id}, &att); err != nil {
			return err
		}
	}
	stillMissing, err := p.missing(ctx, want)
	if err != nil {
		return err
	}
	if len(stillMissing) > 0 {
		for _, st := range p.r.cfg.Peers.Status() {
			if !asked[st.ServerName] {
				att.waiting[st.ServerName] = "backed off"
				att.backfill[st.ServerName] = store.PeerAttempt{Peer: st.ServerName, Outcome: "backed_off",
					Error: backedOffDetail(st), At: att.at}
			}
		}
	}
	return p.scheduleRetries(ctx, exts, stillMissing, att)
}

// scheduleRetries records a failed attempt for each extremity still missing, with what it
// waits for. It is unfillable (for now) only when every configured peer answered and none
// had it; a gap whose peer did not answer, or whose events were refused because their
// signing key could not be fetched, waits for that peer or key and is due again as soon as a
// peer comes back (see PeerSet.RetrySince).
func (p *pass) scheduleRetries(ctx context.Context, exts []store.BackwardExtremity, stillMissing []string, att gapAttempt) error {
	if ctx.Err() != nil {
		// The pass was cut short: nothing was learned about these gaps.
		return nil
	}
	missing := map[string]bool{}
	for _, id := range stillMissing {
		missing[id] = true
	}
	now := p.r.cfg.Now()
	for _, e := range exts {
		if !missing[e.EventID] {
			continue
		}
		var err error
		answers := att.answersFor(e.EventID)
		switch server, keyWait := p.keyWaits[e.EventID]; {
		case keyWait:
			err = p.waitFor(ctx, e, now, waitingPrefix+"the signing key of "+server, answers)
		case len(att.waiting) > 0:
			err = p.waitFor(ctx, e, now, waitingPrefix+peersWaitedFor(att.waiting), answers)
		default:
			next := now.Add(backoff(gapRetryBase, gapRetryMax, e.Attempts+1))
			reason := fmt.Sprintf("no peer holds it (%d answered)", att.answered)
			if len(att.refusals) > 0 {
				reason += ": " + strings.Join(att.refusals, ", ")
			}
			err = p.r.cfg.Store.MarkUnfillable(ctx, p.roomID, e.EventID, reason, next, answers...)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("record attempt on %s: %w", e.EventID, err)
		}
		p.log.V(1).Info("Gap not filled; retrying later", "event", e.EventID)
	}
	return nil
}

// waitingPrefix starts the recorded error of a gap that waits for a peer or a key.
const waitingPrefix = "waiting for "

// waitFor records an attempt at a gap that waits for a peer or a key: retried after a short
// back-off, and at once when a peer comes back.
func (p *pass) waitFor(ctx context.Context, e store.BackwardExtremity, now time.Time, reason string, answers []store.PeerAttempt) error {
	next := now.Add(backoff(time.Second, peerBackoffMax, e.Attempts+1))
	if back := p.r.cfg.Peers.NextAvailable(); back.After(next) {
		next = back
	}
	return p.r.cfg.Store.RecordAttemptFailure(ctx, p.roomID, e.EventID, reason, next, answers...)
}

// backedOffDetail says why a peer was not asked, with its last error.
func backedOffDetail(st PeerStatus) string {
	detail := "not asked: backed off"
	if !st.BackoffUntil.IsZero() {
		detail += " until " + st.BackoffUntil.UTC().Format(time.RFC3339)
	}
	if st.LastError != "" {
		detail += " after: " + st.LastError
	}
	return detail
}

// peersWaitedFor says which peers gaps wait for, and why, in a stable order: the text is
// grouped on in status.
func peersWaitedFor(waiting map[string]string) string {
	names := slices.Sorted(maps.Keys(waiting))
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("peer %s (%s)", name, waiting[name])
	}
	return strings.Join(parts, ", ")
}

// summarize reads the room's state after the pass into the result.
func (p *pass) summarize(ctx context.Context, heads []string) error {
	st := p.r.cfg.Store
	room, err := st.Room(ctx, p.roomID)
	if errors.Is(err, store.ErrNotFound) {
		// Nothing could be stored yet (every answer refused, say): an empty room.
		room, err = store.Room{ID: p.roomID}, nil
	}
	if err != nil {
		return fmt.Errorf("read room: %w", err)
	}
	p.res.Room = room
	p.res.RoomVersion = p.version
	if p.res.UnknownHeads, err = p.missing(ctx, heads); err != nil {
		return err
	}
	gaps, err := st.BackwardExtremities(ctx, p.roomID, p.hist.BackwardFilter())
	if err != nil {
		return fmt.Errorf("read backward extremities: %w", err)
	}
	p.res.Gaps = len(gaps)
	waiting := map[string]bool{}
	for _, g := range gaps {
		switch {
		case g.Unfillable:
			p.res.Unfillable++
		case g.Attempts > 0 && strings.HasPrefix(g.LastError, waitingPrefix):
			waiting[strings.TrimPrefix(g.LastError, waitingPrefix)] = true
		}
	}
	for _, head := range p.res.UnknownHeads {
		if server, ok := p.keyWaits[head]; ok {
			waiting["the signing key of "+server] = true
		}
	}
	for _, w := range []string{p.authWaiting, p.stateWaiting} {
		if w != "" {
			waiting[w] = true
		}
	}
	p.res.WaitingFor = slices.Sorted(maps.Keys(waiting))
	p.res.Converged = p.res.PeersAnswered > 0 && len(p.res.UnknownHeads) == 0 && len(gaps) == 0 && room.Events > 0
	return nil
}

// noteRefusal records a 403 that refuses us as a non-member (see refusals): on /backfill or
// /get_missing_events, on make_join (an invite-only room, say), or on /event for eventID, a
// head the peer itself named.
func (p *pass) noteRefusal(peer, endpoint, eventID string, err error) {
	if outcome, _ := federation.Classify(err); outcome != federation.OutcomeForbidden {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case endpoint == "backfill", endpoint == "get_missing_events", endpoint == "make_join",
		endpoint == "event" && p.announced[peer][eventID]:
		p.refusals = append(p.refusals, fmt.Sprintf("%s: %s", peer, err))
	}
}

// endpoint is the key of one of the room's endpoints in the peer set. A bad answer (5xx, a
// lie) backs off the peer's endpoint for the room it was about, not for the sync's other
// rooms: a peer may serve one room well and fail another (Dendrite answers make_join with
// 500 for a room it does not hold), and one room's failures must not starve the others of
// that peer. A peer that cannot be reached is still backed off whole.
func (p *pass) endpoint(name string) string { return name + " " + p.roomID }

// ask runs one federation request with its bookkeeping: peer health, counts, timing.
func ask[T any](ctx context.Context, p *pass, peer, endpoint string, do func(context.Context) (T, error)) (T, error) {
	start := time.Now()
	v, err := do(ctx)
	outcome, retryAfter := federation.Classify(err)
	if err != nil && ctx.Err() != nil {
		// Our pass ended (its deadline, a shutdown): say nothing of the peer's health.
		outcome, retryAfter = federation.OutcomeCanceled, 0
	}
	p.r.cfg.Peers.Record(peer, p.endpoint(endpoint), outcome, retryAfter, err)
	p.r.cfg.Observer.Request(peer, endpoint, outcome, time.Since(start))
	p.log.V(2).Info("Federation request", "peer", peer, "endpoint", endpoint, "took", time.Since(start).String())
	p.noteRefusal(peer, endpoint, "", err)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Requests++
	if err != nil && !errors.Is(context.Cause(ctx), errChainStopped) {
		p.res.Err = fmt.Errorf("%s from %s: %w", endpoint, peer, err)
		p.log.V(1).Info("Federation request failed", "peer", peer, "endpoint", endpoint, "outcome", string(outcome), "error", err.Error())
	}
	return v, err
}

package resolver

import (
	"context"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// The state of the room at each stored event, and the authorization rules.
//
// Once an event's prev events all have their state, its state before is known: the state
// after its single prev, or the resolution of the states after its prevs where the DAG merges.
// The event is then checked against the authorization rules twice, as the spec's checks on
// receipt say: against its own auth events, then against the state before it. An event that
// fails is kept, flagged with the rule it broke, and never enters a state. Events are taken
// in topological order, as far as the held DAG allows: one whose ancestry has a hole waits
// until the hole is filled. State is derived from the stored events alone, so it is computed
// after they are stored, in its own transactions: a crash in between leaves events without
// state that the next computation picks up.

// Reasons of the events the authorization rules reject (see RoomResult.Rejected).
const (
	// RejectAuthEvents: the event is not allowed by its own auth events.
	RejectAuthEvents RejectReason = "auth_events"
	// RejectAuthState: the event is not allowed by the room state before it.
	RejectAuthState RejectReason = "auth_state"
)

const (
	// statePageSize is how many events without state are read at a time.
	statePageSize = 500
	// stateGroupBlock is how many state group numbers are reserved at a time.
	stateGroupBlock = 64
	// maxStateChain bounds the deltas between a state group and a whole one, and so the reads
	// that rebuild a group.
	maxStateChain = 32
	// maxCachedStates bounds the room states kept in memory between computations of a room,
	// and maxCachedStateEntries their entries together: a room of 10,000 members has states
	// of 10,000 entries, and 256 of them would take hundreds of MiB.
	maxCachedStates       = 256
	maxCachedStateEntries = 1 << 17
	// maxCachedAuthEvents bounds the parsed state events kept for the authorization checks.
	maxCachedAuthEvents = 20000
	// maxKnownStates bounds the event states a computation keeps at hand; past it, what was
	// saved is forgotten and read again from the store when a prev needs it, so a
	// computation over a whole room (a first sync) holds a few pages, not the room.
	maxKnownStates = 8 * statePageSize
)

// stateSupported says whether the state and authorization of rooms of version are computed:
// mautrix's authorization rules take the PDU format of room versions 3 and later.
func stateSupported(version string) bool {
	v := id.RoomVersion(version)
	return v.IsKnown() && v.EventIDFormat() != id.EventIDFormatCustom
}

// roomStates is what the resolver keeps between state computations of one room: the room
// states it built or read (by state group) and the events it parsed for authorization.
type roomStates struct {
	mu     sync.Mutex // one computation of a room at a time
	groups map[int64]stateres.StateMap
	chains map[int64]int
	// entries counts the entries of the states in groups; pduCount the parsed events.
	entries  cacheCount
	pdus     map[id.EventID]*pdu.PDU
	pduCount cacheCount
	pool     []int64 // reserved group numbers
	// used orders the rooms by their last computation, for trimStateCaches.
	used atomic.Uint64
}

func (r *Resolver) roomStates(roomID string) *roomStates {
	r.statesMu.Lock()
	defer r.statesMu.Unlock()
	if r.states == nil {
		r.states = map[string]*roomStates{}
	}
	rs := r.states[roomID]
	if rs == nil {
		rs = newRoomStates(&r.cachedEntries)
		r.states[roomID] = rs
	}
	r.stateUses++
	rs.used.Store(r.stateUses)
	return rs
}

// forgetStates empties the cache of room states.
func (rs *roomStates) forgetStates() {
	clear(rs.groups)
	clear(rs.chains)
	rs.entries.reset()
}

func newRoomStates(total *atomic.Int64) *roomStates {
	return &roomStates{groups: map[int64]stateres.StateMap{}, chains: map[int64]int{}, pdus: map[id.EventID]*pdu.PDU{},
		entries: cacheCount{total: total}, pduCount: cacheCount{total: total}}
}

// maxAuthFetches bounds the missing auth events one pass fetches.
const maxAuthFetches = 100

// computeState advances the room state (see advanceState). Auth events it finds missing, which
// an event may name outside its own ancestry, are fetched from the peers and the computation
// runs again; what no peer gives is what the room's state waits for.
func (p *pass) computeState(ctx context.Context) error {
	if err := p.fetchBoundaryStates(ctx); err != nil {
		return err
	}
	missing, err := p.advanceState(ctx)
	if err != nil || len(missing) == 0 {
		return err
	}
	if err := p.fetchEvents(ctx, missing[:min(len(missing), maxAuthFetches)]); err != nil {
		return err
	}
	if missing, err = p.advanceState(ctx); len(missing) > 0 {
		p.authWaiting = fmt.Sprintf("%d auth events no peer gave (%s first)", len(missing), missing[0])
	}
	return err
}

// advanceState computes the state and authorization of every held event of the pass's room
// whose ancestry is complete, counts the rejected ones in the result, and says there whose
// word the boundary states are. It returns the auth events that events wait for because they
// are not held.
func (p *pass) advanceState(ctx context.Context) ([]string, error) {
	if p.r.cfg.NoState || !stateSupported(p.version) {
		return nil, nil
	}
	// Every state starts from the create event, or in a bounded history from the state a
	// peer said it begins with: until then no event can have one, and a backfill that has not
	// reached it need not look.
	room, err := p.r.cfg.Store.Room(ctx, p.roomID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // nothing stored yet
	}
	if err != nil {
		return nil, err
	}
	boundary, err := p.r.cfg.Store.BoundaryStates(ctx, p.roomID)
	if err != nil {
		return nil, err
	}
	p.res.StateFrom = stateFrom(boundary)
	if room.CreateEventID == "" && len(boundary) == 0 {
		return nil, nil
	}
	rs := p.r.roomStates(p.roomID)
	rs.mu.Lock()
	defer p.r.trimStateCaches() // after the unlock below: this room's caches are the newest
	defer rs.mu.Unlock()
	c := &stateComputation{p: p, rs: rs, version: id.RoomVersion(p.version), known: map[string]store.EventState{},
		missingAuth: map[string]bool{}, boundary: boundary}
	err = c.run(ctx)
	return slices.Sorted(maps.Keys(c.missingAuth)), err
}

// stateComputation is one advanceState.
type stateComputation struct {
	p       *pass
	rs      *roomStates
	version id.RoomVersion
	// known holds the state of the events computed or read in this computation.
	known map[string]store.EventState
	// What the current page adds, saved together.
	groups  []store.StateGroup
	results []store.EventState
	// missingAuth are auth events that events wait for.
	missingAuth map[string]bool
	// boundary are the states after events not held, as peers said them.
	boundary map[string]store.BoundaryState
}

func (c *stateComputation) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	// Unbuffered: the reader holds one page ahead of the one computed, no more.
	pages := make(chan statePage)
	var reader sync.WaitGroup
	reader.Go(func() { c.readAhead(ctx, pages) })
	defer func() {
		cancel()
		for range pages {
			// Drained so the reader, cancelled, can end.
		}
		reader.Wait()
	}()
	for pg := range pages {
		if pg.err != nil {
			return pg.err
		}
		if err := c.readPrevStates(ctx, pg.events); err != nil {
			return err
		}
		for i, ev := range pg.events {
			if err := c.compute(ctx, ev, pg.parsed[i]); err != nil {
				return fmt.Errorf("state at %s: %w", ev.ID, err)
			}
		}
		if err := c.flush(ctx); err != nil {
			return err
		}
		if len(c.known) > maxKnownStates {
			// All of it is saved: readPrevStates reads back what the next pages need.
			clear(c.known)
		}
	}
	return ctx.Err()
}

// statePage is a page of events without state, each parsed (nil where it does not parse), or
// why it could not be read.
type statePage struct {
	events []store.Event
	parsed []*pdu.PDU
	err    error
}

// readAhead reads and parses the pages of events without state, in order, while the page
// before is computed and saved: which events come next depends on the cursor alone, not on
// what the computation of the page before decides. It closes pages when it is done.
func (c *stateComputation) readAhead(ctx context.Context, pages chan<- statePage) {
	defer close(pages)
	var after *store.Position
	// Bounded by the room: each page moves the cursor forward.
	for {
		events, err := c.p.r.cfg.Store.EventsWithoutState(ctx, c.p.roomID, after, statePageSize)
		if err == nil && len(events) == 0 {
			return
		}
		pg := statePage{events: events, err: err}
		if err == nil {
			pg.parsed = make([]*pdu.PDU, len(events))
			for i, ev := range events {
				// A failure is reported by compute, which parses the JSON again; a page
				// parsed keeps the parse alone, so that the page waiting costs half.
				if pg.parsed[i], _ = parseStored(ev.ID, ev.Raw); pg.parsed[i] != nil {
					events[i].Raw = nil
				}
			}
		}
		select {
		case pages <- pg:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
		last := events[len(events)-1]
		after = &store.Position{Depth: last.Depth, EventID: last.ID}
	}
}

// readPrevStates reads the state of the page's prev events that this computation has not seen.
func (c *stateComputation) readPrevStates(ctx context.Context, page []store.Event) error {
	// A prev in the page itself is computed before the events that name it (the page is in
	// topological order), so only the prevs outside the page are read.
	skip := make(map[string]bool, len(page))
	for _, ev := range page {
		skip[ev.ID] = true
	}
	var ids []string
	for _, ev := range page {
		for _, prev := range ev.PrevEvents {
			if _, ok := c.known[prev]; !ok && !skip[prev] {
				skip[prev] = true // asked once
				ids = append(ids, prev)
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	states, err := c.p.r.cfg.Store.EventStates(ctx, ids)
	if err != nil {
		return err
	}
	for id, s := range states {
		if s.Before > 0 {
			c.known[id] = s
		}
	}
	for _, id := range ids {
		if b, ok := c.boundary[id]; ok {
			if _, computed := c.known[id]; !computed {
				c.known[id] = store.EventState{EventID: id, Before: b.Group, After: b.Group}
			}
		}
	}
	return nil
}

// compute finds the state before ev and checks ev against the rules, if its prevs all have
// their state; otherwise ev waits.
func (c *stateComputation) compute(ctx context.Context, ev store.Event, parsed *pdu.PDU) error {
	evt, err := c.parsed(ev.ID, ev.Raw, parsed)
	if err != nil {
		// Verified before it was stored: a PDU that does not parse now is a bug, not a peer.
		return err
	}
	var before int64
	var beforeState stateres.StateMap
	if len(ev.PrevEvents) == 0 {
		// The create event, or an event that claims to begin the room: both start from
		// nothing, and the rules decide.
		beforeState = stateres.StateMap{}
		if before, err = c.newGroup(ctx, 0, nil, beforeState); err != nil {
			return err
		}
	} else {
		var afters []int64
		for _, prev := range ev.PrevEvents {
			s, ok := c.known[prev]
			if !ok {
				return nil // a prev without state (or not held): wait
			}
			if !slices.Contains(afters, s.After) {
				afters = append(afters, s.After)
			}
		}
		if before, beforeState, err = c.merge(ctx, afters); err != nil {
			if errors.Is(err, stateres.ErrMissingEvent) {
				c.p.log.V(1).Info("State resolution waits for missing events", "event", ev.ID, "error", err.Error())
				return nil
			}
			return err
		}
	}

	if missing, err := c.missingAuthEvents(ctx, evt); err != nil || len(missing) > 0 {
		for _, m := range missing {
			c.missingAuth[string(m)] = true
		}
		return err
	}
	kind, broken := c.authorize(ctx, evt, beforeState)
	reason := ""
	if kind != "" {
		reason = fmt.Sprintf("%s: %v", kind, broken)
	}
	after := before
	if reason == "" && evt.StateKey != nil {
		afterState := maps.Clone(beforeState)
		afterState[pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}] = id.EventID(ev.ID)
		if after, err = c.newGroup(ctx, before, beforeState, afterState); err != nil {
			return err
		}
	}
	if reason != "" {
		evt.InternalMeta.Rejected = true
		c.p.res.Rejected[kind]++
		c.p.r.cfg.Observer.Rejected(c.p.roomID, kind, 1)
		c.p.log.V(1).Info("Event rejected by the authorization rules", "event", ev.ID, "rule", reason)
	}
	s := store.EventState{EventID: ev.ID, Before: before, After: after, Rejected: reason}
	c.known[ev.ID] = s
	c.results = append(c.results, s)
	return nil
}

// merge returns the state group after the prevs whose state-after groups are afters: the one
// group, or the resolution of their states (a group of its own unless it equals one of them).
func (c *stateComputation) merge(ctx context.Context, afters []int64) (int64, stateres.StateMap, error) {
	states := make([]stateres.StateMap, len(afters))
	for i, g := range afters {
		s, err := c.loadGroup(ctx, g)
		if err != nil {
			return 0, nil, err
		}
		states[i] = s
	}
	if len(afters) == 1 {
		return afters[0], states[0], nil
	}
	resolved, err := stateres.Resolve(ctx, c.version, states, c.loadPDUs)
	if err != nil {
		return 0, nil, err
	}
	for i, s := range states {
		if maps.Equal(s, resolved) {
			return afters[i], s, nil
		}
	}
	g, err := c.newGroup(ctx, afters[0], states[0], resolved)
	return g, resolved, err
}

// authorize checks evt against its auth events, then against the state before it (see
// Authorize), with the events of this computation.
func (c *stateComputation) authorize(ctx context.Context, evt *pdu.PDU, before stateres.StateMap) (RejectReason, error) {
	return Authorize(ctx, c.version, evt, before, func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
		return c.loadPDUs(ctx, ids)
	}, c.getKey(ctx))
}

// Authorize applies the spec's checks on receipt to evt, a PDU whose signatures and hashes
// verified: the authorization rules against its own auth events, then against before, the
// room state before it. It says which check failed and the rule broken (kind "" when none).
// load returns the held events among the IDs asked, with their rejection.
func Authorize(ctx context.Context, version id.RoomVersion, evt *pdu.PDU, before stateres.StateMap, load stateres.Loader, getKey pdu.GetKeyFunc) (RejectReason, error) {
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		found, err := load(ctx, ids)
		if err != nil {
			return nil, err
		}
		byID := make(map[id.EventID]*pdu.PDU, len(found))
		for _, e := range found {
			byID[e.InternalMeta.EventID] = e
		}
		// Authorize wants the events in the order asked, nil where one is missing.
		out := make([]*pdu.PDU, len(ids))
		for i, id := range ids {
			out[i] = byID[id]
		}
		return out, nil
	}
	if err := eventauth.Authorize(version, evt, nil, getEvents, getKey); err != nil {
		return RejectAuthEvents, err
	}
	if evt.Type == "m.room.create" {
		return "", nil
	}
	var ids []id.EventID
	for _, k := range evt.AuthEventSelection(version) {
		if e, ok := before[k]; ok {
			ids = append(ids, e)
		}
	}
	authEvents, err := load(ctx, ids)
	if err != nil {
		return RejectAuthState, err
	}
	if err := eventauth.Authorize(version, evt, authEvents, getEvents, getKey); err != nil {
		return RejectAuthState, err
	}
	return "", nil
}

// missingAuthEvents are the auth events of evt that are not held: the rules cannot be judged
// without them, so the event waits rather than being rejected.
func (c *stateComputation) missingAuthEvents(ctx context.Context, evt *pdu.PDU) ([]id.EventID, error) {
	want := slices.Clone(evt.AuthEvents)
	if c.version.RoomIDIsCreateEventID() && evt.Type != "m.room.create" {
		want = append(want, id.EventID("$"+strings.TrimPrefix(string(evt.RoomID), "!")))
	}
	held, err := c.loadPDUs(ctx, want)
	if err != nil || len(held) == len(want) {
		return nil, err
	}
	have := map[id.EventID]bool{}
	for _, e := range held {
		have[e.InternalMeta.EventID] = true
	}
	var missing []id.EventID
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	return missing, nil
}

// getKey adapts the resolver's key lookup for third-party invite signatures.
func (c *stateComputation) getKey(ctx context.Context) pdu.GetKeyFunc {
	return func(server string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
		return c.p.r.cfg.Keys(ctx, server, keyID, minValidUntil)
	}
}

// loadPDUs returns the held events among ids, parsed, with their rejection: from this
// computation, the cache, or the store.
func (c *stateComputation) loadPDUs(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	var missing []string
	for _, id := range ids {
		if e, ok := c.rs.pdus[id]; ok {
			out = append(out, e)
		} else {
			missing = append(missing, string(id))
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	held, err := c.p.r.cfg.Store.Events(ctx, missing)
	if err != nil {
		return nil, err
	}
	for _, ev := range held {
		rejected := ev.Rejected
		if s, ok := c.known[ev.ID]; ok {
			rejected = s.Rejected
		}
		e, err := c.parse(ev.ID, ev.Raw, rejected)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// parse reads a stored PDU and caches it.
func (c *stateComputation) parse(eventID string, raw []byte, rejected string) (*pdu.PDU, error) {
	if e, ok := c.rs.pdus[id.EventID(eventID)]; ok {
		return e, nil
	}
	e, err := parseStored(eventID, raw)
	if err != nil {
		return nil, err
	}
	e.InternalMeta.Rejected = rejected != ""
	c.keep(e)
	return e, nil
}

// parsed is parse of an event without state (not rejected yet), with e its parse ahead of
// time (nil if it failed).
func (c *stateComputation) parsed(eventID string, raw []byte, e *pdu.PDU) (*pdu.PDU, error) {
	if cached, ok := c.rs.pdus[id.EventID(eventID)]; ok {
		return cached, nil
	}
	if e == nil {
		return c.parse(eventID, raw, "")
	}
	c.keep(e)
	return e, nil
}

// keep caches a parsed state event: only state events are ever auth events or resolved, and
// a message is checked once.
func (c *stateComputation) keep(e *pdu.PDU) {
	if e.StateKey == nil {
		return
	}
	if len(c.rs.pdus) >= maxCachedAuthEvents {
		clear(c.rs.pdus)
		c.rs.pduCount.reset()
	}
	c.rs.pdus[e.InternalMeta.EventID] = e
	c.rs.pduCount.add(1)
}

// parseStored parses a PDU the store holds.
func parseStored(eventID string, raw []byte) (*pdu.PDU, error) {
	var e pdu.PDU
	if err := jsonv2.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", eventID, err)
	}
	e.InternalMeta.EventID = id.EventID(eventID)
	return &e, nil
}

// loadGroup returns the whole state of a group, rebuilt from its deltas.
func (c *stateComputation) loadGroup(ctx context.Context, no int64) (stateres.StateMap, error) {
	if s, ok := c.rs.groups[no]; ok {
		return s, nil
	}
	// A group of this page may have left the cache (a forked room makes many): save the
	// page so far, so the store has it.
	if len(c.groups) > 0 {
		if err := c.flush(ctx); err != nil {
			return nil, err
		}
	}
	g, err := c.p.r.cfg.Store.StateGroup(ctx, c.p.roomID, no)
	if err != nil {
		return nil, err
	}
	state := stateres.StateMap{}
	if g.PrevGroup > 0 {
		base, err := c.loadGroup(ctx, g.PrevGroup)
		if err != nil {
			return nil, err
		}
		state = maps.Clone(base)
	}
	for k, e := range g.Entries {
		key := pdu.StateKey{Type: k.Type, StateKey: k.StateKey}
		if e == "" {
			delete(state, key)
		} else {
			state[key] = id.EventID(e)
		}
	}
	c.cache(no, state, g.Chain)
	return state, nil
}

func (c *stateComputation) cache(no int64, state stateres.StateMap, chain int) {
	if len(c.rs.groups) >= maxCachedStates || c.rs.entries.n+int64(len(state)) > maxCachedStateEntries {
		c.rs.forgetStates()
	}
	c.rs.groups[no] = state
	c.rs.chains[no] = chain
	c.rs.entries.add(len(state))
}

// newGroup records state as a new group: a delta from base (whose state is baseState) while
// the chain of deltas stays short, else whole.
func (c *stateComputation) newGroup(ctx context.Context, base int64, baseState, state stateres.StateMap) (int64, error) {
	no, err := c.allocate(ctx)
	if err != nil {
		return 0, err
	}
	g := store.StateGroup{No: no, Entries: map[store.StateKey]string{}}
	chain, cached := c.rs.chains[base]
	if base > 0 && cached && chain < maxStateChain {
		g.PrevGroup, g.Chain = base, chain+1
		for k, e := range state {
			if baseState[k] != e {
				g.Entries[store.StateKey{Type: k.Type, StateKey: k.StateKey}] = string(e)
			}
		}
		for k := range baseState {
			if _, ok := state[k]; !ok {
				g.Entries[store.StateKey{Type: k.Type, StateKey: k.StateKey}] = ""
			}
		}
	} else {
		for k, e := range state {
			g.Entries[store.StateKey{Type: k.Type, StateKey: k.StateKey}] = string(e)
		}
	}
	c.groups = append(c.groups, g)
	c.cache(no, state, g.Chain)
	return no, nil
}

func (c *stateComputation) allocate(ctx context.Context) (int64, error) {
	if len(c.rs.pool) == 0 {
		first, err := c.p.r.cfg.Store.AllocateStateGroups(ctx, c.p.roomID, stateGroupBlock)
		if err != nil {
			return 0, err
		}
		for i := range int64(stateGroupBlock) {
			c.rs.pool = append(c.rs.pool, first+i)
		}
	}
	no := c.rs.pool[0]
	c.rs.pool = c.rs.pool[1:]
	return no, nil
}

// flush saves the page's groups and event states in one transaction.
func (c *stateComputation) flush(ctx context.Context) error {
	if len(c.results) == 0 && len(c.groups) == 0 {
		return nil
	}
	if err := c.p.r.cfg.Store.SaveState(ctx, c.p.roomID, c.groups, c.results); err != nil {
		// What this computation cached may not be stored: forget it.
		c.rs.forgetStates()
		return err
	}
	c.groups, c.results = c.groups[:0], c.results[:0]
	return nil
}

// StateBefore returns the room state before a stored event, as the state computation recorded
// it, and the event's own state record (its rejection). An event whose state is not computed
// yet (its ancestry has a hole, or the room's version is not supported) is an error.
func StateBefore(ctx context.Context, st store.Store, eventID string) (stateres.StateMap, store.EventState, error) {
	return stateAround(ctx, st, eventID, false)
}

// StateAfter is StateBefore for the state after the event: the same, with the event itself
// when it is an accepted state event.
func StateAfter(ctx context.Context, st store.Store, eventID string) (stateres.StateMap, store.EventState, error) {
	return stateAround(ctx, st, eventID, true)
}

func stateAround(ctx context.Context, st store.Store, eventID string, after bool) (stateres.StateMap, store.EventState, error) {
	events, err := st.Events(ctx, []string{eventID})
	if err != nil {
		return nil, store.EventState{}, err
	}
	ev, ok := events[eventID]
	if !ok {
		return nil, store.EventState{}, fmt.Errorf("event %s: %w", eventID, store.ErrNotFound)
	}
	states, err := st.EventStates(ctx, []string{eventID})
	if err != nil {
		return nil, store.EventState{}, err
	}
	s := states[eventID]
	if s.Before == 0 {
		return nil, s, fmt.Errorf("the state at %s is not computed: an event before it is missing, or its room version is not supported", eventID)
	}
	group := s.Before
	if after {
		group = s.After
	}
	r := &Resolver{cfg: Config{Store: st}}
	c := &stateComputation{p: &pass{r: r, roomID: ev.RoomID}, rs: newRoomStates(&r.cachedEntries)}
	state, err := c.loadGroup(ctx, group)
	return state, s, err
}

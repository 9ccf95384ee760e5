package resolver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// History visibility: which events another server may see in full. A server is first
// admitted to the room at all (its users joined in the room's current state, see admit);
// then each event is judged on the room's m.room.history_visibility in the state before the
// event and on the requesting server's memberships in the state after it, as Synapse's
// filter_events_for_server does (the state after, so that a server sees its own user's join).
// An event the server may not see is served redacted, not dropped: its ID, signatures and
// place in the DAG still verify, and the DAG has no hole.

// History visibility values.
const (
	visibilityWorldReadable = "world_readable"
	visibilityShared        = "shared"
	visibilityInvited       = "invited"
	visibilityJoined        = "joined"
)

// serverMembership is the strongest membership any user of one server has in a room state.
type serverMembership int

const (
	serverAbsent serverMembership = iota
	serverInvited
	serverJoined
)

// visibleTo decides whether a server whose users' strongest membership at the event is m
// sees an event whose room had history visibility visibility before it. Shared, world
// readable, and any value the spec does not define ask nothing more than being in the room
// now, which admit checked (Synapse and Dendrite read unknown values as shared).
func visibleTo(visibility string, m serverMembership) bool {
	switch visibility {
	case visibilityInvited:
		return m >= serverInvited
	case visibilityJoined:
		return m == serverJoined
	}
	return true
}

// maxCachedFacts bounds the event contents and per-group answers the serving side keeps.
const maxCachedFacts = 100_000

// stateFacts answers the two questions visibility asks of a room state: its history
// visibility, and a server's membership. Both read a few events' contents, kept by event
// ID (an event's content never changes in the fields read: redaction keeps membership and
// history_visibility), and the answers per state group.
type stateFacts struct {
	st     store.Store
	groups *groupCache

	mu          sync.Mutex
	fields      map[string]string // event ID → its membership or history_visibility
	visibility  map[groupKey]string
	memberships map[memberKey]serverMembership
}

type memberKey struct {
	group  groupKey
	server string
}

func newStateFacts(st store.Store, groups *groupCache) *stateFacts {
	return &stateFacts{st: st, groups: groups, fields: map[string]string{},
		visibility: map[groupKey]string{}, memberships: map[memberKey]serverMembership{}}
}

// groupVisibility is the history visibility of a state group.
func (f *stateFacts) groupVisibility(ctx context.Context, room string, no int64) (string, error) {
	key := groupKey{room, no}
	f.mu.Lock()
	v, ok := f.visibility[key]
	f.mu.Unlock()
	if ok {
		return v, nil
	}
	state, err := f.groups.load(ctx, room, no)
	if err != nil {
		return "", err
	}
	if v, err = f.stateVisibility(ctx, state); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.visibility) >= maxCachedFacts {
		clear(f.visibility)
	}
	f.visibility[key] = v
	return v, nil
}

// groupMembership is server's membership in a state group.
func (f *stateFacts) groupMembership(ctx context.Context, room string, no int64, server string) (serverMembership, error) {
	key := memberKey{groupKey{room, no}, server}
	f.mu.Lock()
	m, ok := f.memberships[key]
	f.mu.Unlock()
	if ok {
		return m, nil
	}
	state, err := f.groups.load(ctx, room, no)
	if err != nil {
		return serverAbsent, err
	}
	if m, err = f.stateMembership(ctx, state, server); err != nil {
		return serverAbsent, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.memberships) >= maxCachedFacts {
		clear(f.memberships)
	}
	f.memberships[key] = m
	return m, nil
}

// stateVisibility is the history visibility of a room state: "shared" when it has none, the
// spec's default.
func (f *stateFacts) stateVisibility(ctx context.Context, state stateres.StateMap) (string, error) {
	evID, ok := state[pdu.StateKey{Type: "m.room.history_visibility"}]
	if !ok {
		return visibilityShared, nil
	}
	fields, err := f.readFields(ctx, []string{string(evID)}, "history_visibility")
	if err != nil {
		return "", err
	}
	if v := fields[string(evID)]; v != "" {
		return v, nil
	}
	return visibilityShared, nil
}

// stateMembership is the strongest membership of server's users in a room state. It looks
// at every member key of the state, which is the state's size in memory, and reads only the
// member events of that server.
func (f *stateFacts) stateMembership(ctx context.Context, state stateres.StateMap, server string) (serverMembership, error) {
	var ids []string
	for k, evID := range state {
		if k.Type == "m.room.member" && id.UserID(k.StateKey).Homeserver() == server {
			ids = append(ids, string(evID))
		}
	}
	if len(ids) == 0 {
		return serverAbsent, nil
	}
	fields, err := f.readFields(ctx, ids, "membership")
	if err != nil {
		return serverAbsent, err
	}
	best := serverAbsent
	for _, m := range fields {
		switch m {
		case "join":
			return serverJoined, nil
		case "invite":
			best = serverInvited
		}
	}
	return best, nil
}

// readFields returns content.<field> of each of ids, from the cache or the store.
func (f *stateFacts) readFields(ctx context.Context, ids []string, field string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	var missing []string
	f.mu.Lock()
	for _, evID := range ids {
		if v, ok := f.fields[evID]; ok {
			out[evID] = v
		} else {
			missing = append(missing, evID)
		}
	}
	f.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	events, err := f.st.Events(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("read %d state events: %w", len(missing), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.fields)+len(events) > maxCachedFacts {
		clear(f.fields)
	}
	for evID, ev := range events {
		v := gjson.GetBytes(ev.Raw, "content."+field).Str
		f.fields[evID] = v
		out[evID] = v
	}
	return out, nil
}

// presented is an event as one server may see it.
type presented struct {
	raw      json.RawMessage
	redacted bool // redacted for this server (not as stored)
}

// present returns events as origin may see them, in the same order: the stored bytes, or a
// redacted copy of those origin may not see. An event whose state is not computed yet (its
// ancestry has a hole) is judged on the nearest states its ancestors have (see
// nearestStates): it is shown only if every one of them shows it, and redacted when none is
// found. That can hide an event a server may see, never show one it may not.
func (r *Replica) present(ctx context.Context, room *roomView, origin string, events []store.Event) ([]presented, error) {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
	states, err := r.st.EventStates(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("read the state of %d events: %w", len(ids), err)
	}
	// The state an event without its own is judged on, found once for all of them.
	var stateless []string
	for _, ev := range events {
		if states[ev.ID].Before == 0 {
			stateless = append(stateless, ev.ID)
		}
	}
	var nearest []int64
	if len(stateless) > 0 {
		if nearest, err = nearestStates(ctx, r.st, room.id, stateless); err != nil {
			return nil, err
		}
	}
	out := make([]presented, len(events))
	for i, ev := range events {
		out[i].raw = ev.Raw
		if ev.Redacted {
			continue // held redacted: nothing more to hide
		}
		var ok bool
		if s := states[ev.ID]; s.Before > 0 {
			ok, err = r.visibleAt(ctx, room.id, s.Before, s.After, origin)
		} else {
			ok, err = r.visibleAtAll(ctx, room.id, nearest, origin)
		}
		if err != nil {
			return nil, fmt.Errorf("history visibility of %s: %w", ev.ID, err)
		}
		if ok {
			continue
		}
		if out[i].raw, err = redactedCopy(room.version, ev.Raw); err != nil {
			return nil, fmt.Errorf("redact %s: %w", ev.ID, err)
		}
		out[i].redacted = true
	}
	return out, nil
}

// visibleAt applies visibleTo to an event whose state before is group before and after is
// group after.
func (r *Replica) visibleAt(ctx context.Context, room string, before, after int64, origin string) (bool, error) {
	v, err := r.facts.groupVisibility(ctx, room, before)
	if err != nil {
		return false, err
	}
	if v != visibilityInvited && v != visibilityJoined {
		return true, nil // no membership to look up
	}
	m, err := r.facts.groupMembership(ctx, room, after, origin)
	if err != nil {
		return false, err
	}
	return visibleTo(v, m), nil
}

// visibleAtAll is visibleAt in each of groups (states after), all of which must show the
// event; none shows nothing.
func (r *Replica) visibleAtAll(ctx context.Context, room string, groups []int64, origin string) (bool, error) {
	if len(groups) == 0 {
		return false, nil
	}
	for _, g := range groups {
		ok, err := r.visibleAt(ctx, room, g, g, origin)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// maxNearestReads bounds the ancestors read to find the state of events whose own is not
// computed.
const maxNearestReads = 200

// nearestStates walks back from events (of room) whose state is not computed to the nearest
// ancestors whose state is, and returns their state-after groups, sorted. The walk reads at
// most maxNearestReads events; none found within it is an empty answer.
func nearestStates(ctx context.Context, st store.Store, room string, events []string) ([]int64, error) {
	seen := map[string]bool{}
	for _, e := range events {
		seen[e] = true
	}
	frontier := slices.Clone(events)
	var groups []int64
	for reads := 0; len(frontier) > 0 && reads < maxNearestReads; {
		frontier = frontier[:min(len(frontier), maxNearestReads-reads)]
		reads += len(frontier)
		held, err := st.Events(ctx, frontier)
		if err != nil {
			return nil, fmt.Errorf("read ancestors: %w", err)
		}
		var prevs []string
		for _, ev := range held {
			if ev.RoomID != room {
				continue
			}
			for _, p := range ev.PrevEvents {
				if !seen[p] {
					seen[p] = true
					prevs = append(prevs, p)
				}
			}
		}
		if len(prevs) == 0 {
			break
		}
		states, err := st.EventStates(ctx, prevs)
		if err != nil {
			return nil, fmt.Errorf("read the state of ancestors: %w", err)
		}
		frontier = frontier[:0]
		for _, p := range prevs {
			if s, ok := states[p]; ok && s.Before > 0 {
				if !slices.Contains(groups, s.After) {
					groups = append(groups, s.After)
				}
			} else if ok {
				frontier = append(frontier, p)
			}
		}
	}
	slices.Sort(groups)
	return groups, nil
}

// redactedCopy is the redacted form of a stored PDU under the room version's rules, as
// canonical JSON: what a server that may not see the event gets. The signatures stay, and
// verify, since they cover the redacted form.
func redactedCopy(version id.RoomVersion, raw []byte) (json.RawMessage, error) {
	var redacted any
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var p pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("parse stored PDU: %w", err)
		}
		redacted = p.Redact(version)
	} else {
		var p pdu.PDU
		if err := jsonv2.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("parse stored PDU: %w", err)
		}
		redacted = p.Redact(version)
	}
	out, err := canonicaljson.Marshal(redacted)
	if err != nil {
		return nil, fmt.Errorf("encode redacted PDU: %w", err)
	}
	return out, nil
}

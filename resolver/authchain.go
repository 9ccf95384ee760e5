package resolver

import (
	"cmp"
	"context"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// Auth chains: every event reachable from some events through auth_events, one step or more,
// what /state, /state_ids and /event_auth answer beside the events themselves. The auth
// events are read from the stored PDUs and kept by event ID (they never change), so a chain
// asked again, or one that shares most of its events with another (the same room's state at
// two events), costs few reads.

// maxCachedAuthNodes bounds the events whose auth events the serving side keeps (a few
// hundred bytes each).
const maxCachedAuthNodes = 200_000

// authNode is what an auth chain needs of one held event.
type authNode struct {
	room     string
	depth    int64
	auth     []string
	rejected bool
	create   bool
}

type authCache struct {
	mu    sync.Mutex
	nodes map[string]authNode
}

func newAuthCache() *authCache { return &authCache{nodes: map[string]authNode{}} }

// lookup returns the held events among ids as auth nodes, reading those not cached.
func (c *authCache) lookup(ctx context.Context, st store.Store, ids []string) (map[string]authNode, error) {
	out := make(map[string]authNode, len(ids))
	var missing []string
	c.mu.Lock()
	for _, evID := range ids {
		if n, ok := c.nodes[evID]; ok {
			out[evID] = n
		} else {
			missing = append(missing, evID)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	held, err := st.Events(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("read %d auth events: %w", len(missing), err)
	}
	read := make(map[string]authNode, len(held))
	for evID, ev := range held {
		auth, err := authEventsOf(ev.Raw)
		if err != nil {
			return nil, fmt.Errorf("auth events of %s: %w", evID, err)
		}
		read[evID] = authNode{room: ev.RoomID, depth: ev.Depth, auth: auth, rejected: ev.Rejected != "", create: ev.Type == "m.room.create"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.nodes)+len(read) > maxCachedAuthNodes {
		clear(c.nodes)
	}
	for evID, n := range read {
		c.nodes[evID] = n
		out[evID] = n
	}
	return out, nil
}

// authEventsOf reads the auth_events of a stored PDU (room versions 3 and later: serving
// admits nobody to rooms of versions 1 and 2).
func authEventsOf(raw []byte) ([]string, error) {
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("parse stored PDU: %w", err)
	}
	out := make([]string, len(p.AuthEvents))
	for i, a := range p.AuthEvents {
		out[i] = string(a)
	}
	return out, nil
}

// authChain returns the IDs of the events of room reachable from the auth events of from,
// one step or more, that the store holds and did not reject, in topological order (depth,
// then ID): auth events come before the events they authorize. An event of from is in the
// chain only if another's auth events reach it, as in Synapse's answers. In room versions
// whose room ID names the create event (12), events leave it out of their auth events, and
// it is in every chain all the same: no event is authorized without it.
func (r *Replica) authChain(ctx context.Context, room string, version id.RoomVersion, from []string) ([]string, error) {
	starts, err := r.chains.lookup(ctx, r.st, from)
	if err != nil {
		return nil, err
	}
	impliedCreate := ""
	if version.RoomIDIsCreateEventID() {
		impliedCreate = "$" + strings.TrimPrefix(room, "!")
	}
	chain := map[string]authNode{}
	var frontier []string
	queued := map[string]bool{}
	authOf := func(n authNode) []string {
		if impliedCreate != "" && !n.create {
			return append(slices.Clone(n.auth), impliedCreate)
		}
		return n.auth
	}
	for _, evID := range from {
		if n, ok := starts[evID]; ok && n.room == room {
			for _, a := range authOf(n) {
				if !queued[a] {
					queued[a] = true
					frontier = append(frontier, a)
				}
			}
		}
	}
	// Each round reads one generation of auth events; bounded by the room's events.
	for len(frontier) > 0 {
		nodes, err := r.chains.lookup(ctx, r.st, frontier)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, evID := range frontier {
			n, ok := nodes[evID]
			if !ok || n.room != room {
				continue
			}
			chain[evID] = n
			for _, a := range authOf(n) {
				if !queued[a] {
					queued[a] = true
					next = append(next, a)
				}
			}
		}
		frontier = next
	}
	ids := make([]string, 0, len(chain))
	for evID, n := range chain {
		if !n.rejected {
			ids = append(ids, evID)
		}
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(chain[a].depth, chain[b].depth), cmp.Compare(a, b))
	})
	return ids, nil
}

// sortedStateIDs returns the event IDs of a room state, in topological order as authChain's.
func (r *Replica) sortedStateIDs(ctx context.Context, state stateres.StateMap) ([]string, error) {
	ids := make([]string, 0, len(state))
	for _, evID := range state {
		ids = append(ids, string(evID))
	}
	nodes, err := r.chains.lookup(ctx, r.st, ids)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(nodes[a].depth, nodes[b].depth), cmp.Compare(a, b))
	})
	return ids, nil
}

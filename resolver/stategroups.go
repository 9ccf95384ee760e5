package resolver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// maxServedStateEntries bounds the state entries the serving side keeps in memory across
// requests (about 100 bytes each): state groups never change once written, so any group
// read stays valid, and a page of history usually sits in a handful of groups.
const maxServedStateEntries = 200_000

// groupCache rebuilds a room's state groups from the store and keeps them. The maps it
// returns are shared: callers must not change them.
type groupCache struct {
	st store.Store

	mu      sync.Mutex
	groups  map[groupKey]stateres.StateMap
	entries int
}

type groupKey struct {
	room string
	no   int64
}

func newGroupCache(st store.Store) *groupCache {
	return &groupCache{st: st, groups: map[groupKey]stateres.StateMap{}}
}

func (c *groupCache) cached(room string, no int64) (stateres.StateMap, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.groups[groupKey{room, no}]
	return s, ok
}

func (c *groupCache) keep(room string, no int64, s stateres.StateMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries+len(s) > maxServedStateEntries {
		// Start afresh rather than track recency: a full cache is rare, and refilling it
		// costs a few reads per group.
		clear(c.groups)
		c.entries = 0
	}
	if _, ok := c.groups[groupKey{room, no}]; !ok {
		c.groups[groupKey{room, no}] = s
		c.entries += len(s)
	}
}

// load returns the whole state of group no of room. The deltas down to a group already
// cached (or a whole one) are read first and applied once, so a chain of deltas costs one
// copy of the state rather than one per link; only the group asked for is kept.
func (c *groupCache) load(ctx context.Context, room string, no int64) (stateres.StateMap, error) {
	if s, ok := c.cached(room, no); ok {
		return s, nil
	}
	var chain []store.StateGroup
	base := stateres.StateMap{}
	for next := no; next > 0; {
		if s, ok := c.cached(room, next); ok {
			base = s
			break
		}
		// Bounded by the store's chain limit (maxStateChain); the check guards against a
		// corrupt store looping.
		if len(chain) > 4*maxStateChain {
			return nil, fmt.Errorf("state group %d of %s: delta chain longer than %d", no, room, len(chain))
		}
		g, err := c.st.StateGroup(ctx, room, next)
		if err != nil {
			return nil, fmt.Errorf("read state group %d of %s: %w", next, room, err)
		}
		chain = append(chain, g)
		next = g.PrevGroup
	}
	state := maps.Clone(base)
	for _, g := range slices.Backward(chain) {
		for k, e := range g.Entries {
			key := pdu.StateKey{Type: k.Type, StateKey: k.StateKey}
			if e == "" {
				delete(state, key)
			} else {
				state[key] = id.EventID(e)
			}
		}
	}
	c.keep(room, no, state)
	return state, nil
}

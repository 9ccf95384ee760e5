package resolver

import (
	"cmp"
	"slices"
	"sync/atomic"
)

// The room states and parsed events a room's computations keep (roomStates) outlive its
// pass, so that the next pass starts from them; each room's are bounded, but a manager may
// hold thousands of rooms. What all rooms keep together is bounded too: past stateCacheBudget
// entries (a state's entries, and a parsed event each), the rooms used longest ago forget
// theirs, down to half the budget, so memory follows the rooms being synced, not the rooms
// held.

// stateCacheBudget is the entries all rooms' caches may hold together, about 60 MiB.
var stateCacheBudget int64 = 1 << 19

// cacheCount is what one room's caches hold, kept in the resolver's total as it changes.
type cacheCount struct {
	total *atomic.Int64
	n     int64
}

func (c *cacheCount) add(n int) {
	c.n += int64(n)
	c.total.Add(int64(n))
}

func (c *cacheCount) reset() {
	c.total.Add(-c.n)
	c.n = 0
}

// forgetAll empties the room's caches of states and parsed events.
func (rs *roomStates) forgetAll() {
	rs.forgetStates()
	clear(rs.pdus)
	rs.pduCount.reset()
}

// trimStateCaches makes rooms forget their caches, the least recently used first, while all
// together hold more than the budget. A room being computed keeps its own.
func (r *Resolver) trimStateCaches() {
	if r.cachedEntries.Load() <= stateCacheBudget {
		return
	}
	r.statesMu.Lock()
	rooms := make([]*roomStates, 0, len(r.states))
	for _, rs := range r.states {
		rooms = append(rooms, rs)
	}
	r.statesMu.Unlock()
	slices.SortFunc(rooms, func(a, b *roomStates) int { return cmp.Compare(a.used.Load(), b.used.Load()) })
	for _, rs := range rooms {
		if r.cachedEntries.Load() <= stateCacheBudget/2 {
			return
		}
		if rs.mu.TryLock() {
			rs.forgetAll()
			rs.mu.Unlock()
		}
	}
}

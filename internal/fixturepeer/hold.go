package fixturepeer

import (
	"cmp"
	"slices"
	"sync"

	"maunium.net/go/mautrix/id"
)

// Hold decides which events of a room a peer holds. A nil Hold holds everything.
type Hold func(e *Event) bool

// HoldAll holds every event.
func HoldAll() Hold { return nil }

// HoldNone holds no event: the peer knows the room but has nothing of it.
func HoldNone() Hold { return func(*Event) bool { return false } }

// HoldDepths holds the events with min ≤ depth ≤ max.
func HoldDepths(minDepth, maxDepth int64) Hold {
	return func(e *Event) bool { return e.Depth >= minDepth && e.Depth <= maxDepth }
}

// HoldIndexes holds the events with from ≤ Index < to: a prefix of the room's history in
// generation order is the peer's view before later events arrived.
func HoldIndexes(from, to int) Hold {
	return func(e *Event) bool { return e.Index >= from && e.Index < to }
}

// HoldIDs holds only the given events.
func HoldIDs(ids ...id.EventID) Hold {
	set := make(EventSet, len(ids))
	for _, e := range ids {
		set[e] = struct{}{}
	}
	return func(e *Event) bool { return set.Holds(e.ID) }
}

// HoldAllBut holds every event except the given ones.
func HoldAllBut(ids ...id.EventID) Hold {
	set := make(EventSet, len(ids))
	for _, e := range ids {
		set[e] = struct{}{}
	}
	return func(e *Event) bool { return !set.Holds(e.ID) }
}

// And holds the events that both h and o hold.
func (h Hold) And(o Hold) Hold {
	return func(e *Event) bool { return (h == nil || h(e)) && (o == nil || o(e)) }
}

// holdState is a peer's view of a room: which events it holds. Immutable once built.
type holdState struct {
	room  *Room
	held  []bool
	count int

	headsOnce sync.Once
	heads     []int32 // held events that no held event references, by depth descending
}

func newHoldState(r *Room, h Hold) *holdState {
	hs := &holdState{room: r, held: make([]bool, len(r.Events))}
	for i, e := range r.Events {
		if h == nil || h(e) {
			hs.held[i] = true
			hs.count++
		}
	}
	return hs
}

func (hs *holdState) has(eventID id.EventID) (int32, bool) {
	i, ok := hs.room.byID[eventID]
	if !ok || !hs.held[i] {
		return -1, false
	}
	return i, true
}

// forwardExtremities are the held events that no held event references (newest first).
func (hs *holdState) forwardExtremities() []int32 {
	hs.headsOnce.Do(func() {
		referenced := make([]bool, len(hs.held))
		for i, h := range hs.held {
			if h {
				for _, p := range hs.room.prev[i] {
					referenced[p] = true
				}
			}
		}
		for i, h := range hs.held {
			if h && !referenced[i] {
				hs.heads = append(hs.heads, int32(i))
			}
		}
		slices.SortFunc(hs.heads, func(a, b int32) int {
			return cmp.Or(cmp.Compare(hs.room.Events[b].Depth, hs.room.Events[a].Depth), cmp.Compare(b, a))
		})
	})
	return hs.heads
}

// byTimestamp returns the held event with the greatest origin_server_ts ≤ ts (dir b) or the least ≥ ts
// (dir f); -1 if none. Timestamps increase with Index.
func (hs *holdState) byTimestamp(ts int64, forward bool) int32 {
	evs := hs.room.Events
	if forward {
		i, _ := slices.BinarySearchFunc(evs, ts, func(e *Event, t int64) int { return cmp.Compare(e.TS, t) })
		for ; i < len(evs); i++ {
			if hs.held[i] {
				return int32(i)
			}
		}
		return -1
	}
	i, found := slices.BinarySearchFunc(evs, ts, func(e *Event, t int64) int { return cmp.Compare(e.TS, t) })
	if !found {
		i--
	}
	for ; i >= 0; i-- {
		if hs.held[i] {
			return int32(i)
		}
	}
	return -1
}

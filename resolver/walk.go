package resolver

import (
	"container/heap"
	"context"
	"fmt"
	"math"

	"github.com/roomsync/roomsync/store"
)

// historyWalk goes back through a room's DAG from some events, deepest first: a priority
// queue on depth, as Synapse's and Dendrite's /backfill walks. Events are read from the store
// only when the walk may need them next, in batches, so a page costs about one indexed read
// per level of the DAG it covers, whatever the room's size.
//
// Events can be marked known (an ancestor of what the requester already has, for
// /get_missing_events): known events are walked through, so that their ancestors are known
// too, but never handed out. Taken deepest first, an event is reached from every child
// before it is taken, so its mark is final by then (for events whose depth is, as the spec
// says, more than their prevs'; a DAG that lies about depths is walked all the same, in a
// less useful order).
type historyWalk struct {
	st   store.Store
	room string

	queue eventQueue
	nodes map[string]*walkNode
	// unread are IDs met but not read yet; the deepest they can be is unreadBound (their
	// child's depth − 1), so events deeper than that are taken before reading them.
	unread      []string
	unreadBound int64
	// open counts the events met, not known and not taken: when none is left, the walk can
	// only go on through known events.
	open int
	// reads counts the IDs read; the walk stops, exhausted, when it would read more than
	// maxReads.
	reads, maxReads int
	exhausted       bool
}

type walkNode struct {
	known, taken bool
}

// noChild is the child depth of an event the walk starts from: it can be at any depth.
const noChild = math.MaxInt64

func newHistoryWalk(st store.Store, room string, maxReads int) *historyWalk {
	return &historyWalk{st: st, room: room, nodes: map[string]*walkNode{}, unreadBound: math.MinInt64, maxReads: maxReads}
}

// add meets an event, a prev of an event at childDepth (noChild for a starting point).
func (w *historyWalk) add(eventID string, known bool, childDepth int64) {
	n := w.nodes[eventID]
	if n == nil {
		n = &walkNode{known: known}
		w.nodes[eventID] = n
		if !known {
			w.open++
		}
		w.unread = append(w.unread, eventID)
		bound := childDepth
		if childDepth != noChild {
			bound = childDepth - 1
		}
		w.unreadBound = max(w.unreadBound, bound)
		return
	}
	if known && !n.known && !n.taken {
		n.known = true
		w.open--
	}
}

// expand meets the prevs of an event just taken, with its mark.
func (w *historyWalk) expand(ev store.Event, known bool) {
	for _, p := range ev.PrevEvents {
		w.add(p, known, ev.Depth)
	}
}

// openLeft says whether events not known are left to walk.
func (w *historyWalk) openLeft() bool { return w.open > 0 }

// next takes the deepest event left: its ok is false when none is left or the walk has read
// all it may. Once exhausted, a walk takes nothing more, not even events read already: an
// event it could not read may have been the one that made them known.
func (w *historyWalk) next(ctx context.Context) (ev store.Event, known, ok bool, err error) {
	if w.exhausted {
		return store.Event{}, false, false, nil
	}
	if len(w.unread) > 0 && (w.queue.Len() == 0 || w.unreadBound >= w.queue[0].Depth) {
		if err := w.readUnread(ctx); err != nil {
			return store.Event{}, false, false, err
		}
	}
	if w.exhausted || w.queue.Len() == 0 {
		return store.Event{}, false, false, nil
	}
	ev = heap.Pop(&w.queue).(store.Event)
	n := w.nodes[ev.ID]
	if !n.known {
		w.open--
	}
	n.taken = true
	return ev, n.known, true, nil
}

// readUnread reads the events met and not read, and queues those of the room that are held.
// What is not held, or of another room, drops out of the walk. Reading past maxReads
// exhausts the walk instead.
func (w *historyWalk) readUnread(ctx context.Context) error {
	ids := w.unread
	w.unread, w.unreadBound = nil, math.MinInt64
	if w.reads+len(ids) > w.maxReads {
		w.exhausted = true
		return nil
	}
	w.reads += len(ids)
	held, err := w.st.Events(ctx, ids)
	if err != nil {
		return fmt.Errorf("walk the history of %s: %w", w.room, err)
	}
	for _, id := range ids {
		ev, ok := held[id]
		n := w.nodes[id]
		if !ok || ev.RoomID != w.room || n.taken {
			w.drop(id)
			continue
		}
		heap.Push(&w.queue, ev)
	}
	return nil
}

// drop forgets an event the walk will not take.
func (w *historyWalk) drop(eventID string) {
	n := w.nodes[eventID]
	if !n.known && !n.taken {
		w.open--
	}
	n.taken = true
}

// eventQueue is a max-heap of events by depth, then by event ID (descending), so that a walk
// over the same store always takes the same order.
type eventQueue []store.Event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].Depth != q[j].Depth {
		return q[i].Depth > q[j].Depth
	}
	return q[i].ID > q[j].ID
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(store.Event)) }
func (q *eventQueue) Pop() any {
	old := *q
	ev := old[len(old)-1]
	*q = old[:len(old)-1]
	return ev
}

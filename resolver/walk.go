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
// only when the walk may need them next, in batches. Read one level at a time, a linear
// stretch would cost a read per event; so each time the walk must read events by ID, it also
// reads the window of depths just below them in one indexed range (EventsInDepthRange),
// where their ancestors mostly are, and takes what it meets there from memory. A page costs
// a few reads whatever the room's size, and every row read counts against the walk's bound.
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
	// reads counts the rows read; the walk stops, exhausted, when it would read more than
	// maxReads by ID.
	reads, maxReads int
	exhausted       bool
	// window is how many depths a prefetch reads below events read by ID (0: none), and
	// prefetched what it read and the walk has not met yet.
	window     int
	prefetched map[string]store.Event
}

type walkNode struct {
	known, taken bool
}

// noChild is the child depth of an event the walk starts from: it can be at any depth.
const noChild = math.MaxInt64

// newHistoryWalk starts a walk of room that reads at most maxReads rows, prefetching window
// depths at a time.
func newHistoryWalk(st store.Store, room string, maxReads, window int) *historyWalk {
	return &historyWalk{st: st, room: room, nodes: map[string]*walkNode{}, unreadBound: math.MinInt64,
		maxReads: maxReads, window: window, prefetched: map[string]store.Event{}}
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

// readUnread reads the events met and not read, from the prefetched window or the store,
// and queues those of the room that are held. What is not held, or of another room, drops
// out of the walk. Reading past maxReads exhausts the walk instead.
func (w *historyWalk) readUnread(ctx context.Context) error {
	ids := w.unread
	w.unread, w.unreadBound = nil, math.MinInt64
	found := make(map[string]store.Event, len(ids))
	var missing []string
	for _, id := range ids {
		if ev, ok := w.prefetched[id]; ok {
			found[id] = ev
			delete(w.prefetched, id)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		if w.reads+len(missing) > w.maxReads {
			w.exhausted = true
			return nil
		}
		w.reads += len(missing)
		held, err := w.st.Events(ctx, missing)
		if err != nil {
			return fmt.Errorf("walk the history of %s: %w", w.room, err)
		}
		lowest := int64(math.MaxInt64)
		for id, ev := range held {
			found[id] = ev
			if ev.RoomID == w.room {
				lowest = min(lowest, ev.Depth)
			}
		}
		if lowest != math.MaxInt64 {
			if err := w.prefetch(ctx, lowest); err != nil {
				return err
			}
		}
	}
	for _, id := range ids {
		ev, ok := found[id]
		n := w.nodes[id]
		if !ok || ev.RoomID != w.room || n.taken {
			w.drop(id)
			continue
		}
		heap.Push(&w.queue, ev)
	}
	return nil
}

// prefetch reads the window of depths below depth, if the walk's bound leaves room for it.
func (w *historyWalk) prefetch(ctx context.Context, depth int64) error {
	rows := 2 * w.window // a level or two of forks within the window
	if w.window <= 0 || depth <= 1 || w.reads+rows > w.maxReads {
		return nil
	}
	events, err := w.st.EventsInDepthRange(ctx, w.room, depth-int64(w.window), depth-1, rows)
	if err != nil {
		return fmt.Errorf("walk the history of %s: %w", w.room, err)
	}
	w.reads += len(events)
	for _, ev := range events {
		if _, met := w.nodes[ev.ID]; !met {
			w.prefetched[ev.ID] = ev
		}
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

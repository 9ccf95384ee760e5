package dagview

import (
	"github.com/roomsync/roomsync/store"
)

// folder builds a Graph from a room's events streamed in topological order. It keeps, besides
// the graph, only the events that held events have yet to reference (each event arrives with
// its child count, so an event is forgotten once its last child has been seen): memory grows
// with the folded graph and the DAG's width, not with the room.
type folder struct {
	g *Graph
	// open are the streamed events some of whose children are still to come.
	open map[string]*openEvent
	// gaps are the room's backward extremities, by ID; gapNode the nodes drawn for them.
	gaps    map[string]store.BackwardExtremity
	gapNode map[string]int
}

type openEvent struct {
	node int
	// remaining counts the children still to come.
	remaining int
	// onlyChild says it has exactly one child: that child may continue its run.
	onlyChild bool
	// last says it is its run's last event so far.
	last bool
}

func newFolder(roomID string, gaps []store.BackwardExtremity) *folder {
	f := &folder{
		g:       &Graph{RoomID: roomID},
		open:    map[string]*openEvent{},
		gaps:    make(map[string]store.BackwardExtremity, len(gaps)),
		gapNode: map[string]int{},
	}
	for _, b := range gaps {
		f.gaps[b.EventID] = b
	}
	return f
}

func kindOf(e store.DAGEvent) Kind {
	switch {
	case e.Rejected != "":
		return KindRejected
	case e.Redacted:
		return KindRedacted
	default:
		return KindEvents
	}
}

// add takes the next event in topological order.
func (f *folder) add(e store.DAGEvent) {
	f.g.Events++
	kind := kindOf(e)
	var parents []int
	cut := false
	var only *openEvent // the open prev, when e has exactly one prev and it is open
	for _, p := range e.PrevEvents {
		if o, ok := f.open[p]; ok {
			parents = append(parents, o.node)
			if len(e.PrevEvents) == 1 {
				only = o
			}
			if o.remaining--; o.remaining <= 0 {
				delete(f.open, p)
			}
			continue
		}
		if _, ok := f.gaps[p]; ok {
			parents = append(parents, f.gapNodeFor(p))
			continue
		}
		// Held but outside the picture: below the depth window, or (in a room whose depths
		// lie) not streamed yet.
		cut = true
	}

	node := -1
	if only != nil && only.last && only.onlyChild && f.g.Nodes[only.node].Kind == kind && e.Type != "m.room.create" {
		// The run goes on: its last event has e as its only child, and e has it as its only
		// prev.
		node = only.node
		n := &f.g.Nodes[node]
		n.Count++
		n.Last, n.MaxDepth = e.ID, e.Depth
		n.Head = e.Children == 0
		only.last = false
	} else {
		if only != nil {
			only.last = false
		}
		node = len(f.g.Nodes)
		f.g.Nodes = append(f.g.Nodes, Node{
			Kind: kind, First: e.ID, Last: e.ID, Count: 1, MinDepth: e.Depth, MaxDepth: e.Depth,
			Type: e.Type, Head: e.Children == 0, Create: e.Type == "m.room.create", Cut: cut, Rejected: e.Rejected,
		})
		seen := map[int]bool{}
		for _, p := range parents {
			if !seen[p] {
				seen[p] = true
				f.g.Edges = append(f.g.Edges, Edge{From: node, To: p})
			}
		}
	}
	// Any open prev that was a run's last event stops being one as soon as a child arrives,
	// whether or not the child continues the run.
	for _, p := range e.PrevEvents {
		if o, ok := f.open[p]; ok {
			o.last = false
		}
	}
	if e.Children > 0 {
		f.open[e.ID] = &openEvent{node: node, remaining: e.Children, onlyChild: e.Children == 1, last: true}
	}
}

// gapNodeFor returns the node of a gap, making it on first reference. It is made before the
// child that references it, so nodes stay in topological order.
func (f *folder) gapNodeFor(id string) int {
	if n, ok := f.gapNode[id]; ok {
		return n
	}
	b := f.gaps[id]
	n := len(f.g.Nodes)
	f.g.Nodes = append(f.g.Nodes, Node{
		Kind: KindGap, First: id, Last: id, Count: 1, MinDepth: b.MinChildDepth - 1, MaxDepth: b.MinChildDepth - 1,
		Gap: &Gap{
			EventID: id, BelowDepth: b.MinChildDepth, FirstSeen: b.FirstSeen, Attempts: b.Attempts,
			LastError: b.LastError, LastAttemptAt: b.LastAttemptAt, NextAttemptAt: b.NextAttemptAt,
			Unfillable: b.Unfillable, UnfillableReason: b.UnfillableReason,
		},
	})
	f.gapNode[id] = n
	f.g.Gaps++
	return n
}

// Package dagview draws a room's DAG as the store holds it, so that a person can see why a
// room has not converged: where it forks and merges, where events are missing (gaps, with
// what the peers answered), which events are held redacted or were rejected, and which are
// the newest (forward extremities).
//
// A room of a hundred thousand events is mostly long linear runs; each run is folded into one
// node with a count ([Build]), so the picture stays readable and is drawn in seconds. The
// folded graph is laid out in layers ([NewLayout]: a small Sugiyama-style layout, layers by
// depth, barycenter ordering) and written as SVG ([WriteSVG]) or as Graphviz DOT text
// ([WriteDOT]) for people who have Graphviz.
package dagview

import (
	"time"

	"github.com/roomsync/roomsync/store"
)

// Kind is what a node of the folded graph stands for.
type Kind int

const (
	// KindEvents is a run of held events.
	KindEvents Kind = iota
	// KindRedacted is a run of events held only in redacted form (their full copy failed its
	// content hash: the peer stripped what we may not see).
	KindRedacted
	// KindRejected is a run of events that broke the authorization rules.
	KindRejected
	// KindGap is a missing event that held events list as a prev (a backward extremity).
	KindGap
)

func (k Kind) String() string {
	switch k {
	case KindRedacted:
		return "redacted"
	case KindRejected:
		return "rejected"
	case KindGap:
		return "gap"
	default:
		return "events"
	}
}

// Node is one node of the folded graph: a run of events whose links inside the run are
// one-to-one (the first may merge several prevs, the last may fork), or a gap.
type Node struct {
	Kind Kind
	// First and Last are the first and last event of the run (the same for one event); for a
	// gap, the missing event's ID.
	First, Last string
	// Count is the number of events in the run (1 for a gap).
	Count int
	// MinDepth and MaxDepth are the depths of the run's first and last events; for a gap, the
	// depth below its shallowest child (where it would sit).
	MinDepth, MaxDepth int64
	// Type is the type of the run's first event.
	Type string
	// Head says the run's last event is a forward extremity: no held event follows it.
	Head bool
	// Create says the run starts with the room's m.room.create event.
	Create bool
	// Cut says the run's first event has prevs outside the picture (below its depth window).
	Cut bool
	// Rejected is the rule the run's first rejected event broke (KindRejected only).
	Rejected string
	// Gap is the bookkeeping of a gap (KindGap only).
	Gap *Gap
}

// Gap is what the store knows of a missing event: the attempts to fetch it and what each
// peer answered the last time it was asked.
type Gap struct {
	EventID string
	// BelowDepth is the depth of its shallowest child: the missing event sits below it.
	BelowDepth int64
	// ReferencedBy are (some of) the held events that list it as a prev.
	ReferencedBy     []string
	FirstSeen        time.Time
	Attempts         int
	LastError        string
	LastAttemptAt    time.Time
	NextAttemptAt    time.Time // zero: due now
	Unfillable       bool
	UnfillableReason string
	// Peers are the peers' latest answers, by peer name.
	Peers []store.PeerAttempt
}

// Edge joins a node to one of its prevs' nodes: From is the later node (the child), To the
// earlier one.
type Edge struct{ From, To int }

// Graph is a room's DAG folded into runs. Nodes are in topological order: every node comes
// after the nodes its edges lead to.
type Graph struct {
	RoomID string
	Nodes  []Node
	Edges  []Edge
	// Events is the number of events drawn; Gaps the number of gap nodes.
	Events, Gaps int
	// Truncated says the picture stopped at Options.MaxEvents before the end of the room (or
	// of the window).
	Truncated bool
	// Around is the event the picture is centred on ("" for the whole room), and MinDepth and
	// MaxDepth the depths it covers (0, 0 for the whole room).
	Around             string
	MinDepth, MaxDepth int64
}

package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// makeEvent builds an event with JSON of about rawSize bytes. The JSON is not a real PDU (the
// store never parses it), but it is deterministic, so dumps of two runs compare equal.
func makeEvent(room, id string, depth int64, prevs []string, rawSize int) Event {
	prevJSON, _ := json.Marshal(append([]string{}, prevs...))
	head := fmt.Sprintf(`{"event_id":%q,"room_id":%q,"depth":%d,"prev_events":%s,"content":{"body":"`,
		id, room, depth, prevJSON)
	pad := max(0, rawSize-len(head)-3)
	e := Event{
		ID: id, RoomID: room, Depth: depth, OriginServerTS: 1_700_000_000_000 + depth,
		Type: "m.room.message", Sender: "@alice:example.org", Origin: "example.org",
		PrevEvents: prevs,
		Raw:        []byte(head + strings.Repeat("x", pad) + `"}}`),
	}
	if depth == 1 {
		e.Type, e.StateKey = "m.room.create", new(string)
	}
	return e
}

// linearChain is n events, each the child of the previous one, the first without prevs.
func linearChain(room string, n, rawSize int) []Event {
	return newDAG(room, rawSize, 0).grow(n, 0, 0)
}

// forkyDAG is n events where about one in six forks from an older event and one in five merges
// two branches, like a busy room with several servers sending at once.
func forkyDAG(room string, n, rawSize int, seed uint64) []Event {
	return newDAG(room, rawSize, seed).grow(n, 0.17, 0.2)
}

// dag grows a room's DAG. It keeps only the current tips and a window of recent events, so it
// can make a million events without holding them all.
type dag struct {
	room    string
	rawSize int
	rng     *rand.Rand
	next    int
	tips    []string
	depth   map[string]int64 // of the tips and the recent window
	recent  []string
}

func newDAG(room string, rawSize int, seed uint64) *dag {
	return &dag{room: room, rawSize: rawSize, rng: rand.New(rand.NewPCG(seed, 0x5eed)), depth: map[string]int64{}}
}

// grow adds n events: each forks from a recent non-tip with probability fork, merges two tips
// with probability merge, and otherwise extends one tip.
func (g *dag) grow(n int, fork, merge float64) []Event {
	events := make([]Event, 0, n)
	for range n {
		id, depth, prevs := g.step(fork, merge)
		events = append(events, makeEvent(g.room, id, depth, prevs, g.rawSize))
	}
	return events
}

// skip advances g past n forky events (grow(n, 0.17, 0.2)) without making them, to continue
// a room built earlier.
func (g *dag) skip(n int) {
	for range n {
		g.step(0.17, 0.2)
	}
}

// step draws the next event's place in the DAG.
func (g *dag) step(fork, merge float64) (id string, depth int64, prevs []string) {
	switch p := g.rng.Float64(); {
	case len(g.tips) == 0:
	case p < fork && len(g.recent) > 2:
		prevs = []string{g.recent[g.rng.IntN(len(g.recent))]}
	case p < fork+merge && len(g.tips) > 1:
		i := g.rng.IntN(len(g.tips))
		j := (i + 1 + g.rng.IntN(len(g.tips)-1)) % len(g.tips)
		prevs = []string{g.tips[i], g.tips[j]}
	default:
		prevs = []string{g.tips[g.rng.IntN(len(g.tips))]}
	}
	depth = 1
	for _, p := range prevs {
		depth = max(depth, g.depth[p]+1)
	}
	g.next++
	// IDs that do not sort in creation order, so that ID order and depth order differ.
	id = fmt.Sprintf("$%08x%06d:%s", g.rng.Uint32(), g.next, "example.org")

	g.tips = slices.DeleteFunc(g.tips, func(t string) bool {
		if !slices.Contains(prevs, t) {
			return false
		}
		if !slices.Contains(g.recent, t) {
			delete(g.depth, t)
		}
		return true
	})
	g.tips = append(g.tips, id)
	g.depth[id] = depth
	g.recent = append(g.recent, id)
	if len(g.recent) > 64 {
		old := g.recent[0]
		g.recent = g.recent[1:]
		if !slices.Contains(g.tips, old) {
			delete(g.depth, old)
		}
	}
	return id, depth, prevs
}

// shuffled returns a copy of events in random order.
func shuffled(events []Event, seed uint64) []Event {
	out := slices.Clone(events)
	rand.New(rand.NewPCG(seed, 1)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// batches cuts events into consecutive batches of random sizes in [1, maxSize].
func batches(events []Event, maxSize int, seed uint64) [][]Event {
	rng := rand.New(rand.NewPCG(seed, 2))
	var out [][]Event
	for len(events) > 0 {
		n := min(len(events), 1+rng.IntN(maxSize))
		out = append(out, events[:n])
		events = events[n:]
	}
	return out
}

// model is the oracle: the extremities of a set of events, computed in memory from the
// definitions, independently of the store's SQL.
type model struct{ events map[string]Event }

func newModel() *model { return &model{events: map[string]Event{}} }

func (m *model) add(events ...Event) {
	for _, e := range events {
		m.events[e.ID] = e
	}
}

func (m *model) forward() []string {
	referenced := map[string]bool{}
	for _, e := range m.events {
		for _, p := range e.PrevEvents {
			referenced[p] = true
		}
	}
	var out []string
	for id := range m.events {
		if !referenced[id] {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (m *model) backward() map[string]depthRange {
	out := map[string]depthRange{}
	for _, e := range m.events {
		for _, p := range e.PrevEvents {
			if _, held := m.events[p]; held {
				continue
			}
			r := depthRange{e.Depth, e.Depth}
			if old, ok := out[p]; ok {
				r = r.widen(old)
			}
			out[p] = r
		}
	}
	return out
}

// checkAgainstModel compares the store's view of the room with the model's and runs the
// store's own consistency check.
func checkAgainstModel(t *testing.T, s Store, room string, m *model) {
	t.Helper()
	ctx := t.Context()
	if err := s.CheckConsistency(ctx, room); err != nil {
		t.Fatal(err)
	}
	fwd, err := s.ForwardExtremities(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if want := m.forward(); !slices.Equal(fwd, want) {
		t.Fatalf("forward extremities:\n got %v\nwant %v", fwd, want)
	}
	bwd, err := s.BackwardExtremities(ctx, room, BackwardFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]depthRange{}
	for _, b := range bwd {
		got[b.EventID] = depthRange{b.MinChildDepth, b.MaxChildDepth}
	}
	if want := m.backward(); !maps.Equal(got, want) {
		t.Fatalf("backward extremities:\n got %v\nwant %v", got, want)
	}
	r, err := s.Room(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != int64(len(m.events)) || r.ForwardExtremities != int64(len(fwd)) || r.BackwardExtremities != int64(len(bwd)) {
		t.Fatalf("room counters %+v, want %d events, %d forward, %d backward", r, len(m.events), len(fwd), len(bwd))
	}
}

package dagview

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/store"
)

// ev is one event of a test DAG: "id:prev1,prev2" plus flags.
type ev struct {
	id, prevs string
	depth     int64
	redacted  bool
	rejected  string
}

// stream feeds events, in the order given (topological), to a folder, with the child counts
// the store would give.
func stream(t *testing.T, events []ev, gaps ...string) *Graph {
	t.Helper()
	children := map[string]int{}
	for _, e := range events {
		for _, p := range split(e.prevs) {
			children[p]++
		}
	}
	var exts []store.BackwardExtremity
	for _, g := range gaps {
		exts = append(exts, store.BackwardExtremity{EventID: g, MinChildDepth: 10})
	}
	f := newFolder("!r", exts)
	for _, e := range events {
		typ := "m.room.message"
		if e.prevs == "" && e.id == "create" {
			typ = "m.room.create"
		}
		f.add(store.DAGEvent{ID: e.id, Depth: e.depth, Type: typ, PrevEvents: split(e.prevs),
			Children: children[e.id], Redacted: e.redacted, Rejected: e.rejected})
	}
	return f.g
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// chain is n events c1…cn at depths from+1…, each the child of the one before, the first
// the child of prev.
func chain(prefix, prev string, from int64, n int) []ev {
	var out []ev
	for i := 1; i <= n; i++ {
		out = append(out, ev{id: fmt.Sprintf("%s%d", prefix, i), prevs: prev, depth: from + int64(i)})
		prev = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// describe renders a graph as "first..last×count[flags]" per node and "from>to" per edge.
func describe(g *Graph) string {
	var parts []string
	for _, n := range g.Nodes {
		s := n.First
		if n.Last != n.First {
			s += ".." + n.Last
		}
		s += fmt.Sprintf("×%d", n.Count)
		if n.Kind != KindEvents {
			s += "[" + n.Kind.String() + "]"
		}
		if n.Head {
			s += "[head]"
		}
		if n.Create {
			s += "[create]"
		}
		if n.Cut {
			s += "[cut]"
		}
		parts = append(parts, s)
	}
	var edges []string
	for _, e := range g.Edges {
		edges = append(edges, g.Nodes[e.From].First+">"+g.Nodes[e.To].First)
	}
	slices.Sort(edges)
	return strings.Join(parts, " ") + " | " + strings.Join(edges, " ")
}

func TestFold(t *testing.T) {
	create := ev{id: "create", depth: 1}
	for _, c := range []struct {
		name   string
		events []ev
		gaps   []string
		want   string
	}{
		{"a linear room is one node", append([]ev{create}, chain("c", "create", 1, 5)...),
			nil, "create..c5×6[head][create] | "},
		{"a fork ends the run; each branch is a run",
			append(append(append([]ev{create}, chain("a", "create", 1, 2)...), chain("b", "a2", 3, 3)...), chain("x", "a2", 3, 2)...),
			nil, "create..a2×3[create] b1..b3×3[head] x1..x2×2[head] | b1>create x1>create"},
		{"a merge starts a run",
			[]ev{create, {id: "a", prevs: "create", depth: 2}, {id: "b", prevs: "create", depth: 2},
				{id: "m", prevs: "a,b", depth: 3}, {id: "n", prevs: "m", depth: 4}},
			nil, "create×1[create] a×1 b×1 m..n×2[head] | a>create b>create m>a m>b"},
		{"a gap is a node above the events that reference it",
			[]ev{{id: "x1", prevs: "gap1", depth: 10}, {id: "x2", prevs: "x1", depth: 11}},
			[]string{"gap1"}, "gap1×1[gap] x1..x2×2[head] | x1>gap1"},
		{"two events referencing one gap share its node",
			[]ev{{id: "x", prevs: "g", depth: 10}, {id: "y", prevs: "g", depth: 10}, {id: "z", prevs: "x,y", depth: 11}},
			[]string{"g"}, "g×1[gap] x×1 y×1 z×1[head] | x>g y>g z>x z>y"},
		{"redacted events are runs of their own",
			[]ev{create, {id: "r1", prevs: "create", depth: 2, redacted: true}, {id: "r2", prevs: "r1", depth: 3, redacted: true},
				{id: "p", prevs: "r2", depth: 4}},
			nil, "create×1[create] r1..r2×2[redacted] p×1[head] | p>r1 r1>create"},
		{"a rejected event stands out",
			[]ev{create, {id: "a", prevs: "create", depth: 2}, {id: "bad", prevs: "a", depth: 3, rejected: "rule 6"},
				{id: "b", prevs: "bad", depth: 4}},
			nil, "create..a×2[create] bad×1[rejected] b×1[head] | b>bad bad>create"},
		{"prevs outside the window cut the node",
			[]ev{{id: "w1", prevs: "below", depth: 50}, {id: "w2", prevs: "w1", depth: 51}},
			nil, "w1..w2×2[head][cut] | "},
		{"an event with a held and a missing prev",
			[]ev{create, {id: "a", prevs: "create", depth: 2}, {id: "m", prevs: "a,g", depth: 3}},
			[]string{"g"}, "create..a×2[create] g×1[gap] m×1[head] | m>create m>g"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := describe(stream(t, c.events, c.gaps...)); got != c.want {
				t.Errorf("\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

// The folder forgets an event once its last child has been seen: a long linear room keeps
// one open event, a forked one as many as its open branches.
func TestFoldForgets(t *testing.T) {
	events := append([]ev{{id: "create", depth: 1}}, chain("c", "create", 1, 1000)...)
	children := map[string]int{}
	for _, e := range events {
		for _, p := range split(e.prevs) {
			children[p]++
		}
	}
	f := newFolder("!r", nil)
	most := 0
	for _, e := range events {
		f.add(store.DAGEvent{ID: e.id, Depth: e.depth, PrevEvents: split(e.prevs), Children: children[e.id]})
		most = max(most, len(f.open))
	}
	if most != 1 || len(f.g.Nodes) != 1 {
		t.Errorf("a linear room: at most %d open events, %d nodes; want 1 and 1", most, len(f.g.Nodes))
	}
}

package dagview

import (
	"math"
	"slices"
	"testing"
)

// graphOf makes a graph of nodes at the given depths with edges "from>to" (later to earlier).
func graphOf(depths []int64, edges ...[2]int) *Graph {
	g := &Graph{}
	for _, d := range depths {
		g.Nodes = append(g.Nodes, Node{MinDepth: d, MaxDepth: d, Count: 1})
	}
	for _, e := range edges {
		g.Edges = append(g.Edges, Edge{From: e[0], To: e[1]})
	}
	return g
}

func TestAssignLayers(t *testing.T) {
	for _, c := range []struct {
		name   string
		depths []int64
		edges  [][2]int
		want   []int
	}{
		{"a chain: one layer per depth", []int64{1, 2, 3}, [][2]int{{1, 0}, {2, 1}}, []int{0, 1, 2}},
		{"siblings of a fork share a layer", []int64{1, 2, 2, 3}, [][2]int{{1, 0}, {2, 0}, {3, 1}, {3, 2}}, []int{0, 1, 1, 2}},
		{"depths rank: no empty layers for skipped depths", []int64{1, 50, 900}, [][2]int{{1, 0}, {2, 1}}, []int{0, 1, 2}},
		{"a run's layer is its first depth", []int64{1, 2, 3, 10}, [][2]int{{1, 0}, {2, 0}, {3, 2}}, []int{0, 1, 2, 3}},
		{"a lying depth is pushed below its prev", []int64{5, 3, 4}, [][2]int{{1, 0}, {2, 1}}, []int{0, 1, 2}},
		{"unrelated nodes at one depth share a layer", []int64{7, 7, 8}, [][2]int{{2, 0}}, []int{0, 0, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := assignLayers(graphOf(c.depths, c.edges...)); !slices.Equal(got, c.want) {
				t.Errorf("layers %v, want %v", got, c.want)
			}
		})
	}
}

func TestInversions(t *testing.T) {
	for _, c := range []struct {
		name  string
		pairs [][2]int
		width int
		want  int
	}{
		{"parallel", [][2]int{{0, 0}, {1, 1}, {2, 2}}, 3, 0},
		{"one cross", [][2]int{{0, 1}, {1, 0}}, 2, 1},
		{"a fan does not cross itself", [][2]int{{0, 0}, {0, 1}, {0, 2}}, 3, 0},
		{"into one node does not cross", [][2]int{{0, 0}, {1, 0}, {2, 0}}, 1, 0},
		{"reversed three", [][2]int{{0, 2}, {1, 1}, {2, 0}}, 3, 3},
		{"fan across an edge", [][2]int{{0, 2}, {1, 0}, {1, 1}}, 3, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := inversions(slices.Clone(c.pairs), c.width); got != c.want {
				t.Errorf("%d crossings, want %d", got, c.want)
			}
		})
	}
}

// Barycenter ordering untangles what the first order crosses, and never ends worse than it
// began.
func TestOrderLayers(t *testing.T) {
	for _, c := range []struct {
		name          string
		depths        []int64
		edges         [][2]int
		wantCrossings int
	}{
		// 0 forks into 1 and 2; 3 follows 2 and 4 follows 1: in first order (3 before 4)
		// their edges cross.
		{"crossed branches", []int64{1, 2, 2, 3, 3}, [][2]int{{1, 0}, {2, 0}, {3, 2}, {4, 1}}, 0},
		// Two crossing pairs of branches.
		{"two forks tangled", []int64{1, 2, 2, 2, 3, 3, 3}, [][2]int{{1, 0}, {2, 0}, {3, 0}, {4, 3}, {5, 2}, {6, 1}}, 0},
		// K3,3 cannot be drawn without crossings: ordering may not make it worse.
		{"unavoidable crossings", []int64{1, 1, 1, 2, 2, 2},
			[][2]int{{3, 0}, {3, 1}, {3, 2}, {4, 0}, {4, 1}, {4, 2}, {5, 0}, {5, 1}, {5, 2}}, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := graphOf(c.depths, c.edges...)
			ln, _ := addDummies(g, assignLayers(g), make([]Box, len(g.Nodes)))
			layers := groupLayers(ln)
			before := crossings(ln, layers)
			got := orderLayers(ln, layers)
			if got != c.wantCrossings || got > before {
				t.Errorf("%d crossings after ordering (%d before), want %d", got, before, c.wantCrossings)
			}
			if again := crossings(ln, layers); again != got {
				t.Errorf("the kept order has %d crossings, ordering said %d", again, got)
			}
		})
	}
}

// An edge across layers passes through one dummy per layer between its ends; past the
// dummy budget, edges are straight.
func TestAddDummies(t *testing.T) {
	g := graphOf([]int64{1, 2, 3, 4}, [2]int{1, 0}, [2]int{2, 1}, [2]int{3, 0})
	ln, chains := addDummies(g, assignLayers(g), make([]Box, len(g.Nodes)))
	if len(ln) != 6 || len(chains[2]) != 2 || len(chains[0]) != 0 {
		t.Fatalf("%d lnodes, chains %v; want 2 dummies on the edge from depth 4 to depth 1", len(ln), chains)
	}
	for i, d := range chains[2] {
		if ln[d].layer != i+1 || ln[d].real != -1 {
			t.Errorf("dummy %d: %+v", i, ln[d])
		}
	}
}

// Placement keeps each layer's order with at least nodeGap between boxes, and pulls a lone
// child under its parent.
func TestPlaceX(t *testing.T) {
	g := graphOf([]int64{1, 2, 2, 2, 3}, [2]int{1, 0}, [2]int{2, 0}, [2]int{3, 0}, [2]int{4, 3})
	sizes := []Box{{W: 100, H: 20}, {W: 80, H: 20}, {W: 120, H: 20}, {W: 60, H: 20}, {W: 90, H: 20}}
	lay := NewLayout(g, sizes)
	for _, pair := range [][2]int{{1, 2}, {2, 3}} {
		a, b := lay.Nodes[pair[0]], lay.Nodes[pair[1]]
		if gap := (b.X - b.W/2) - (a.X + a.W/2); gap < nodeGap-0.01 {
			t.Errorf("nodes %v: %.1f apart, want at least %.0f", pair, gap, nodeGap)
		}
	}
	if child, parent := lay.Nodes[4], lay.Nodes[3]; math.Abs(child.X-parent.X) > 0.01 {
		t.Errorf("a lone child at x %.1f, its parent at %.1f", child.X, parent.X)
	}
	for i, b := range lay.Nodes {
		if b.X-b.W/2 < margin-0.01 || b.X+b.W/2 > lay.Width-margin+0.01 || b.Y-b.H/2 < margin-0.01 || b.Y+b.H/2 > lay.Height {
			t.Errorf("node %d at %+v is outside the %.0f×%.0f picture", i, b, lay.Width, lay.Height)
		}
	}
	for i, pts := range lay.Edges {
		e := g.Edges[i]
		if first, last := pts[0], pts[len(pts)-1]; first.Y > last.Y || first.X != lay.Nodes[e.To].X || last.X != lay.Nodes[e.From].X {
			t.Errorf("edge %d runs %v, want from the earlier node down to the later", i, pts)
		}
	}
}

func TestTranspose(t *testing.T) {
	// 0 and 1 on top; 2 under 1 and 3 under 0, in the order 2, 3: one crossing a swap removes.
	g := graphOf([]int64{1, 1, 2, 2}, [2]int{2, 1}, [2]int{3, 0})
	ln, _ := addDummies(g, assignLayers(g), make([]Box, len(g.Nodes)))
	layers := groupLayers(ln)
	if c := crossings(ln, layers); c != 1 {
		t.Fatalf("%d crossings before, want 1", c)
	}
	transpose(ln, layers)
	if c := crossings(ln, layers); c != 0 {
		t.Errorf("%d crossings after transpose, want 0 (layers %v)", c, layers)
	}
}

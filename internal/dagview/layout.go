package dagview

import (
	"slices"
)

// Layout is where a folded graph's nodes and edges go: layers from top (earliest) to bottom
// (newest), as Sugiyama's method does it in four steps: layers by depth (assignLayers), long
// edges cut into one-layer steps through dummy points (addDummies), the order within each
// layer by a few barycenter sweeps that keep the order with the fewest crossings
// (orderLayers), and coordinates pulled towards the neighbours' (placeX).
type Layout struct {
	Width, Height float64
	// Nodes are the boxes of the graph's nodes, by node index: centre and size.
	Nodes []Box
	// Edges are the polylines of the graph's edges, by edge index, from the earlier node's
	// bottom to the later node's top.
	Edges [][]Point
	// Layers is the number of layers; Crossings the edge crossings left between them.
	Layers, Crossings int
}

// Point is a position in the picture.
type Point struct{ X, Y float64 }

// Box is a node's rectangle: its centre and size.
type Box struct{ X, Y, W, H float64 }

// Spacing of the picture.
const (
	margin     = 16.0
	nodeGap    = 24.0 // between boxes of a layer
	dummyWidth = 8.0  // a long edge's passage through a layer
	layerGap   = 40.0 // between layers
	// sweeps of barycenter ordering (each one down and one up): enough to settle the small
	// forks of a room, cheap enough for tens of thousands of nodes.
	sweeps = 12
	// placement passes (down and up).
	placePasses = 4
)

// maxDummies bounds the dummy points of long edges: past it, long edges are drawn straight
// (a room whose branches stay open for thousands of layers would otherwise need millions).
func maxDummies(nodes int) int { return 50_000 + 4*nodes }

// lnode is a node of the layered graph: a graph node, or a dummy point of a long edge.
type lnode struct {
	real     int // graph node index; -1 for a dummy
	layer    int
	pos      int // index within its layer
	w, h     float64
	x        float64 // centre
	up, down []int   // neighbours in the layers above and below (adjacent unless edges are straight)
}

// NewLayout lays out g with the given box size of each node.
func NewLayout(g *Graph, sizes []Box) *Layout {
	layerOf := assignLayers(g)
	ln, chains := addDummies(g, layerOf, sizes)
	layers := groupLayers(ln)
	crossings := orderLayers(ln, layers)
	placeX(ln, layers)
	return finish(g, ln, layers, chains, crossings)
}

// assignLayers puts each node in the layer of its depth's rank among the nodes' depths (a
// gap just above its shallowest child), then pushes a node below its prevs where a room's
// depths do not (a lying server's events). Empty layers are dropped.
func assignLayers(g *Graph) []int {
	keys := make([]int64, len(g.Nodes))
	for i, n := range g.Nodes {
		keys[i] = n.MinDepth
	}
	distinct := slices.Compact(slices.Sorted(slices.Values(keys)))
	parents := make([][]int, len(g.Nodes))
	for _, e := range g.Edges {
		parents[e.From] = append(parents[e.From], e.To)
	}
	layer := make([]int, len(g.Nodes))
	for i := range g.Nodes { // topological: prevs first
		r, _ := slices.BinarySearch(distinct, keys[i])
		for _, p := range parents[i] {
			r = max(r, layer[p]+1)
		}
		layer[i] = r
	}
	used := slices.Compact(slices.Sorted(slices.Values(layer)))
	for i, l := range layer {
		layer[i], _ = slices.BinarySearch(used, l)
	}
	return layer
}

// addDummies makes the layered graph: one lnode per graph node, and for each edge that spans
// more than one layer a chain of dummies, one per layer crossed (unless there would be more
// than maxDummies: then edges join their ends directly). chains[e] lists the dummies of edge
// e from the upper end down.
func addDummies(g *Graph, layerOf []int, sizes []Box) ([]lnode, [][]int) {
	ln := make([]lnode, len(g.Nodes))
	for i := range g.Nodes {
		ln[i] = lnode{real: i, layer: layerOf[i], w: sizes[i].W, h: sizes[i].H}
	}
	need := 0
	for _, e := range g.Edges {
		need += max(layerOf[e.From]-layerOf[e.To]-1, 0)
	}
	chains := make([][]int, len(g.Edges))
	for ei, e := range g.Edges {
		upper, lower := e.To, e.From
		if need > maxDummies(len(g.Nodes)) || layerOf[lower]-layerOf[upper] <= 1 {
			ln[upper].down = append(ln[upper].down, lower)
			ln[lower].up = append(ln[lower].up, upper)
			continue
		}
		prev := upper
		for l := layerOf[upper] + 1; l < layerOf[lower]; l++ {
			d := len(ln)
			ln = append(ln, lnode{real: -1, layer: l, w: dummyWidth, up: []int{prev}})
			ln[prev].down = append(ln[prev].down, d)
			chains[ei] = append(chains[ei], d)
			prev = d
		}
		ln[prev].down = append(ln[prev].down, lower)
		ln[lower].up = append(ln[lower].up, prev)
	}
	return ln, chains
}

// groupLayers lists each layer's lnodes in their first order: graph order (by depth, then
// event ID), dummies after the nodes of their layer in the order made.
func groupLayers(ln []lnode) [][]int {
	n := 0
	for _, v := range ln {
		n = max(n, v.layer+1)
	}
	layers := make([][]int, n)
	for i, v := range ln {
		layers[v.layer] = append(layers[v.layer], i)
	}
	for _, layer := range layers {
		for pos, v := range layer {
			ln[v].pos = pos
		}
	}
	return layers
}

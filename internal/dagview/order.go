package dagview

import (
	"cmp"
	"slices"
)

// orderLayers reorders each layer by the barycenter of its neighbours' positions, sweeping
// down (by the layer above) then up (by the layer below), then swaps neighbours where that
// removes crossings (barycenters leave ties and near-ties crossed), and keeps the order with
// the fewest crossings. It returns that number.
func orderLayers(ln []lnode, layers [][]int) int {
	best := crossings(ln, layers)
	saved := snapshot(layers)
	for range sweeps {
		if best == 0 {
			break
		}
		for l := 1; l < len(layers); l++ {
			sortByBarycenter(ln, layers[l], func(v *lnode) []int { return v.up })
		}
		for l := len(layers) - 2; l >= 0; l-- {
			sortByBarycenter(ln, layers[l], func(v *lnode) []int { return v.down })
		}
		transpose(ln, layers)
		if c := crossings(ln, layers); c < best {
			best, saved = c, snapshot(layers)
		}
	}
	for l, order := range saved {
		copy(layers[l], order)
		for pos, v := range layers[l] {
			ln[v].pos = pos
		}
	}
	return best
}

func snapshot(layers [][]int) [][]int {
	out := make([][]int, len(layers))
	for i, l := range layers {
		out[i] = slices.Clone(l)
	}
	return out
}

// sortByBarycenter orders a layer by the mean position of each node's neighbours; a node
// without neighbours keeps its position as its barycenter. The sort is stable, so ties keep
// their order.
func sortByBarycenter(ln []lnode, layer []int, neighbours func(*lnode) []int) {
	bary := make(map[int]float64, len(layer))
	for _, v := range layer {
		nb := neighbours(&ln[v])
		if len(nb) == 0 {
			bary[v] = float64(ln[v].pos)
			continue
		}
		sum := 0.0
		for _, u := range nb {
			sum += float64(ln[u].pos)
		}
		bary[v] = sum / float64(len(nb))
	}
	slices.SortStableFunc(layer, func(a, b int) int { return cmp.Compare(bary[a], bary[b]) })
	for pos, v := range layer {
		ln[v].pos = pos
	}
}

// crossings counts the pairs of edges that cross between adjacent layers: per pair of
// layers, the inversions of the lower ends once the edges are sorted by their upper ends,
// counted with a Fenwick tree (O(E log V)).
func crossings(ln []lnode, layers [][]int) int {
	total := 0
	for l := 0; l+1 < len(layers); l++ {
		var pairs [][2]int
		for _, v := range layers[l] {
			for _, u := range ln[v].down {
				if ln[u].layer == l+1 {
					pairs = append(pairs, [2]int{ln[v].pos, ln[u].pos})
				}
			}
		}
		total += inversions(pairs, len(layers[l+1]))
	}
	return total
}

// inversions counts the pairs (a, b) of edges with a.upper < b.upper and a.lower > b.lower:
// the crossings of straight edges between two layers. width is the lower layer's size.
func inversions(pairs [][2]int, width int) int {
	slices.SortFunc(pairs, func(a, b [2]int) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	tree := make([]int, width+1)
	count, seen := 0, 0
	for _, p := range pairs {
		// Edges seen so far whose lower end is right of this one's cross it.
		le := 0
		for i := p[1] + 1; i > 0; i -= i & -i {
			le += tree[i]
		}
		count += seen - le
		for i := p[1] + 1; i <= width; i += i & -i {
			tree[i]++
		}
		seen++
	}
	return count
}

// transposePasses bounds the passes of transpose over all layers.
const transposePasses = 4

// transpose swaps two neighbours of a layer wherever that lowers the crossings of their
// edges with the layers above and below, pass after pass while any swap helps.
func transpose(ln []lnode, layers [][]int) {
	for range transposePasses {
		improved := false
		for _, layer := range layers {
			for i := 0; i+1 < len(layer); i++ {
				u, v := layer[i], layer[i+1]
				if pairCrossings(ln, v, u) < pairCrossings(ln, u, v) {
					layer[i], layer[i+1] = v, u
					ln[u].pos, ln[v].pos = i+1, i
					improved = true
				}
			}
		}
		if !improved {
			return
		}
	}
}

// pairCrossings counts the crossings between the edges of u and those of v, u left of v, with
// the layers above and below.
func pairCrossings(ln []lnode, u, v int) int {
	c := 0
	for _, side := range [2]func(*lnode) []int{
		func(n *lnode) []int { return n.up },
		func(n *lnode) []int { return n.down },
	} {
		for _, a := range side(&ln[u]) {
			for _, b := range side(&ln[v]) {
				if ln[a].pos > ln[b].pos {
					c++
				}
			}
		}
	}
	return c
}

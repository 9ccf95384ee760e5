package dagview

// placeX gives every lnode its x: layers packed side by side and centred, then a few passes
// that pull each node towards the mean x of its neighbours above (going down) or below
// (going up) while keeping the layer's order and spacing.
func placeX(ln []lnode, layers [][]int) {
	for _, layer := range layers {
		width := 0.0
		for i, v := range layer {
			if i > 0 {
				width += nodeGap
			}
			width += ln[v].w
		}
		x := -width / 2
		for i, v := range layer {
			if i > 0 {
				x += nodeGap
			}
			ln[v].x = x + ln[v].w/2
			x += ln[v].w
		}
	}
	for range placePasses {
		for l := 1; l < len(layers); l++ {
			pull(ln, layers[l], func(v *lnode) []int { return v.up })
		}
		for l := len(layers) - 2; l >= 0; l-- {
			pull(ln, layers[l], func(v *lnode) []int { return v.down })
		}
	}
}

// pull moves a layer's nodes towards their neighbours' mean x. Packing from the left (each
// node at its wish or just right of its left neighbour) drifts right, from the right drifts
// left; the mean of the two keeps the order and the spacing, which both keep.
func pull(ln []lnode, layer []int, neighbours func(*lnode) []int) {
	n := len(layer)
	if n == 0 {
		return
	}
	want := make([]float64, n)
	for i, v := range layer {
		want[i] = ln[v].x
		if nb := neighbours(&ln[v]); len(nb) > 0 {
			sum := 0.0
			for _, u := range nb {
				sum += ln[u].x
			}
			want[i] = sum / float64(len(nb))
		}
	}
	left := make([]float64, n)
	for i, v := range layer {
		left[i] = want[i]
		if i > 0 {
			left[i] = max(want[i], left[i-1]+spacing(ln, layer[i-1], v))
		}
	}
	right := make([]float64, n)
	for i := n - 1; i >= 0; i-- {
		right[i] = want[i]
		if i < n-1 {
			right[i] = min(want[i], right[i+1]-spacing(ln, layer[i], layer[i+1]))
		}
	}
	for i, v := range layer {
		ln[v].x = (left[i] + right[i]) / 2
	}
}

// spacing is the least distance between the centres of two neighbours in a layer.
func spacing(ln []lnode, a, b int) float64 { return (ln[a].w+ln[b].w)/2 + nodeGap }

// finish turns the layered graph into the Layout: y by layer (each layer as tall as its
// tallest box), the picture shifted to start at the margin, and each edge's polyline through
// its dummies.
func finish(g *Graph, ln []lnode, layers [][]int, chains [][]int, crossings int) *Layout {
	layerY := make([]float64, len(layers))
	y := margin
	for l, layer := range layers {
		tallest := 0.0
		for _, v := range layer {
			tallest = max(tallest, ln[v].h)
		}
		layerY[l] = y + tallest/2
		y += tallest + layerGap
	}
	minX, maxX := 0.0, 0.0
	for i, v := range ln {
		if i == 0 || v.x-v.w/2 < minX {
			minX = v.x - v.w/2
		}
		if i == 0 || v.x+v.w/2 > maxX {
			maxX = v.x + v.w/2
		}
	}
	shift := margin - minX
	lay := &Layout{
		Width: maxX - minX + 2*margin, Height: max(y-layerGap+margin, 2*margin),
		Nodes: make([]Box, len(g.Nodes)), Edges: make([][]Point, len(g.Edges)),
		Layers: len(layers), Crossings: crossings,
	}
	for i := range g.Nodes {
		lay.Nodes[i] = Box{X: ln[i].x + shift, Y: layerY[ln[i].layer], W: ln[i].w, H: ln[i].h}
	}
	for ei, e := range g.Edges {
		upper, lower := lay.Nodes[e.To], lay.Nodes[e.From]
		pts := []Point{{upper.X, upper.Y + upper.H/2}}
		for _, d := range chains[ei] {
			pts = append(pts, Point{ln[d].x + shift, layerY[ln[d].layer]})
		}
		lay.Edges[ei] = append(pts, Point{lower.X, lower.Y - lower.H/2})
	}
	return lay
}

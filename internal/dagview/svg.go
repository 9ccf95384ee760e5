package dagview

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// style is the picture's stylesheet, inline so the SVG needs nothing else.
const style = `
text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px;fill:#1d2733}
.hdr{font-size:13px;font-weight:bold}
.edge{fill:none;stroke:#8795a5;stroke-width:1.2}
.cut{fill:none;stroke:#8795a5;stroke-width:1.2;stroke-dasharray:3 3}
.n rect{stroke-width:1.2}
.events rect{fill:#dbe8f6;stroke:#4a78a8}
.redacted rect{fill:#fde6c8;stroke:#c77c1e}
.rejected rect{fill:#f6d2d2;stroke:#b03030}
.gap rect{fill:#fff;stroke:#d0021b;stroke-width:2;stroke-dasharray:5 3}
.gap.unfillable rect{fill:#fbe3e6}
.gap text{fill:#9b0012}
.create rect{fill:#e2f1dd;stroke:#3f7f33}
.head rect{stroke:#1b8a3a;stroke-width:3}
`

// legendHeight is the room the title and legend take above the graph; legendWidth the
// legend's width.
const (
	legendHeight = 64.0
	legendWidth  = 760.0
)

// WriteSVG draws g, laid out by NewLayout, as a standalone SVG document.
func WriteSVG(w io.Writer, g *Graph) error {
	lay := NewLayout(g, boxSizes(g))
	bw := bufio.NewWriter(w)
	title := summary(g, lay)
	// As wide as the graph, the title and the legend.
	width := max(lay.Width, float64(len([]rune(title)))*8+2*margin, legendWidth+2*margin)
	height := lay.Height + legendHeight
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n",
		width, height, width, height)
	fmt.Fprintf(bw, "<title>%s</title>\n<style>%s</style>\n", esc("DAG of "+g.RoomID), style)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="#fbfcfd"/>`+"\n")
	fmt.Fprintf(bw, `<text class="hdr" x="%.0f" y="20">%s</text>`+"\n", margin, esc(title))
	writeLegend(bw)
	fmt.Fprintf(bw, `<g transform="translate(0 %.0f)">`+"\n", legendHeight)
	for _, pts := range lay.Edges {
		fmt.Fprintf(bw, `<polyline class="edge" points="%s"/>`+"\n", points(pts))
	}
	for i, n := range g.Nodes {
		writeNode(bw, n, lay.Nodes[i])
	}
	fmt.Fprintln(bw, "</g>\n</svg>")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write the SVG of %s: %w", g.RoomID, err)
	}
	return nil
}

// summary is the picture's title line.
func summary(g *Graph, lay *Layout) string {
	s := fmt.Sprintf("%s: %d events in %d nodes, %d gaps", g.RoomID, g.Events, len(g.Nodes)-g.Gaps, g.Gaps)
	if g.Around != "" {
		s += fmt.Sprintf(" (depths %d–%d around %s)", g.MinDepth, g.MaxDepth, shortID(g.Around))
	}
	if g.Truncated {
		s += " (cut short: draw less with --around)"
	}
	if lay.Crossings > 0 {
		s += fmt.Sprintf(", %d crossings", lay.Crossings)
	}
	return s
}

func writeLegend(w io.Writer) {
	x := margin
	for _, item := range []struct{ class, text string }{
		{"n events", "events (runs folded)"},
		{"n create", "m.room.create"},
		{"n events head", "head"},
		{"n redacted", "redacted"},
		{"n rejected", "rejected"},
		{"n gap", "gap"},
		{"n gap unfillable", "unfillable gap"},
	} {
		fmt.Fprintf(w, `<g class="%s"><rect x="%.0f" y="32" width="14" height="12"/></g><text x="%.0f" y="42">%s</text>`+"\n",
			item.class, x, x+18, esc(item.text))
		x += 18 + float64(len(item.text))*charWidth + 18
	}
	fmt.Fprintf(w, `<text x="%.0f" y="58" fill="#5b6775">time flows down; a line joins an event to its prev events</text>`+"\n", margin)
}

func writeNode(w io.Writer, n Node, b Box) {
	classes := []string{"n", n.Kind.String()}
	if n.Create {
		classes = append(classes, "create")
	}
	if n.Head {
		classes = append(classes, "head")
	}
	if n.Gap != nil && n.Gap.Unfillable {
		classes = append(classes, "unfillable")
	}
	fmt.Fprintf(w, `<g class="%s" id="%s"><title>%s</title>`, strings.Join(classes, " "), esc(nodeID(n)), esc(tooltip(n)))
	left, top := b.X-b.W/2, b.Y-b.H/2
	if n.Cut {
		fmt.Fprintf(w, `<line class="cut" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, b.X, top-14, b.X, top)
	}
	fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="5"/>`, left, top, b.W, b.H)
	for i, line := range labelLines(n) {
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`, left+boxPadding, top+boxPadding/2+lineHeight*float64(i+1)-3, esc(line))
	}
	fmt.Fprintln(w, "</g>")
}

// nodeID is the element ID of a node, so that a page can link to a gap or an event.
func nodeID(n Node) string {
	if n.Kind == KindGap {
		return "gap-" + n.First
	}
	return "ev-" + n.First
}

func points(pts []Point) string {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", p.X, p.Y)
	}
	return b.String()
}

// esc escapes text for XML character data and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}

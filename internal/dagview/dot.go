package dagview

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// dotColors are the fill and line colours of each kind of node, as in the SVG.
var dotColors = map[Kind][2]string{
	KindEvents:   {"#dbe8f6", "#4a78a8"},
	KindRedacted: {"#fde6c8", "#c77c1e"},
	KindRejected: {"#f6d2d2", "#b03030"},
	KindGap:      {"#ffffff", "#d0021b"},
}

// WriteDOT writes g as Graphviz DOT text (`dot -Tsvg` draws it), with the nodes, colours and
// labels of the SVG; edges go from the earlier node to the later, so time flows down.
func WriteDOT(w io.Writer, g *Graph) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "digraph %s {\n", dotQuote("DAG of "+g.RoomID))
	fmt.Fprintf(bw, "  graph [rankdir=TB, label=%s, labelloc=t, fontname=monospace];\n", dotQuote(summary(g, &Layout{})))
	fmt.Fprintln(bw, `  node [shape=box, style="rounded,filled", fontname=monospace, fontsize=10];`)
	fmt.Fprintln(bw, `  edge [color="#8795a5", arrowhead=none];`)
	for i, n := range g.Nodes {
		colors := dotColors[n.Kind]
		if n.Create {
			colors = [2]string{"#e2f1dd", "#3f7f33"}
		}
		if n.Gap != nil && n.Gap.Unfillable {
			colors[0] = "#fbe3e6"
		}
		if n.Head {
			colors[1] = "#1b8a3a"
		}
		attrs := []string{
			"label=" + dotQuote(strings.Join(labelLines(n), "\n")),
			"tooltip=" + dotQuote(tooltip(n)),
			fmt.Sprintf(`fillcolor="%s", color="%s"`, colors[0], colors[1]),
		}
		if n.Kind == KindGap {
			attrs = append(attrs, `style="rounded,filled,dashed"`, "penwidth=2")
		}
		if n.Head {
			attrs = append(attrs, "penwidth=3")
		}
		fmt.Fprintf(bw, "  n%d [%s];\n", i, strings.Join(attrs, ", "))
	}
	for _, e := range g.Edges {
		fmt.Fprintf(bw, "  n%d -> n%d;\n", e.To, e.From)
	}
	fmt.Fprintln(bw, "}")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write the DOT of %s: %w", g.RoomID, err)
	}
	return nil
}

// dotQuote makes s a DOT double-quoted string: quotes and backslashes escaped, newlines as
// DOT's \n line breaks.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}

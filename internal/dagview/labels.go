package dagview

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Text metrics of the picture's monospace labels.
const (
	fontSize   = 11.0
	charWidth  = 6.7 // of an 11 px monospace glyph
	lineHeight = 14.0
	boxPadding = 8.0
	minBoxW    = 70.0
	maxLabel   = 44 // runes per label line
)

// shortID abbreviates an event ID for a label; the full ID is in the tooltip.
func shortID(id string) string { return clip(id, 13) }

// clip cuts s to n runes, marking the cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// labelLines are the lines written in a node's box.
func labelLines(n Node) []string {
	var lines []string
	switch {
	case n.Kind == KindGap:
		lines = append(lines, "gap "+shortID(n.First))
		state := fmt.Sprintf("below depth %d · %d attempts", n.Gap.BelowDepth, n.Gap.Attempts)
		if n.Gap.Unfillable {
			state += " · unfillable"
		}
		lines = append(lines, state)
		if n.Gap.LastError != "" {
			lines = append(lines, n.Gap.LastError)
		}
	case n.Count == 1:
		lines = append(lines, shortID(n.First)+" "+strings.TrimPrefix(n.Type, "m.room."))
		lines = append(lines, fmt.Sprintf("depth %d", n.MinDepth))
	default:
		what := "events"
		if n.Kind != KindEvents {
			what = n.Kind.String()
		}
		lines = append(lines, fmt.Sprintf("%d %s", n.Count, what))
		lines = append(lines, shortID(n.First)+" → "+shortID(n.Last))
		lines = append(lines, fmt.Sprintf("depth %d–%d", n.MinDepth, n.MaxDepth))
	}
	switch {
	case n.Kind == KindRejected:
		lines[0] += " · rejected"
	case n.Kind == KindRedacted && n.Count == 1:
		lines[0] += " · redacted"
	}
	if n.Head {
		lines[0] += " · head"
	}
	for i, l := range lines {
		lines[i] = clip(l, maxLabel)
	}
	return lines
}

// tooltip is a node's full description, shown on hover.
func tooltip(n Node) string {
	var b strings.Builder
	switch n.Kind {
	case KindGap:
		g := n.Gap
		fmt.Fprintf(&b, "gap %s: missing, below depth %d\n", g.EventID, g.BelowDepth)
		if len(g.ReferencedBy) > 0 {
			fmt.Fprintf(&b, "referenced by %s\n", strings.Join(g.ReferencedBy, ", "))
		}
		fmt.Fprintf(&b, "first seen %s, %d attempts", stamp(g.FirstSeen), g.Attempts)
		if g.Unfillable {
			fmt.Fprintf(&b, ", unfillable: %s", g.UnfillableReason)
		}
		if g.LastError != "" {
			fmt.Fprintf(&b, "\nlast error: %s", g.LastError)
		}
		fmt.Fprintf(&b, "\nnext retry: %s", nextRetry(g.NextAttemptAt))
		for _, p := range g.Peers {
			fmt.Fprintf(&b, "\n%s", peerAnswer(p.Peer, p.Endpoint, p.Outcome, p.Error))
		}
	default:
		if n.Count == 1 {
			fmt.Fprintf(&b, "%s (%s) at depth %d", n.First, n.Type, n.MinDepth)
		} else {
			fmt.Fprintf(&b, "%d %s from %s (%s) at depth %d to %s at depth %d", n.Count, n.Kind, n.First, n.Type, n.MinDepth, n.Last, n.MaxDepth)
		}
		if n.Rejected != "" {
			fmt.Fprintf(&b, "\nrejected: %s", n.Rejected)
		}
		if n.Head {
			b.WriteString("\nforward extremity (head)")
		}
		if n.Cut {
			b.WriteString("\nprev events outside the picture")
		}
	}
	return b.String()
}

// peerAnswer is one line of what a peer answered for a gap.
func peerAnswer(peer, endpoint, outcome, errText string) string {
	s := peer + ": "
	if endpoint != "" {
		s += "/" + endpoint + " "
	}
	s += outcome
	if errText != "" {
		s += ": " + errText
	}
	return s
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// nextRetry says when a gap is tried again: a zero time means at the next pass.
func nextRetry(t time.Time) string {
	if t.IsZero() {
		return "next pass"
	}
	return stamp(t)
}

// boxSizes are the boxes the labels need.
func boxSizes(g *Graph) []Box {
	sizes := make([]Box, len(g.Nodes))
	for i, n := range g.Nodes {
		lines := labelLines(n)
		longest := 0
		for _, l := range lines {
			longest = max(longest, utf8.RuneCountInString(l))
		}
		sizes[i] = Box{W: max(float64(longest)*charWidth+2*boxPadding, minBoxW), H: float64(len(lines))*lineHeight + boxPadding}
	}
	return sizes
}

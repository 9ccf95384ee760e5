package monitoring

import (
	"regexp"
	"slices"
	"strings"
)

// MetricNames lists, sorted and without repeats, the metric names a PromQL expression
// selects. It does not parse PromQL (the Prometheus module is too big a dependency for one
// check); it blanks what can hold identifiers that are not metric names — strings, label
// matchers, ranges, grouping label lists — and keeps the identifiers left that are neither
// function calls nor keywords. Grafana's $variables are blanked first.
func MetricNames(expr string) []string {
	s := stringLiteral.ReplaceAllString(expr, `""`)
	s = grafanaVariables.ReplaceAllString(s, "")
	s = labelMatchers.ReplaceAllString(s, "{}")
	s = ranges.ReplaceAllString(s, "[]")
	s = grouping.ReplaceAllString(s, " ")
	var names []string
	for _, m := range token.FindAllStringSubmatch(s, -1) {
		ident, call := m[1], m[2]
		if ident == "" || call != "" || keywords[strings.ToLower(ident)] {
			continue
		}
		names = append(names, ident)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

var (
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	labelMatchers = regexp.MustCompile(`\{[^}]*\}`)
	ranges        = regexp.MustCompile(`\[[^\]]*\]`)
	grouping      = regexp.MustCompile(`(?i)\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// A number (skipped), or an identifier with the parenthesis of a call if one follows.
	token = regexp.MustCompile(`[0-9.][0-9A-Za-z_.]*|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?`)
)

// keywords are PromQL's words that are not metric names (bar functions and aggregations,
// which a parenthesis follows, and grouping words, whose label lists are blanked with them).
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
}

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
)

// sample is one line of the Prometheus text format: a series and its value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics is a scrape of the manager's /metrics.
type metrics []sample

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)(?: [0-9]+)?$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads the manager's metrics (plain HTTP: the binary's default is not
// --metrics-secure). Only the few series the tests read need parsing, so a line reader does,
// rather than a dependency on Prometheus' own parser.
func scrape(t *testing.T, metricsURL string) metrics {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := localrun.Get(ctx, metricsURL)
	if err != nil {
		t.Fatalf("scrape the manager's metrics: %v", err)
	}
	var out metrics
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

// sum adds the values of the series named name whose labels include every pair of match.
func (ms metrics) sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, s := range ms {
		if s.name == name && hasLabels(s.labels, match) {
			total += s.value
		}
	}
	return total
}

// by adds the values of name's series (filtered by match) per value of label.
func (ms metrics) by(name, label string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ms {
		if s.name == name && hasLabels(s.labels, match) {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

func hasLabels(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// bucket is a cumulative histogram bucket: how many observations were at most le.
type bucket struct {
	le    float64
	count float64
}

// buckets are the histogram's cumulative buckets (every label set of it added up), in order
// of le, minus those of before (a scrape taken earlier; nil for none).
func (ms metrics) buckets(histogram string, before metrics) []bucket {
	add := func(m metrics, sign float64, into map[float64]float64) {
		for _, s := range m {
			if s.name != histogram+"_bucket" {
				continue
			}
			le, err := strconv.ParseFloat(s.labels["le"], 64) // "+Inf" parses to +Inf
			if err != nil {
				continue
			}
			into[le] += sign * s.value
		}
	}
	counts := map[float64]float64{}
	add(ms, 1, counts)
	add(before, -1, counts)
	var out []bucket
	for le, c := range counts {
		out = append(out, bucket{le, c})
	}
	slices.SortFunc(out, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return out
}

// quantile is histogram_quantile over cumulative buckets: linear within the bucket the
// q-th observation falls in (the last finite bound when it falls in +Inf). NaN when empty.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count <= 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].count
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			if b.count == below {
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

// processMemory is a process's resident set (VmRSS) and its peak (VmHWM), in bytes.
func processMemory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("read the memory of PID %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		var kib int64
		if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib); err != nil {
			t.Fatalf("PID %d %s: %q: %v", pid, name, rest, err)
		}
		if name == "VmRSS" {
			rss = kib << 10
		} else {
			peak = kib << 10
		}
	}
	return rss, peak
}

// mib is bytes in MiB, for messages.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// TestQuantile: quantile reads cumulative buckets as Prometheus' histogram_quantile does.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	bs := []bucket{{0.1, 50}, {0.3, 90}, {0.9, 100}, {inf, 100}}
	for _, c := range []struct {
		q, want float64
	}{
		{0.5, 0.1},   // the 50th of 100 is the last of the first bucket
		{0.7, 0.2},   // the 70th: halfway through (0.1, 0.3]
		{0.99, 0.84}, // the 99th: nine tenths through (0.3, 0.9]
	} {
		if got := quantile(c.q, bs); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := quantile(0.99, []bucket{{1, 2}, {inf, 10}}); got != 1 {
		t.Errorf("in the +Inf bucket: %v, want the last finite bound 1", got)
	}
	if got := quantile(0.99, nil); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
	ms := metrics{
		{name: "h_bucket", labels: map[string]string{"le": "1", "result": "a"}, value: 3},
		{name: "h_bucket", labels: map[string]string{"le": "+Inf", "result": "a"}, value: 4},
		{name: "h_bucket", labels: map[string]string{"le": "1", "result": "b"}, value: 5},
		{name: "h_bucket", labels: map[string]string{"le": "+Inf", "result": "b"}, value: 6},
	}
	before := metrics{{name: "h_bucket", labels: map[string]string{"le": "1", "result": "a"}, value: 2}}
	if got := ms.buckets("h", before); len(got) != 2 || got[0] != (bucket{1, 6}) || got[1] != (bucket{inf, 10}) {
		t.Errorf("buckets = %v, want [{1 6} {+Inf 10}]", got)
	}
}

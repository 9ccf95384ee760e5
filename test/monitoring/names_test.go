package monitoring

import (
	"slices"
	"testing"
)

func TestRulesMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`roomsync_room_converged == 0`, []string{"roomsync_room_converged"}},
		{`roomsync_room_gaps > 0 and delta(roomsync_room_gaps[1h]) > 0`, []string{"roomsync_room_gaps"}},
		{`time() - roomsync_room_last_sync_timestamp_seconds > 7200`, []string{"roomsync_room_last_sync_timestamp_seconds"}},
		// Grouping labels, matcher labels and values, and functions are not metrics.
		{`sum by (room, reason) (increase(roomsync_events_rejected_total{room="a{b}",reason=~"x|y"}[30m])) > 0`,
			[]string{"roomsync_events_rejected_total"}},
		{`absent(controller_runtime_active_workers{controller="roomsync"})`, []string{"controller_runtime_active_workers"}},
		{`histogram_quantile(0.95, sum(rate(a_bucket[5m])) by (le, peer)) / ignoring(peer) group_left b`,
			[]string{"a_bucket", "b"}},
		// Grafana's variables, upper-case keywords, numbers with exponents, offsets.
		{`sum by (room) (rate(x_total{peer=~"$peer"}[$__rate_interval])) AND ON (room) y{namespace=~"${namespace}"} offset 1e3s`,
			[]string{"x_total", "y"}},
		{`count(z == 0) or vector(0)`, []string{"z"}},
		{`1-ratio:recorded`, []string{"ratio:recorded"}},
	} {
		if got := MetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("MetricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestDashboardWithoutVariables(t *testing.T) {
	got := WithoutVariables(`rate(x{a=~"$a",b=~"${b}",c=~"${c:regex}"}[$__rate_interval])`)
	if want := `rate(x{a=~".*",b=~".*",c=~".*"}[5m])`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

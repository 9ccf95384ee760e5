package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/test/monitoring"
)

// TestMonitoringMetricsAreServed: every metric the alerting rules and the Grafana dashboard
// name is one this manager's metrics endpoint serves, so a renamed or dropped series fails
// here rather than leaving an alert that can never fire. Series with no sample are not
// served at all, so the test first makes each kind exist: a RoomSync that converges although
// its first peer serves badly signed events (rejections), and one whose only peer is down
// (an unhealthy peer, failed requests).
func TestMonitoringMetricsAreServed(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 27, Events: 300})
	liar := fixturepeer.Start(t, room, fixturepeer.WithLies(fixturepeer.Lie{Kind: fixturepeer.LieBadSignature}))
	honest := fixturepeer.Start(t, room)
	down := fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect}))
	ns := newNamespace(t)
	monitored := fixtureRoomSync(ns, "monitored", room, liar, honest)
	unreachable := fixtureRoomSync(ns, "unreachable", room, down)
	for _, rs := range []*roomsyncv1alpha1.RoomSync{monitored, unreachable} {
		if err := k8sClient.Create(context.Background(), rs); err != nil {
			t.Fatal(err)
		}
	}
	waitForCondition(t, client.ObjectKeyFromObject(monitored), roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	// Every pass of a RoomSync whose only peer is down ends with that peer backed off.
	waitForCondition(t, client.ObjectKeyFromObject(unreachable), roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)

	used := usedMetricNames(t)
	// The series the alerts select, with the labels they select on.
	series := []string{
		fmt.Sprintf(`roomsync_peer_healthy{name="monitored",namespace=%q,peer=%q} 1`, ns, honest.ServerName()),
		fmt.Sprintf(`roomsync_peer_healthy{name="unreachable",namespace=%q,peer=%q} 0`, ns, down.ServerName()),
		fmt.Sprintf(`roomsync_room_last_sync_timestamp_seconds{name="monitored",namespace=%q,room=%q} `, ns, room.ID),
		// At 0 from the first pass, so that the alert has a series before the disk fills.
		fmt.Sprintf(`roomsync_store_full{name="monitored",namespace=%q} 0`, ns),
		fmt.Sprintf(`roomsync_events_rejected_total{reason="bad_signature",room=%q} `, room.ID),
		`controller_runtime_active_workers{controller="roomsync"} `,
		`controller_runtime_reconcile_errors_total{controller="roomsync"} `,
	}
	var metrics string
	eventually(t, 30*time.Second, func() error {
		metrics = scrape(t)
		served := servedNames(metrics)
		var missing []string
		for name, users := range used {
			if !served[name] {
				missing = append(missing, fmt.Sprintf("%s (used by %s)", name, strings.Join(users, ", ")))
			}
		}
		for _, s := range series {
			if !strings.Contains(metrics, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("not served:\n  %s", strings.Join(missing, "\n  "))
		}
		return nil
	})
	t.Logf("%d metric names used by the rules and the dashboard, all served", len(used))

	// A peer's series goes with its RoomSync, as the rooms' do.
	if err := k8sClient.Delete(context.Background(), unreachable); err != nil {
		t.Fatal(err)
	}
	gone := fmt.Sprintf(`roomsync_peer_healthy{name="unreachable",namespace=%q,`, ns)
	eventually(t, 30*time.Second, func() error {
		if strings.Contains(scrape(t), gone) {
			return fmt.Errorf("the deleted RoomSync's peer series is still served")
		}
		return nil
	})
}

// usedMetricNames maps each metric name the rules and the dashboard use to where.
func usedMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	rules, err := monitoring.Rules()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		for _, name := range monitoring.MetricNames(r.Expr) {
			used[name] = append(used[name], "alert "+r.Alert+r.Record)
		}
	}
	dashboard, err := monitoring.LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	queries, err := dashboard.Queries()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		for _, name := range monitoring.MetricNames(q) {
			if !slices.Contains(used[name], "the dashboard") {
				used[name] = append(used[name], "the dashboard")
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("no metric names found in the rules and the dashboard")
	}
	return used
}

// servedNames lists the sample names of a text exposition (a histogram's _bucket, _sum and
// _count, as PromQL names them).
func servedNames(exposition string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/roomsync/roomsync/internal/testenv"
)

// TestRBACGrantsOnlyWhatIsUsed: the generated roles (config/rbac/role.yaml, which the chart
// mirrors) grant exactly these verbs, each for the use named. The suite's manager runs as a
// user bound to nothing else, with leader election on, so a verb missing here fails the suite;
// a verb added without a use fails this test.
func TestRBACGrantsOnlyWhatIsUsed(t *testing.T) {
	used := map[string]string{
		// The reconciler's informer lists and watches RoomSyncs; Get reads one at a reconcile.
		"ClusterRole federation.roomsync.io/roomsyncs get":   "reconciler reads",
		"ClusterRole federation.roomsync.io/roomsyncs list":  "informer",
		"ClusterRole federation.roomsync.io/roomsyncs watch": "informer",
		// Status is written whole (Status().Update), never patched nor read through /status.
		"ClusterRole federation.roomsync.io/roomsyncs/status update": "the deferred status writer",
		// The event recorder (events.k8s.io) creates Events and patches their series.
		"ClusterRole events.k8s.io/events create": "recorder",
		"ClusterRole events.k8s.io/events patch":  "recorder, repeated events",
		// Leader election: a Lease read, created once, renewed and released by Update.
		"Role roomsync-system coordination.k8s.io/leases get":    "leader election",
		"Role roomsync-system coordination.k8s.io/leases create": "leader election",
		"Role roomsync-system coordination.k8s.io/leases update": "leader election, renew and release",
		// --metrics-secure: each caller of the metrics listener is authenticated (its token)
		// and authorized (its right to GET the path) by the API server.
		"ClusterRole authentication.k8s.io/tokenreviews create":        "secure metrics filter",
		"ClusterRole authorization.k8s.io/subjectaccessreviews create": "secure metrics filter",
		// Leader election reports a change of leader as a core Event in its namespace.
		"Role roomsync-system /events create": "leader election events",
		"Role roomsync-system /events patch":  "leader election events, repeated",
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" {
			continue
		}
		var role struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
			t.Fatalf("config/rbac/role.yaml: %v", err)
		}
		scope := role.Kind
		if role.Metadata.Namespace != "" {
			scope += " " + role.Metadata.Namespace
		}
		for _, r := range role.Rules {
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Errorf("%s: rule %+v names resources or URLs; the manager uses none", scope, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						granted[fmt.Sprintf("%s %s/%s %s", scope, g, res, v)] = true
					}
				}
			}
		}
	}
	var extra, missing []string
	for g := range granted {
		if _, ok := used[g]; !ok {
			extra = append(extra, g)
		}
	}
	for u := range used {
		if !granted[u] {
			missing = append(missing, u)
		}
	}
	slices.Sort(extra)
	slices.Sort(missing)
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("the generated RBAC differs from what the manager uses:\n  granted, unused: %v\n  used, not granted: %v", extra, missing)
	}
	t.Logf("%d verbs granted, each used", len(granted))
}

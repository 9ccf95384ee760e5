package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
)

var namespaceSeq atomic.Int32

// newNamespace gives each test a namespace of its own.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", time.Now().UnixNano()%100000, namespaceSeq.Add(1))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

func newRoomSync(ns, name string, mutate ...func(*roomsyncv1alpha1.RoomSync)) *roomsyncv1alpha1.RoomSync {
	rs := &roomsyncv1alpha1.RoomSync{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: roomsyncv1alpha1.RoomSyncSpec{
			Rooms: []roomsyncv1alpha1.Room{{ID: "!one:127.0.0.1:1"}, {ID: "!two:127.0.0.1:1"}},
			// An IP literal needs no DNS, and discovery refuses loopback: the peer fails at
			// once, with no traffic leaving the machine.
			Peers: []roomsyncv1alpha1.Peer{{ServerName: "127.0.0.1:1"}},
		},
	}
	for _, m := range mutate {
		m(rs)
	}
	return rs
}

// eventually polls check every 100ms until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for attempt := 0; attempt < 10000; attempt++ {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

// waitForCondition waits until the stored RoomSync has observed its generation and shows
// the condition with the given status and reason.
// waitForStatus waits, at most 30 s, until check accepts the RoomSync, and returns it.
func waitForStatus(t *testing.T, key client.ObjectKey, check func(*roomsyncv1alpha1.RoomSync) error) *roomsyncv1alpha1.RoomSync {
	t.Helper()
	got := &roomsyncv1alpha1.RoomSync{}
	eventually(t, 30*time.Second, func() error {
		if err := k8sClient.Get(context.Background(), key, got); err != nil {
			return err
		}
		return check(got)
	})
	return got
}

func waitForCondition(t *testing.T, key client.ObjectKey, condType string, status metav1.ConditionStatus, reason string) *roomsyncv1alpha1.RoomSync {
	t.Helper()
	return waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", got.Status.ObservedGeneration, got.Generation)
		}
		c := apimeta.FindStatusCondition(got.Status.Conditions, condType)
		if c == nil {
			return fmt.Errorf("no %s condition in %+v", condType, got.Status.Conditions)
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("%s is %s/%s (%s), want %s/%s", condType, c.Status, c.Reason, c.Message, status, reason)
		}
		return nil
	})
}

func TestUnreachablePeersAreReported(t *testing.T) {
	ns := newNamespace(t)
	rs := newRoomSync(ns, "archive")
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)

	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Reconciling = %+v, want True", c)
	}
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.StalledCondition); c != nil {
		t.Errorf("Stalled = %+v, want absent", c)
	}
	if got.Status.Summary.Rooms != 2 || len(got.Status.Rooms) != 2 || got.Status.Summary.ConvergedRooms != 0 {
		t.Errorf("summary %+v, rooms %+v: want 2 rooms, none converged", got.Status.Summary, got.Status.Rooms)
	}
	for _, room := range got.Status.Rooms {
		if room.Converged || room.LastSyncTime == nil || !strings.Contains(room.LastError, "no peer answered") {
			t.Errorf("room %s: %+v; want a pass that ran, not converged, with the reason", room.ID, room)
		}
	}
	if len(got.Status.Peers) != 1 || got.Status.Peers[0].Healthy || got.Status.Peers[0].LastError == "" {
		t.Errorf("peers %+v: want 127.0.0.1:1 unhealthy with its error", got.Status.Peers)
	}

	// A spec change is a new generation: it is observed, and the status follows the spec.
	got.Spec.Rooms = append(got.Spec.Rooms, roomsyncv1alpha1.Room{ID: "!three:127.0.0.1:1"})
	if err := k8sClient.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	got = waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Generation != 2 || got.Status.ObservedGeneration != 2 || got.Status.Summary.Rooms != 3 {
			return fmt.Errorf("generation %d observed %d rooms %d", got.Generation, got.Status.ObservedGeneration, got.Status.Summary.Rooms)
		}
		return nil
	})

	// The Ready transition is announced with an Event whose reason is the condition's.
	eventually(t, 30*time.Second, func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "archive" && e.Reason == roomsyncv1alpha1.ReasonPeerUnreachable && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no %s warning among %d events", roomsyncv1alpha1.ReasonPeerUnreachable, len(list.Items))
	})
}

func TestSuspendStopsWork(t *testing.T) {
	ns := newNamespace(t)
	rs := newRoomSync(ns, "paused", func(rs *roomsyncv1alpha1.RoomSync) { rs.Spec.Suspend = true })
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSuspended)
	if len(got.Status.Rooms) != 0 || got.Status.Summary.Rooms != 0 {
		t.Errorf("a suspended RoomSync did room work: %+v", got.Status)
	}
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition); c != nil {
		t.Errorf("suspended RoomSync says Reconciling: %+v", c)
	}

	// A reconcile of a suspended object does nothing and asks for no requeue. Its syncer has
	// no store and no identity: a pass would fail.
	r := &RoomSyncReconciler{Client: k8sClient, Syncer: &Syncer{}}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
	if err != nil || res != (ctrl.Result{}) {
		t.Errorf("Reconcile of a suspended RoomSync = %+v, %v; want no requeue, no error", res, err)
	}

	got.Spec.Suspend = false
	if err := k8sClient.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)
}

func TestInvalidPeerURLStallsWithoutRetry(t *testing.T) {
	ns := newNamespace(t)
	// The schema only checks the scheme; the reconciler finds the URL does not parse.
	rs := newRoomSync(ns, "bad-url", func(rs *roomsyncv1alpha1.RoomSync) {
		rs.Spec.Peers = []roomsyncv1alpha1.Peer{
			{ServerName: "good.example", URL: "https://127.0.0.1:1"},
			{ServerName: "bad.example", URL: "https://[::1:8448/"},
		}
	})
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.StalledCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonInvalidSpec)
	ready := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != roomsyncv1alpha1.ReasonInvalidSpec {
		t.Errorf("Ready = %+v, want False/InvalidSpec", ready)
	}
	if ready != nil && !strings.Contains(ready.Message, "spec.peers[1].url") {
		t.Errorf("message %q does not name the bad field", ready.Message)
	}
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition); c != nil {
		t.Errorf("stalled RoomSync says Reconciling: %+v", c)
	}

	// Stalled means no retry: no requeue and no error for the rate limiter to back off on.
	r := &RoomSyncReconciler{Client: k8sClient, Syncer: &Syncer{}}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
	if err != nil || res != (ctrl.Result{}) {
		t.Errorf("Reconcile of a stalled RoomSync = %+v, %v; want no requeue, no error", res, err)
	}

	// Fixing the spec clears Stalled.
	got.Spec.Peers[1].URL = "https://[::1]:8448"
	if err := k8sClient.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	got = waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.StalledCondition); c != nil {
		t.Errorf("Stalled left after the spec was fixed: %+v", c)
	}
}

func TestRequestedAtAnnotationTriggersAPass(t *testing.T) {
	ns := newNamespace(t)
	rs := newRoomSync(ns, "on-demand")
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)

	patch := client.MergeFrom(got.DeepCopy())
	got.Annotations = map[string]string{roomsyncv1alpha1.ReconcileRequestedAnnotation: "2026-11-24T12:00:00Z"}
	if err := k8sClient.Patch(context.Background(), got, patch); err != nil {
		t.Fatal(err)
	}
	got = waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.LastHandledReconcileAt != "2026-11-24T12:00:00Z" {
			return fmt.Errorf("lastHandledReconcileAt = %q", got.Status.LastHandledReconcileAt)
		}
		return nil
	})
}

func TestKubectlGetShowsPrinterColumns(t *testing.T) {
	ns := newNamespace(t)
	rs := newRoomSync(ns, "columns")
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, client.ObjectKeyFromObject(rs), roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)

	out, err := env.Kubectl("get", "rms", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get rms printed %d lines, want a header and one row:\n%s", len(lines), out)
	}
	if header := strings.Fields(lines[0]); strings.Join(header, " ") != "NAME ROOMS CONVERGED EVENTS GAPS READY AGE" {
		t.Errorf("header = %v", header)
	}
	row := strings.Fields(lines[1])
	if len(row) != 7 || row[0] != "columns" || row[1] != "2" || row[2] != "0" || row[3] != "0" || row[4] != "0" || row[5] != "False" {
		t.Errorf("row = %v, want [columns 2 0 0 0 False AGE]", row)
	}

	wide, err := env.Kubectl("get", "roomsyncs.federation.roomsync.io", "-n", ns, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(wide, "STATUS") || !strings.Contains(wide, "no peer answered") {
		t.Errorf("kubectl get -o wide does not show the Ready message:\n%s", wide)
	}
}

func TestKubectlWaitReadsConditions(t *testing.T) {
	ns := newNamespace(t)
	rs := newRoomSync(ns, "stalled", func(rs *roomsyncv1alpha1.RoomSync) {
		rs.Spec.Peers[0].URL = "https://exa mple.org"
	})
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	// kstatus-style conditions are what `kubectl wait` and Flux-style tooling read.
	if out, err := env.Kubectl("wait", "-n", ns, "roomsync/stalled", "--for=condition=Stalled", "--timeout=30s"); err != nil {
		t.Fatalf("kubectl wait for Stalled: %v\n%s", err, out)
	}
}

// TestManifestsApply checks that the kustomize overlays and the sample are accepted by a real
// API server (server-side dry run: nothing runs, everything is validated).
func TestManifestsApply(t *testing.T) {
	root := testenv.RepoRoot()
	rendered, err := env.Kubectl("kustomize", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: CustomResourceDefinition", "kind: Deployment", "name: roomsync-manager-role", "kind: ServiceAccount"} {
		if !strings.Contains(rendered, want) {
			t.Errorf("config/default renders without %q", want)
		}
	}
	tmp := filepath.Join(t.TempDir(), "default.yaml")
	if err := os.WriteFile(tmp, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl("apply", "--dry-run=server", "-f", tmp); err != nil {
		t.Fatalf("config/default does not apply: %v\n%s", err, out)
	}
	ns := newNamespace(t)
	if out, err := env.Kubectl("apply", "--dry-run=server", "-n", ns, "-f", filepath.Join(root, "config", "samples", "federation_v1alpha1_roomsync.yaml")); err != nil {
		t.Fatalf("config/samples does not apply: %v\n%s", err, out)
	}
}

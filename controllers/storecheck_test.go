package controllers

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fixturesync"
	"github.com/roomsync/roomsync/internal/fsck"
	"github.com/roomsync/roomsync/store"
)

// TestCorruptStoreIsReportedNotConvergedOn: a room the store held in full loses 282 of its
// 400 event rows behind the manager's back. The start-up check finds it: a RoomSync naming
// the room stalls with StoreCorrupt (Ready False, a Warning Event, the room's lastError) and
// the room's rows are left alone, where before the counters said "400 events, converged".
// Once fsck has repaired the store, a requested pass checks the room again, syncs it, and it
// converges with its 400 events.
func TestCorruptStoreIsReportedNotConvergedOn(t *testing.T) {
	ctx := context.Background()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 31, Events: 400, JoinRate: 0.03})
	peer := fixturepeer.Start(t, room)
	roomID := string(room.ID)
	// As an earlier run of the manager left it.
	if r := fixturesync.Sync(t, eventStore, room, []*fixturepeer.Peer{peer}, 20); !r.Converged {
		t.Fatalf("filling the store: %+v", r)
	}
	ids := make([]string, len(room.Events))
	for i, e := range room.Events {
		ids[i] = string(e.ID)
	}
	rand.New(rand.NewPCG(31, 282)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	db, err := sql.Open("sqlite", eventStorePath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("DELETE FROM events WHERE event_id IN ('" + strings.Join(ids[:282], "','") + "')")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	// What the manager runs at start-up.
	select {
	case <-syncer.StartStoreCheck(ctx, time.Minute):
	case <-time.After(time.Minute):
		t.Fatal("the store check did not end")
	}
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "damaged", room, peer)
	if err := k8sClient.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonStoreCorrupt)
	ready := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
	if !strings.Contains(ready.Message, "roomsync fsck") || !strings.Contains(ready.Message, "event count is 400, the rows say 118") {
		t.Errorf("Ready message %q: want the problem and fsck", ready.Message)
	}
	if !apimeta.IsStatusConditionTrue(got.Status.Conditions, roomsyncv1alpha1.StalledCondition) {
		t.Errorf("not Stalled: %+v", got.Status.Conditions)
	}
	if st := got.Status.Rooms[0]; st.Converged || !strings.Contains(st.LastError, "damaged") {
		t.Errorf("room status %+v", st)
	}
	eventually(t, 30*time.Second, func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "damaged" && e.Reason == roomsyncv1alpha1.ReasonStoreCorrupt && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no %s warning among %d events", roomsyncv1alpha1.ReasonStoreCorrupt, len(list.Items))
	})
	// Nothing was written on top of the lost rows.
	if problems, err := store.CheckRoomCounters(ctx, eventStore, roomID); err != nil || len(problems) == 0 {
		t.Fatalf("the damaged room changed: %q, %v", problems, err)
	}

	rep, err := fsck.Check(ctx, eventStore, fsck.Options{Room: roomID})
	if err != nil {
		t.Fatal(err)
	}
	if err := fsck.Repair(ctx, eventStore, rep); err != nil || !rep.Summary.Clean {
		t.Fatalf("fsck --repair: %v, %+v", err, rep.Summary)
	}
	patch := client.MergeFrom(got.DeepCopy())
	got.Annotations = map[string]string{roomsyncv1alpha1.ReconcileRequestedAnnotation: "after-fsck"}
	if err := k8sClient.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	got = waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	if got.Status.Summary.Events != 400 || got.Status.Rooms[0].LastError != "" {
		t.Errorf("after the repair: %+v", got.Status)
	}
	if err := eventStore.CheckConsistency(ctx, roomID); err != nil {
		t.Fatal(err)
	}
}

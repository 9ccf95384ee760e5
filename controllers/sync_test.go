package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
)

// These tests run the manager's full loop — reconcile, resolver, store, status — against
// in-process fixture peers that serve signed synthetic rooms.

func peerSpec(p *fixturepeer.Peer) roomsyncv1alpha1.Peer {
	return roomsyncv1alpha1.Peer{ServerName: p.ServerName(), URL: p.URL(), InsecureSkipTLSVerify: true}
}

func fixtureRoomSync(ns, name string, room *fixturepeer.Room, peers ...*fixturepeer.Peer) *roomsyncv1alpha1.RoomSync {
	rs := &roomsyncv1alpha1.RoomSync{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: roomsyncv1alpha1.RoomSyncSpec{
			Rooms: []roomsyncv1alpha1.Room{{ID: string(room.ID)}},
		},
	}
	for _, p := range peers {
		rs.Spec.Peers = append(rs.Spec.Peers, peerSpec(p))
	}
	return rs
}

func TestRoomSyncConvergesAndSaysSo(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 21, Events: 700})
	peer := fixturepeer.Start(t, room)
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "converges", room, peer)
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)

	want := roomsyncv1alpha1.Summary{Rooms: 1, ConvergedRooms: 1, Events: int64(len(room.Events))}
	if got.Status.Summary != want {
		t.Errorf("summary %+v, want %+v", got.Status.Summary, want)
	}
	st := got.Status.Rooms[0]
	if !st.Converged || st.RoomVersion != "11" || st.Events != int64(len(room.Events)) || st.Gaps != 0 ||
		st.ForwardExtremities < 1 || st.EarliestDepth != 1 || st.LatestDepth < 2 || st.LastSyncTime == nil || st.LastError != "" {
		t.Errorf("room status %+v", st)
	}
	if len(got.Status.Peers) != 1 || !got.Status.Peers[0].Healthy || got.Status.Peers[0].LastContact == nil {
		t.Errorf("peer status %+v", got.Status.Peers)
	}
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition); c != nil {
		t.Errorf("converged RoomSync still Reconciling: %+v", c)
	}
	if err := eventStore.CheckConsistency(context.Background(), string(room.ID)); err != nil {
		t.Fatal(err)
	}

	// What people look at: kubectl get, kubectl wait, the metrics endpoint.
	out, err := env.Kubectl("get", "rms", "-n", ns, "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	row := strings.Fields(out)
	if len(row) != 7 || row[1] != "1" || row[2] != "1" || row[3] != fmt.Sprint(len(room.Events)) || row[4] != "0" || row[5] != "True" {
		t.Errorf("kubectl get rms row %v, want [converges 1 1 %d 0 True AGE]", row, len(room.Events))
	}
	if out, err := env.Kubectl("wait", "-n", ns, "roomsync/converges", "--for=condition=Ready", "--timeout=30s"); err != nil {
		t.Fatalf("kubectl wait --for=condition=Ready: %v\n%s", err, out)
	}
	metrics := scrape(t)
	for _, want := range []string{
		fmt.Sprintf(`roomsync_room_converged{name="converges",namespace="%s",room="%s"} 1`, ns, room.ID),
		fmt.Sprintf(`roomsync_room_events{name="converges",namespace="%s",room="%s"} %d`, ns, room.ID, len(room.Events)),
		fmt.Sprintf(`roomsync_events_stored_total{room="%s"} %d`, room.ID, len(room.Events)),
		fmt.Sprintf(`roomsync_federation_requests_total{endpoint="make_join",outcome="ok",peer="%s"}`, peer.ServerName()),
		fmt.Sprintf(`roomsync_federation_requests_total{endpoint="backfill",outcome="ok",peer="%s"}`, peer.ServerName()),
		`roomsync_federation_request_duration_seconds_bucket{endpoint="backfill"`,
		`roomsync_reconcile_duration_seconds_count`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestPeerFailingMidSyncIsReportedAndRecovers: a peer that starts failing while a room is
// half synced turns the RoomSync PeerUnreachable; once it answers again, it converges.
func TestPeerFailingMidSyncIsReportedAndRecovers(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 22, Events: 1500})
	peer := fixturepeer.Start(t, room)
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "flaky", room, peer)
	rs.Spec.Limits = &roomsyncv1alpha1.SyncLimits{BackfillLimit: 100, MissingEventsLimit: 50, MaxEventsPerReconcile: 200}
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.Summary.Events == 0 {
			return fmt.Errorf("no events yet")
		}
		return nil
	})
	peer.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Status: 503})
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonPeerUnreachable)
	if got.Status.Summary.Events >= int64(len(room.Events)) {
		t.Fatalf("the room finished before the peer failed (%d events): the test proves nothing", got.Status.Summary.Events)
	}
	if p := got.Status.Peers; len(p) != 1 || p[0].Healthy || !strings.Contains(p[0].LastError, "503") {
		t.Errorf("peer status %+v: want unhealthy with the 503", p)
	}
	peer.ClearFaults()
	got = waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	if got.Status.Summary.Events != int64(len(room.Events)) || !got.Status.Peers[0].Healthy {
		t.Errorf("after recovery: %+v", got.Status)
	}
}

// TestPartialPeerWaitsThenConverges: only full.test holds the early history, and it is down.
// The RoomSync stores what late.test gives and says, in status and in the Ready message, that
// it waits for full.test, with nothing written off as unfillable. Once full.test is back, the
// first pass (asked for with requestedAt) converges.
func TestPartialPeerWaitsThenConverges(t *testing.T) {
	pp := fixturepeer.StartPartialPeers(t, 26)
	pp.Full.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect})
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "partial", pp.Room, pp.Full, pp.Late)
	rs.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if len(got.Status.Rooms) != 1 || !slices.ContainsFunc(got.Status.Rooms[0].WaitingFor, func(w string) bool { return strings.HasPrefix(w, "peer full.test (") }) {
			return fmt.Errorf("rooms %+v: want waiting for peer full.test", got.Status.Rooms)
		}
		return nil
	})
	room := got.Status.Rooms[0]
	ready := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
	if room.Events == 0 || room.Unfillable != 0 || room.Converged {
		t.Errorf("with full.test down: %+v; want late.test's events, nothing unfillable, not converged", room)
	}
	if ready == nil || ready.Status != metav1.ConditionFalse || !strings.Contains(ready.Message, "waiting for peer full.test (") {
		t.Errorf("Ready = %+v; want False, naming full.test", ready)
	}

	pp.Full.ClearFaults()
	got.Annotations = map[string]string{roomsyncv1alpha1.ReconcileRequestedAnnotation: "full-is-back"}
	if err := k8sClient.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	// The status the first pass after the request writes is already converged.
	got = waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.LastHandledReconcileAt != "full-is-back" {
			return fmt.Errorf("request not handled yet")
		}
		return nil
	})
	if c := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReadyCondition); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("first pass after full.test returned: Ready %+v, rooms %+v; want converged", c, got.Status.Rooms)
	}
	if n := got.Status.Summary.Events; n != int64(len(pp.Room.Events)) {
		t.Errorf("%d events stored, want %d", n, len(pp.Room.Events))
	}
	if w := got.Status.Rooms[0].WaitingFor; len(w) != 0 {
		t.Errorf("converged room still waiting for %v", w)
	}
}

func TestSuspendStopsPulls(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 23, Events: 100})
	peer := fixturepeer.Start(t, room)
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "suspended", room, peer)
	rs.Spec.Suspend = true
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSuspended)
	time.Sleep(time.Second)
	if n := peer.TotalCount(); n != 0 {
		t.Fatalf("a suspended RoomSync made %d requests", n)
	}
	got := &roomsyncv1alpha1.RoomSync{}
	if err := k8sClient.Get(context.Background(), key, got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Suspend = false
	if err := k8sClient.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
}

// TestRequestedAtForcesAPass: with an hour's interval, only the annotation can make the
// operator look again, and it does.
func TestRequestedAtForcesAPass(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 24, Events: 400, Linear: true})
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, 300)))
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "on-demand", room, peer)
	rs.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	if got.Status.Summary.Events != 300 {
		t.Fatalf("%d events before the peer grew, want 300", got.Status.Summary.Events)
	}
	peer.SetHold(fixturepeer.HoldAll())
	patch := client.MergeFrom(got.DeepCopy())
	got.Annotations = map[string]string{roomsyncv1alpha1.ReconcileRequestedAnnotation: "now-1"}
	if err := k8sClient.Patch(context.Background(), got, patch); err != nil {
		t.Fatal(err)
	}
	got = waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.LastHandledReconcileAt != "now-1" || got.Status.Summary.Events != 400 {
			return fmt.Errorf("lastHandledReconcileAt %q, %d events", got.Status.LastHandledReconcileAt, got.Status.Summary.Events)
		}
		return nil
	})
}

// TestRoomSyncsSharingARoom: two RoomSyncs naming one room fill one copy in the store.
func TestRoomSyncsSharingARoom(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 25, Events: 900})
	a := fixturepeer.Start(t, room)
	b := fixturepeer.Start(t, room)
	ns := newNamespace(t)
	for i, p := range []*fixturepeer.Peer{a, b} {
		if err := k8sClient.Create(context.Background(), fixtureRoomSync(ns, fmt.Sprintf("share-%d", i), room, p)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		key := client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("share-%d", i)}
		got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
		if got.Status.Summary.Events != int64(len(room.Events)) {
			t.Errorf("%s: %d events, want %d", key.Name, got.Status.Summary.Events, len(room.Events))
		}
	}
	if err := eventStore.CheckConsistency(context.Background(), string(room.ID)); err != nil {
		t.Fatal(err)
	}
	r, err := eventStore.Room(context.Background(), string(room.ID))
	if err != nil || r.Events != int64(len(room.Events)) {
		t.Fatalf("store room %+v, %v", r, err)
	}

	// Deleting a RoomSync ends its session and its metric series; the events stay, and so
	// does the other RoomSync.
	gone := client.ObjectKey{Namespace: ns, Name: "share-0"}
	kept := client.ObjectKey{Namespace: ns, Name: "share-1"}
	series := func(key client.ObjectKey) string {
		return fmt.Sprintf(`roomsync_room_events{name=%q,namespace=%q,room=%q}`, key.Name, key.Namespace, room.ID)
	}
	if !syncer.hasSession(gone) || !strings.Contains(scrape(t), series(gone)) {
		t.Fatal("share-0 has no session or metric series before its deletion")
	}
	if err := k8sClient.Delete(context.Background(), &roomsyncv1alpha1.RoomSync{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: gone.Name}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if syncer.hasSession(gone) {
			return fmt.Errorf("share-0's session outlived it")
		}
		if metrics := scrape(t); strings.Contains(metrics, series(gone)) || !strings.Contains(metrics, series(kept)) {
			return fmt.Errorf("want share-0's series gone and share-1's kept")
		}
		return nil
	})
	if !syncer.hasSession(kept) {
		t.Error("deleting share-0 ended share-1's session")
	}
	if r, err := eventStore.Room(context.Background(), string(room.ID)); err != nil || r.Events != int64(len(room.Events)) {
		t.Fatalf("after delete: %+v, %v", r, err)
	}
}

func scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestMembershipAgainstASynapseLikePeer: a peer that refuses non-members. IfNeeded (the
// default) joins and converges, and says Joined; Never says NotAMember with the refusal.
func TestMembershipAgainstASynapseLikePeer(t *testing.T) {
	// Seeds of their own: the store is shared by the suite, and a room another test filled
	// would need no join.
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 61, Events: 300})
	peer := fixturepeer.StartSynapseLike(t, room)
	ns := newNamespace(t)

	joins := fixtureRoomSync(ns, "joins", room, peer)
	if err := k8sClient.Create(context.Background(), joins); err != nil {
		t.Fatal(err)
	}
	got := waitForCondition(t, client.ObjectKeyFromObject(joins), roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	if st := got.Status.Rooms[0]; st.Membership != resolver.MembershipJoined || st.Events != int64(len(room.Events))+1 {
		t.Errorf("room status %+v; want joined, the room's events and our join", st)
	}
	if !peer.Joined(operatorServer) {
		t.Error("the peer did not see our join")
	}

	// Another room on a fresh peer, with joining off.
	other := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 62, Events: 100})
	refusing := fixturepeer.StartSynapseLike(t, other)
	never := fixtureRoomSync(ns, "never", other, refusing)
	never.Spec.Membership = &roomsyncv1alpha1.Membership{Join: roomsyncv1alpha1.JoinNever}
	if err := k8sClient.Create(context.Background(), never); err != nil {
		t.Fatal(err)
	}
	got = waitForCondition(t, client.ObjectKeyFromObject(never), roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonNotAMember)
	if st := got.Status.Rooms[0]; st.Membership != resolver.MembershipNotJoined || !strings.Contains(st.MembershipReason, fixturepeer.ErrHostNotInRoom) {
		t.Errorf("room status %+v; want not joined, with the peer's refusal", st)
	}
	if refusing.Joined(operatorServer) || refusing.Count(fixturepeer.EndpointSendJoin) != 0 {
		t.Error("joined with the policy Never")
	}
}

// TestPushedEventsAreStoredAndWake: events pushed to the manager (what PUT /send hands over)
// for a room a RoomSync replicates are stored at once, wake that RoomSync, whose status then
// counts them without any poll, and are counted in the live-path metrics.
func TestPushedEventsAreStoredAndWake(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 63, Events: 200, Linear: true})
	// The peer shows all but the last 10 events; those arrive as a push.
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, 190)))
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "live", room, peer)
	rs.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)

	var pdus []json.RawMessage
	for _, e := range room.Events[190:] {
		pdus = append(pdus, e.JSON)
	}
	results, err := syncer.Receive(context.Background(), peer.ServerName(), pdus)
	if err != nil || len(results) != 10 {
		t.Fatalf("results %v, want 10 entries", results)
	}
	for id, outcome := range results {
		if outcome != "" {
			t.Errorf("%s refused: %s", id, outcome)
		}
	}
	got := waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if got.Status.Summary.Events != int64(len(room.Events)) {
			return fmt.Errorf("%d events in status, want %d", got.Status.Summary.Events, len(room.Events))
		}
		return nil
	})
	if !got.Status.Rooms[0].Converged {
		t.Errorf("room status %+v after the push", got.Status.Rooms[0])
	}
	metrics := scrape(t)
	for _, want := range []string{
		fmt.Sprintf(`roomsync_transactions_received_total{origin=%q}`, peer.ServerName()),
		`roomsync_pdus_received_total{outcome="accepted"}`,
		`roomsync_live_event_latency_seconds_count`,
		fmt.Sprintf(`roomsync_room_joined{name="live",namespace=%q,room=%q} 0`, ns, room.ID),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A transaction of rooms no RoomSync names is refused whole; mixed with a room we
	// replicate, those PDUs are refused one by one.
	other := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 64, Events: 10})
	if res, err := syncer.Receive(context.Background(), peer.ServerName(), []json.RawMessage{other.Events[5].JSON}); !errors.Is(err, resolver.ErrRoomNotReplicated) {
		t.Errorf("a transaction of a room nobody replicates: %v, %v; want %v", res, err, resolver.ErrRoomNotReplicated)
	}
	res, err := syncer.Receive(context.Background(), peer.ServerName(), []json.RawMessage{other.Events[5].JSON, room.Events[199].JSON})
	if err != nil || res[string(room.Events[199].ID)] != "" || len(res) != 2 {
		t.Fatalf("a mixed transaction: %v, %v", res, err)
	}
	for id, outcome := range res {
		if id != string(room.Events[199].ID) && !strings.Contains(outcome, "not replicated") {
			t.Errorf("a PDU of a room nobody replicates: %q", outcome)
		}
	}
}

// TestInviteWakesAJoin: a RoomSync whose room needs no join (IfNeeded, interval 1h) stays out
// until a member invites our user; the invite is countersigned and wakes the RoomSync, which
// joins within seconds, without a poll. Invites to a room whose RoomSync says Never, or that
// no RoomSync names, are refused.
func TestInviteWakesAJoin(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 65, Events: 100})
	peer := fixturepeer.Start(t, room)
	ns := newNamespace(t)
	rs := fixtureRoomSync(ns, "invited", room, peer)
	rs.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	if err := k8sClient.Create(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(rs)
	got := waitForCondition(t, key, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	if m := got.Status.Rooms[0].Membership; m != resolver.MembershipNotJoined {
		t.Fatalf("membership %q before any invite, want NotJoined", m)
	}

	ourUser := id.NewUserID("roomsync", operatorServer)
	invite := func(p *fixturepeer.Peer, r *fixturepeer.Room) (json.RawMessage, error) {
		raw, eventID, err := p.Invite(ourUser)
		if err != nil {
			t.Fatal(err)
		}
		return syncer.Invite(context.Background(), p.ServerName(), federation.Invite{
			RoomID: string(r.ID), EventID: string(eventID), RoomVersion: string(r.Version), Event: raw,
		})
	}
	if _, err := invite(peer, room); err != nil {
		t.Fatalf("invite refused: %v", err)
	}
	waitForStatus(t, key, func(got *roomsyncv1alpha1.RoomSync) error {
		if m := got.Status.Rooms[0].Membership; m != resolver.MembershipJoined {
			return fmt.Errorf("membership %q (%s), want Joined", m, got.Status.Rooms[0].MembershipReason)
		}
		return nil
	})
	if !peer.Joined(operatorServer) {
		t.Error("the peer did not see our join")
	}

	other := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 66, Events: 20})
	otherPeer := fixturepeer.Start(t, other)
	if _, err := invite(otherPeer, other); !errors.Is(err, resolver.ErrRoomNotReplicated) {
		t.Errorf("invite to a room nobody names: %v, want %v", err, resolver.ErrRoomNotReplicated)
	}
	never := fixtureRoomSync(ns, "never", other, otherPeer)
	never.Spec.Membership = &roomsyncv1alpha1.Membership{Join: roomsyncv1alpha1.JoinNever}
	if err := k8sClient.Create(context.Background(), never); err != nil {
		t.Fatal(err)
	}
	waitForCondition(t, client.ObjectKeyFromObject(never), roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged)
	var refusal mautrix.RespError
	if _, err := invite(otherPeer, other); !errors.As(err, &refusal) || refusal.StatusCode != http.StatusForbidden {
		t.Errorf("invite under the policy Never: %v, want 403", err)
	}
	if otherPeer.Joined(operatorServer) {
		t.Error("joined under the policy Never")
	}
}

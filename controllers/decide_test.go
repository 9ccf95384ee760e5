package controllers

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
)

// conditions is what a verdict leaves on the object: each condition's status and reason, ""
// for an absent one.
type conditions struct {
	ready, reconciling, stalled string
}

func conditionsOf(obj *roomsyncv1alpha1.RoomSync) conditions {
	get := func(t string) string {
		c := apimeta.FindStatusCondition(obj.Status.Conditions, t)
		if c == nil {
			return ""
		}
		return string(c.Status) + "/" + c.Reason
	}
	return conditions{get(roomsyncv1alpha1.ReadyCondition), get(roomsyncv1alpha1.ReconcilingCondition), get(roomsyncv1alpha1.StalledCondition)}
}

// TestDecide is the table of what a pass's outcome means: the conditions finish writes from
// it (all three), the message, and when the next pass comes.
func TestDecide(t *testing.T) {
	healthy := []resolver.PeerStatus{{ServerName: "a", Healthy: true}, {ServerName: "b", Healthy: true}}
	oneDown := []resolver.PeerStatus{{ServerName: "a", Healthy: true}, {ServerName: "b", LastError: "503"}}
	allDown := []resolver.PeerStatus{
		{ServerName: "a", LastError: "dial tcp: refused", BackoffUntil: time.Now().Add(8 * time.Second)},
		{ServerName: "b", LastError: "503", BackoffUntil: time.Now().Add(20 * time.Second)},
	}
	noErrors := []resolver.PeerStatus{{ServerName: "a"}}
	// As the store and the resolver wrap a write that found no room (store.IsFull).
	diskFull := fmt.Errorf("sync room !b: insert 50 events into !b: %w",
		&fs.PathError{Op: "write", Path: "/data/events.db-wal", Err: syscall.ENOSPC})
	const (
		readyTrue   = "True/" + roomsyncv1alpha1.ReasonConverged
		syncing     = "False/" + roomsyncv1alpha1.ReasonSyncing
		reconciling = "True/" + roomsyncv1alpha1.ReasonSyncing
	)
	cases := []struct {
		name    string
		rooms   []roomsyncv1alpha1.RoomStatus
		results []resolver.RoomResult
		peers   []resolver.PeerStatus
		want    conditions
		// wantMessage is the whole Ready message, or its start when it ends in "…".
		wantMessage string
		// wantAfter bounds the requeue: [min, max].
		wantAfter [2]time.Duration
		// join is spec.membership.join (IfNeeded when empty).
		join roomsyncv1alpha1.JoinPolicy
	}{
		{
			name:        "all converged: Ready, back at the interval",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true, Events: 10}},
			results:     []resolver.RoomResult{{RoomID: "!a", Converged: true, PeersAnswered: 2}},
			peers:       healthy,
			want:        conditions{ready: readyTrue},
			wantMessage: "1 rooms converged, 10 events stored",
			wantAfter:   [2]time.Duration{4 * time.Minute, 6 * time.Minute},
		},
		{
			name:        "converged with a peer silent: Ready, and says which peer",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true}},
			results:     []resolver.RoomResult{{RoomID: "!a", Converged: true, PeersAnswered: 1}},
			peers:       oneDown,
			want:        conditions{ready: readyTrue},
			wantMessage: "1 rooms converged, 0 events stored (1 of 2 peers not answering: b)",
			wantAfter:   [2]time.Duration{4 * time.Minute, 6 * time.Minute},
		},
		{
			name:        "budget spent with work left: Syncing, again at once",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 3}},
			results:     []resolver.RoomResult{{RoomID: "!a", Stored: 100, BudgetExhausted: true, PeersAnswered: 1}},
			peers:       healthy,
			want:        conditions{ready: syncing, reconciling: reconciling},
			wantMessage: "0 of 1 rooms converged, 3 gaps left",
			wantAfter:   [2]time.Duration{time.Second, time.Second},
		},
		{
			name:        "progress, budget not spent: Syncing, back within 10 s",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 1}},
			results:     []resolver.RoomResult{{RoomID: "!a", Stored: 5, PeersAnswered: 1}},
			peers:       healthy,
			want:        conditions{ready: syncing, reconciling: reconciling},
			wantMessage: "0 of 1 rooms converged, 1 gaps left",
			wantAfter:   [2]time.Duration{9 * time.Second, 11 * time.Second},
		},
		{
			name: "nothing new, gaps waiting for a peer and a key: Syncing, says what for, back within 30 s",
			rooms: []roomsyncv1alpha1.RoomStatus{
				{ID: "!a", Gaps: 2, WaitingFor: []string{"peer b (unreachable)", "the signing key of b"}},
				{ID: "!b", Gaps: 1, WaitingFor: []string{"peer b (unreachable)"}},
			},
			results:     []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 1}, {RoomID: "!b", PeersAnswered: 1}},
			peers:       oneDown,
			want:        conditions{ready: syncing, reconciling: reconciling},
			wantMessage: "0 of 2 rooms converged, 3 gaps left; waiting for peer b (unreachable), the signing key of b",
			wantAfter:   [2]time.Duration{27 * time.Second, 33 * time.Second},
		},
		{
			name:        "a join that failed: JoinFailed, with the reason, back at interval/5",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 1, Membership: resolver.MembershipJoinFailed, MembershipReason: "b: 403 M_FORBIDDEN"}},
			results:     []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 1}},
			peers:       healthy,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonJoinFailed, reconciling: "True/" + roomsyncv1alpha1.ReasonJoinFailed},
			wantMessage: "0 of 1 rooms converged, 1 gaps left; joining !a failed: b: 403 M_FORBIDDEN",
			wantAfter:   [2]time.Duration{54 * time.Second, 66 * time.Second},
		},
		{
			name:        "a room we may not join and cannot see (invite-only): the refusal is an answer, JoinFailed",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Membership: resolver.MembershipJoinFailed, MembershipReason: "b: 403 M_FORBIDDEN: not invited"}},
			results:     []resolver.RoomResult{{RoomID: "!a", Membership: resolver.MembershipJoinFailed, MembershipReason: "b: 403 M_FORBIDDEN: not invited"}},
			peers:       healthy,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonJoinFailed, reconciling: "True/" + roomsyncv1alpha1.ReasonJoinFailed},
			wantMessage: "0 of 1 rooms converged, 0 gaps left; joining !a failed: b: 403 M_FORBIDDEN: not invited",
			wantAfter:   [2]time.Duration{54 * time.Second, 66 * time.Second},
		},
		{
			name:        "refused as a non-member with joining off: NotAMember, back at the interval",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Membership: resolver.MembershipNotJoined, MembershipReason: "refused as a non-member: b: 403"}},
			results:     []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 1}},
			peers:       healthy,
			join:        roomsyncv1alpha1.JoinNever,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonNotAMember, reconciling: "True/" + roomsyncv1alpha1.ReasonNotAMember},
			wantMessage: "0 of 1 rooms converged, 0 gaps left; !a: refused as a non-member: b: 403, and spec.membership.join is Never",
			wantAfter:   [2]time.Duration{4 * time.Minute, 6 * time.Minute},
		},
		{
			name:        "nothing new, unfillable gaps: GapUnfillable, back at interval/5",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 2, Unfillable: 2}},
			results:     []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 2}},
			peers:       healthy,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonGapUnfillable, reconciling: "True/" + roomsyncv1alpha1.ReasonGapUnfillable},
			wantMessage: "0 of 1 rooms converged, 2 gaps left; 2 gaps no peer could fill, retried with back-off",
			wantAfter:   [2]time.Duration{54 * time.Second, 66 * time.Second},
		},
		{
			name:    "the store is full: StoreFull, in the store's words, back within 30 s",
			rooms:   []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true}, {ID: "!b", Gaps: 4}},
			results: []resolver.RoomResult{{RoomID: "!a", Converged: true, PeersAnswered: 2}, {RoomID: "!b", Stored: 50, PeersAnswered: 2, Err: diskFull}},
			peers:   healthy,
			want:    conditions{ready: "False/" + roomsyncv1alpha1.ReasonStoreFull, reconciling: "True/" + roomsyncv1alpha1.ReasonStoreFull},
			wantMessage: "1 of 2 rooms converged; the event store is full, so nothing more is stored until it has room (what it holds is kept): " +
				"sync room !b: insert 50 events into !b: write /data/events.db-wal: no space left on device",
			wantAfter: [2]time.Duration{27 * time.Second, 33 * time.Second},
		},
		{
			name:    "the store is full and no peer answered: the store is said first",
			rooms:   []roomsyncv1alpha1.RoomStatus{{ID: "!b"}},
			results: []resolver.RoomResult{{RoomID: "!b", Err: diskFull}},
			peers:   allDown,
			want:    conditions{ready: "False/" + roomsyncv1alpha1.ReasonStoreFull, reconciling: "True/" + roomsyncv1alpha1.ReasonStoreFull},
			wantMessage: "0 of 1 rooms converged; the event store is full, so nothing more is stored until it has room (what it holds is kept): " +
				"sync room !b: insert 50 events into !b: write /data/events.db-wal: no space left on device",
			wantAfter: [2]time.Duration{27 * time.Second, 33 * time.Second},
		},
		{
			name:        "no peer answered: waiting, until the first back-off ends",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a"}},
			results:     []resolver.RoomResult{{RoomID: "!a", Err: errors.New("room version unknown")}},
			peers:       allDown,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonPeerUnreachable, reconciling: "True/" + roomsyncv1alpha1.ReasonPeerUnreachable},
			wantMessage: "no peer answered: a: dial tcp: refused; b: 503",
			wantAfter:   [2]time.Duration{6 * time.Second, 8 * time.Second},
		},
		{
			name:        "no peer answered and none has an error: our side failed, say so",
			rooms:       []roomsyncv1alpha1.RoomStatus{{ID: "!a"}},
			results:     []resolver.RoomResult{{RoomID: "!a", Err: errors.New("read room: disk I/O error")}},
			peers:       noErrors,
			want:        conditions{ready: "False/" + roomsyncv1alpha1.ReasonPeerUnreachable, reconciling: "True/" + roomsyncv1alpha1.ReasonPeerUnreachable},
			wantMessage: "no peer answered: read room: disk I/O error",
			wantAfter:   [2]time.Duration{30 * time.Second, 30 * time.Second},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &roomsyncv1alpha1.RoomSync{Spec: roomsyncv1alpha1.RoomSyncSpec{Interval: &metav1.Duration{Duration: 5 * time.Minute}}}
			if tc.join != "" {
				obj.Spec.Membership = &roomsyncv1alpha1.Membership{Join: tc.join}
			}
			obj.Status.Rooms = tc.rooms
			obj.Status.Summary = summarize(tc.rooms)
			v, err := decide(obj, tc.results, tc.peers)
			if err != nil {
				v = verdictOf(err)
			}
			writeConditions(obj, v)
			if got := conditionsOf(obj); got != tc.want {
				t.Errorf("conditions %+v, want %+v", got, tc.want)
			}
			ready := apimeta.FindStatusCondition(obj.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
			if ready.Message != tc.wantMessage {
				t.Errorf("message %q, want %q", ready.Message, tc.wantMessage)
			}
			if v.RequeueAfter < tc.wantAfter[0] || v.RequeueAfter > tc.wantAfter[1] {
				t.Errorf("requeue after %v, want %v to %v", v.RequeueAfter, tc.wantAfter[0], tc.wantAfter[1])
			}
		})
	}
}

// TestVerdictOfErrors: the three error kinds and suspension, as finish writes them.
func TestVerdictOfErrors(t *testing.T) {
	cases := []struct {
		name        string
		v           verdict
		want        conditions
		wantMessage string
		wantAfter   time.Duration
	}{
		{"stalling", verdictOf(&stallingError{Reason: roomsyncv1alpha1.ReasonInvalidSpec, Err: errors.New("bad url")}),
			conditions{ready: "False/InvalidSpec", stalled: "True/InvalidSpec"}, "bad url", 0},
		{"waiting", verdictOf(&waitingError{Reason: roomsyncv1alpha1.ReasonPeerUnreachable, Err: errors.New("no peer"), RequeueAfter: 7 * time.Second}),
			conditions{ready: "False/PeerUnreachable", reconciling: "True/PeerUnreachable"}, "no peer", 7 * time.Second},
		{"transient", verdictOf(errors.New("store locked")),
			conditions{ready: "False/Syncing", reconciling: "True/Syncing"}, "store locked", 0},
		{"suspended", suspended(),
			conditions{ready: "False/Suspended"}, "spec.suspend is true: no federation pulls; stored events are kept", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &roomsyncv1alpha1.RoomSync{}
			// Conditions from an earlier pass must go where the verdict has none.
			writeConditions(obj, verdict{Reconciling: true, Stalled: true, Reason: "Earlier", Message: "earlier"})
			writeConditions(obj, tc.v)
			if got := conditionsOf(obj); got != tc.want {
				t.Errorf("conditions %+v, want %+v", got, tc.want)
			}
			if m := apimeta.FindStatusCondition(obj.Status.Conditions, roomsyncv1alpha1.ReadyCondition).Message; m != tc.wantMessage {
				t.Errorf("message %q, want %q", m, tc.wantMessage)
			}
			if tc.v.RequeueAfter != tc.wantAfter {
				t.Errorf("requeue %v, want %v", tc.v.RequeueAfter, tc.wantAfter)
			}
			for _, c := range obj.Status.Conditions {
				if strings.Contains(c.Reason, "Earlier") {
					t.Errorf("condition %s kept from an earlier pass", c.Type)
				}
			}
		})
	}
}

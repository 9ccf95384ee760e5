package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
)

// TestDecide is the table of what a pass's outcome means for conditions and the next pass.
func TestDecide(t *testing.T) {
	healthy := []resolver.PeerStatus{{ServerName: "a", Healthy: true}, {ServerName: "b", Healthy: true}}
	oneDown := []resolver.PeerStatus{{ServerName: "a", Healthy: true}, {ServerName: "b", LastError: "503"}}
	allDown := []resolver.PeerStatus{
		{ServerName: "a", LastError: "dial tcp: refused", BackoffUntil: time.Now().Add(8 * time.Second)},
		{ServerName: "b", LastError: "503", BackoffUntil: time.Now().Add(20 * time.Second)},
	}
	cases := []struct {
		name        string
		rooms       []roomsyncv1alpha1.RoomStatus
		results     []resolver.RoomResult
		peers       []resolver.PeerStatus
		wantReason  string
		wantReady   metav1.ConditionStatus
		wantMessage string
		// wantAfter bounds the requeue: [min, max].
		wantAfter   [2]time.Duration
		wantWaiting bool
	}{
		{
			name:       "all converged: Ready, back at the interval",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true, Events: 10}},
			results:    []resolver.RoomResult{{RoomID: "!a", Converged: true, PeersAnswered: 2}},
			peers:      healthy,
			wantReason: roomsyncv1alpha1.ReasonConverged, wantReady: metav1.ConditionTrue,
			wantMessage: "1 rooms converged, 10 events stored",
			wantAfter:   [2]time.Duration{4 * time.Minute, 6 * time.Minute},
		},
		{
			name:       "converged with a peer silent: Ready, and says which peer",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true}},
			results:    []resolver.RoomResult{{RoomID: "!a", Converged: true, PeersAnswered: 1}},
			peers:      oneDown,
			wantReason: roomsyncv1alpha1.ReasonConverged, wantReady: metav1.ConditionTrue,
			wantMessage: "1 of 2 peers not answering: b",
			wantAfter:   [2]time.Duration{4 * time.Minute, 6 * time.Minute},
		},
		{
			name:       "budget spent with work left: Syncing, again at once",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 3}},
			results:    []resolver.RoomResult{{RoomID: "!a", Stored: 100, BudgetExhausted: true, PeersAnswered: 1}},
			peers:      healthy,
			wantReason: roomsyncv1alpha1.ReasonSyncing, wantReady: metav1.ConditionFalse,
			wantAfter: [2]time.Duration{time.Second, time.Second},
		},
		{
			name:       "progress, budget not spent: Syncing, back within 10 s",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 1}},
			results:    []resolver.RoomResult{{RoomID: "!a", Stored: 5, PeersAnswered: 1}},
			peers:      healthy,
			wantReason: roomsyncv1alpha1.ReasonSyncing, wantReady: metav1.ConditionFalse,
			wantAfter: [2]time.Duration{9 * time.Second, 11 * time.Second},
		},
		{
			name:       "nothing new, unfillable gaps: GapUnfillable, back at interval/5",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 2, Unfillable: 2}},
			results:    []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 2}},
			peers:      healthy,
			wantReason: roomsyncv1alpha1.ReasonGapUnfillable, wantReady: metav1.ConditionFalse,
			wantMessage: "2 gaps no peer could fill",
			wantAfter:   [2]time.Duration{54 * time.Second, 66 * time.Second},
		},
		{
			name:       "no peer answered: waiting, until the first back-off ends",
			rooms:      []roomsyncv1alpha1.RoomStatus{{ID: "!a"}},
			results:    []resolver.RoomResult{{RoomID: "!a", Err: errors.New("room version unknown")}},
			peers:      allDown,
			wantReason: roomsyncv1alpha1.ReasonPeerUnreachable, wantWaiting: true,
			wantMessage: "a: dial tcp: refused",
			wantAfter:   [2]time.Duration{6 * time.Second, 8 * time.Second},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &roomsyncv1alpha1.RoomSync{Spec: roomsyncv1alpha1.RoomSyncSpec{Interval: &metav1.Duration{Duration: 5 * time.Minute}}}
			obj.Status.Rooms = tc.rooms
			obj.Status.Summary = summarize(tc.rooms)
			res, err := decide(obj, tc.results, tc.peers)
			after := res.RequeueAfter
			if tc.wantWaiting {
				w, ok := asWaiting(err)
				if !ok || w.Reason != tc.wantReason || !strings.Contains(w.Err.Error(), tc.wantMessage) {
					t.Fatalf("decide = %+v, %v; want waiting %s mentioning %q", res, err, tc.wantReason, tc.wantMessage)
				}
				after = w.RequeueAfter
			} else {
				if err != nil {
					t.Fatalf("decide error %v", err)
				}
				c := apimeta.FindStatusCondition(obj.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
				if c == nil || c.Reason != tc.wantReason || c.Status != tc.wantReady || !strings.Contains(c.Message, tc.wantMessage) {
					t.Fatalf("Ready = %+v; want %s/%s mentioning %q", c, tc.wantReady, tc.wantReason, tc.wantMessage)
				}
			}
			if after < tc.wantAfter[0] || after > tc.wantAfter[1] {
				t.Errorf("requeue after %v, want %v to %v", after, tc.wantAfter[0], tc.wantAfter[1])
			}
		})
	}
}

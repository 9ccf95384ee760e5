package controllers

import (
	"fmt"
	"math"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
)

// roomStatusesForSpec returns one status entry per spec room, in spec order, keeping what was
// known of rooms that stay and dropping rooms no longer named.
func roomStatusesForSpec(rooms []roomsyncv1alpha1.Room, known []roomsyncv1alpha1.RoomStatus) []roomsyncv1alpha1.RoomStatus {
	byID := make(map[string]roomsyncv1alpha1.RoomStatus, len(known))
	for _, st := range known {
		byID[st.ID] = st
	}
	out := make([]roomsyncv1alpha1.RoomStatus, 0, len(rooms))
	for _, room := range rooms {
		st, ok := byID[room.ID]
		if !ok {
			st = roomsyncv1alpha1.RoomStatus{ID: room.ID}
		}
		out = append(out, st)
	}
	return out
}

// peerStatusesForSpec keeps what was known of the peers still named, in spec order. A peer
// gets an entry once it has been contacted: before that nothing honest can be said of it.
func peerStatusesForSpec(peers []roomsyncv1alpha1.Peer, known []roomsyncv1alpha1.PeerStatus) []roomsyncv1alpha1.PeerStatus {
	byName := make(map[string]roomsyncv1alpha1.PeerStatus, len(known))
	for _, st := range known {
		byName[st.ServerName] = st
	}
	var out []roomsyncv1alpha1.PeerStatus
	for _, peer := range peers {
		if st, ok := byName[peer.ServerName]; ok {
			out = append(out, st)
		}
	}
	return out
}

// summarize adds up the rooms for the printer columns.
func summarize(rooms []roomsyncv1alpha1.RoomStatus) roomsyncv1alpha1.Summary {
	s := roomsyncv1alpha1.Summary{Rooms: int32(len(rooms))}
	for _, room := range rooms {
		if room.Converged {
			s.ConvergedRooms++
		}
		s.Events += room.Events
		s.Gaps += room.Gaps
		s.Unfillable += room.Unfillable
	}
	return s
}

// applyResults writes the pass results into the room statuses (spec order is kept).
func applyResults(obj *roomsyncv1alpha1.RoomSync, results []resolver.RoomResult, now metav1.Time) {
	byID := make(map[string]resolver.RoomResult, len(results))
	for _, r := range results {
		byID[r.RoomID] = r
	}
	for i := range obj.Status.Rooms {
		st := &obj.Status.Rooms[i]
		r, ok := byID[st.ID]
		if !ok {
			continue
		}
		if r.RoomVersion != "" {
			st.RoomVersion = r.RoomVersion
		}
		// A pass that failed before reading the room back leaves what was known of it.
		if r.Room.ID != "" {
			st.Events = r.Room.Events
			st.ForwardExtremities = int32(min(r.Room.ForwardExtremities, math.MaxInt32))
			st.EarliestDepth = r.Room.MinDepth
			st.LatestDepth = r.Room.MaxDepth
			st.Gaps = int64(r.Gaps + len(r.UnknownHeads))
			st.Unfillable = int64(r.Unfillable)
		}
		st.Converged = r.Converged
		st.LastSyncTime = &now
		st.LastError = ""
		if r.Err != nil {
			st.LastError = truncate(r.Err.Error(), 512)
		}
	}
}

// applyPeers writes the resolver's view of the peers into the peer statuses.
func applyPeers(obj *roomsyncv1alpha1.RoomSync, peers []resolver.PeerStatus) {
	out := make([]roomsyncv1alpha1.PeerStatus, 0, len(peers))
	for _, p := range peers {
		st := roomsyncv1alpha1.PeerStatus{ServerName: p.ServerName, Healthy: p.Healthy, LastError: truncate(p.LastError, 512)}
		if !p.LastContact.IsZero() {
			t := metav1.NewTime(p.LastContact)
			st.LastContact = &t
		}
		out = append(out, st)
	}
	obj.Status.Peers = out
}

// decide sets the conditions after a pass and says when to come back: soon while there is
// progress, after the peers' back-off when none answered, at the interval once converged.
func decide(obj *roomsyncv1alpha1.RoomSync, results []resolver.RoomResult, peers []resolver.PeerStatus) (ctrl.Result, error) {
	s := obj.Status.Summary
	interval := obj.SyncInterval()
	if s.ConvergedRooms == s.Rooms {
		msg := fmt.Sprintf("%d rooms converged, %d events stored", s.Rooms, s.Events)
		// Converged means every head of the peers that answered is stored: say who did not.
		var silent []string
		for _, p := range peers {
			if !p.Healthy {
				silent = append(silent, p.ServerName)
			}
		}
		if len(silent) > 0 {
			msg += fmt.Sprintf(" (%d of %d peers not answering: %s)", len(silent), len(peers), strings.Join(silent, ", "))
		}
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonConverged, msg)
		apimeta.RemoveStatusCondition(&obj.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition)
		return ctrl.Result{RequeueAfter: jitter(interval)}, nil
	}

	answered, progress, more := false, false, false
	for _, r := range results {
		answered = answered || r.PeersAnswered > 0
		progress = progress || r.Stored > 0
		more = more || r.BudgetExhausted
	}
	if !answered {
		var errs []string
		for _, p := range peers {
			if p.LastError != "" {
				errs = append(errs, p.ServerName+": "+truncate(p.LastError, 200))
			}
		}
		if len(errs) == 0 {
			// No peer error recorded: the pass failed on our side (the store, say).
			for _, r := range results {
				if r.Err != nil {
					errs = append(errs, truncate(r.Err.Error(), 200))
					break
				}
			}
		}
		// Come back when the first peer's back-off ends, which is when a request can go out.
		wait := min(interval/5, 30*time.Second)
		if next := nextPeerRetry(peers); !next.IsZero() {
			wait = min(max(time.Until(next), time.Second), interval)
		}
		return ctrl.Result{}, &waitingError{
			Reason:       roomsyncv1alpha1.ReasonPeerUnreachable,
			Err:          fmt.Errorf("no peer answered: %s", strings.Join(errs, "; ")),
			RequeueAfter: wait,
		}
	}
	msg := fmt.Sprintf("%d of %d rooms converged, %d gaps left", s.ConvergedRooms, s.Rooms, s.Gaps)
	if more {
		// A pass stopped at its budget with work left: go on at once.
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSyncing, msg)
		setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonSyncing, msg)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if progress {
		// Progress without a full budget: the rest waits on peers or gap back-offs.
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSyncing, msg)
		setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonSyncing, msg)
		return ctrl.Result{RequeueAfter: jitter(min(interval/10, 10*time.Second))}, nil
	}
	if s.Unfillable > 0 {
		msg = fmt.Sprintf("%s; %d gaps no peer could fill, retried with back-off", msg, s.Unfillable)
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonGapUnfillable, msg)
		setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonGapUnfillable, msg)
		return ctrl.Result{RequeueAfter: jitter(interval / 5)}, nil
	}
	setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSyncing, msg)
	setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonSyncing, msg)
	return ctrl.Result{RequeueAfter: jitter(min(interval/5, 30*time.Second))}, nil
}

// nextPeerRetry is the end of the shortest peer back-off (zero when a peer is available now).
func nextPeerRetry(peers []resolver.PeerStatus) time.Time {
	var next time.Time
	for _, p := range peers {
		if p.Healthy {
			return time.Time{}
		}
		if next.IsZero() || p.BackoffUntil.Before(next) {
			next = p.BackoffUntil
		}
	}
	return next
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

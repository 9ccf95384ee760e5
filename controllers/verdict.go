package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// verdict is what a reconcile concluded: the conditions to write and when to come back. The
// steps only return verdicts and typed errors; finish is the one place that turns them into
// conditions (see writeConditions).
type verdict struct {
	// Ready: every room converged.
	Ready bool
	// Stalled: nothing changes until the spec does; no requeue.
	Stalled bool
	// Reconciling: work remains and a pass will come back for it. False for Ready, Stalled
	// and Suspended.
	Reconciling  bool
	Reason       string
	Message      string
	RequeueAfter time.Duration
}

// verdictOf turns a step's error into a verdict: stalling errors stall, waiting errors wait
// for their RequeueAfter, and other errors are transient (controller-runtime backs off).
func verdictOf(err error) verdict {
	if s, ok := asStalling(err); ok {
		return verdict{Stalled: true, Reason: s.Reason, Message: s.Err.Error()}
	}
	if w, ok := asWaiting(err); ok {
		return verdict{Reconciling: true, Reason: w.Reason, Message: w.Err.Error(), RequeueAfter: w.RequeueAfter}
	}
	return verdict{Reconciling: true, Reason: roomsyncv1alpha1.ReasonSyncing, Message: err.Error()}
}

// suspended is the verdict on a RoomSync with spec.suspend. Ready goes False: a suspended
// RoomSync no longer keeps its rooms up to date, whatever they held when it was suspended.
func suspended() verdict {
	return verdict{Reason: roomsyncv1alpha1.ReasonSuspended, Message: "spec.suspend is true: no federation pulls; stored events are kept"}
}

// writeConditions sets Ready, Reconciling and Stalled from a verdict.
func writeConditions(obj *roomsyncv1alpha1.RoomSync, v verdict) {
	set := func(condType string, on bool, reason string) {
		status := metav1.ConditionFalse
		if on {
			status = metav1.ConditionTrue
		}
		apimeta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: v.Message, ObservedGeneration: obj.Generation,
		})
	}
	set(roomsyncv1alpha1.ReadyCondition, v.Ready, v.Reason)
	for _, c := range []struct {
		condType string
		on       bool
	}{{roomsyncv1alpha1.ReconcilingCondition, v.Reconciling}, {roomsyncv1alpha1.StalledCondition, v.Stalled}} {
		// kstatus reads an absent condition as False: only a True one is written.
		if c.on {
			set(c.condType, true, v.Reason)
		} else {
			apimeta.RemoveStatusCondition(&obj.Status.Conditions, c.condType)
		}
	}
}

// decide judges a pass from the status it left (summary and rooms), the results and the
// peers: converged, still syncing (come back soon while there is progress, at once while a
// budget ran out), waiting for gaps' back-off, or waiting for peers that did not answer.
func decide(obj *roomsyncv1alpha1.RoomSync, results []resolver.RoomResult, peers []resolver.PeerStatus) (verdict, error) {
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
		return verdict{Ready: true, Reason: roomsyncv1alpha1.ReasonConverged, Message: msg, RequeueAfter: jitter(interval)}, nil
	}

	if err := storeFullError(results); err != nil {
		// No peer fixes this, so it is said first, in the store's words. A write that found
		// the store full was rolled back whole: what it holds is kept. A pass every
		// interval/5 (30 s at most) finds out when there is room again.
		return verdict{}, &waitingError{
			Reason: roomsyncv1alpha1.ReasonStoreFull,
			Err: fmt.Errorf("%d of %d rooms converged; the event store is full, so nothing more is stored until it has room (what it holds is kept): %s",
				s.ConvergedRooms, s.Rooms, truncate(err.Error(), 300)),
			RequeueAfter: jitter(min(interval/5, 30*time.Second)),
		}
	}
	answered, progress, more := false, false, false
	for _, r := range results {
		// A peer that refused us (as a non-member, or our join) answered too.
		refused := r.Membership == resolver.MembershipJoinFailed || (r.Membership == resolver.MembershipNotJoined && r.MembershipReason != "")
		answered = answered || r.PeersAnswered > 0 || refused
		progress = progress || r.Stored > 0
		more = more || r.BudgetExhausted
	}
	if !answered {
		return verdict{}, noPeerAnswered(results, peers, interval)
	}
	msg := fmt.Sprintf("%d of %d rooms converged, %d gaps left", s.ConvergedRooms, s.Rooms, s.Gaps)
	// A room we could not join, or were refused as a non-member with joining off, says so
	// first: no pass fixes that by itself.
	for _, room := range obj.Status.Rooms {
		if room.Converged {
			continue
		}
		switch {
		case room.Membership == resolver.MembershipJoinFailed:
			return verdict{Reconciling: true, Reason: roomsyncv1alpha1.ReasonJoinFailed, RequeueAfter: jitter(min(interval/5, 5*time.Minute)),
				Message: fmt.Sprintf("%s; joining %s failed: %s", msg, room.ID, room.MembershipReason)}, nil
		case room.Membership == resolver.MembershipNotJoined && room.MembershipReason != "" && joinPolicyOf(obj.Spec.Membership) == resolver.JoinNever:
			return verdict{Reconciling: true, Reason: roomsyncv1alpha1.ReasonNotAMember, RequeueAfter: jitter(interval),
				Message: fmt.Sprintf("%s; %s: %s, and spec.membership.join is Never", msg, room.ID, room.MembershipReason)}, nil
		}
	}
	if waiting := waitingFor(obj.Status.Rooms); waiting != "" {
		msg += "; waiting for " + waiting
	}
	syncing := verdict{Reconciling: true, Reason: roomsyncv1alpha1.ReasonSyncing, Message: msg}
	switch {
	case more:
		// A pass stopped at its budget with work left: go on at once.
		syncing.RequeueAfter = time.Second
	case progress:
		// Progress without a full budget: the rest waits on peers or gap back-offs.
		syncing.RequeueAfter = jitter(min(interval/10, 10*time.Second))
	case s.Unfillable > 0:
		syncing.Reason = roomsyncv1alpha1.ReasonGapUnfillable
		syncing.Message = fmt.Sprintf("%s; %d gaps no peer could fill, retried with back-off", msg, s.Unfillable)
		syncing.RequeueAfter = jitter(interval / 5)
	default:
		syncing.RequeueAfter = jitter(min(interval/5, 30*time.Second))
	}
	return syncing, nil
}

// storeFullError is the first pass error that says the store has no room left (store.IsFull).
func storeFullError(results []resolver.RoomResult) error {
	for _, r := range results {
		if store.IsFull(r.Err) {
			return r.Err
		}
	}
	return nil
}

// noPeerAnswered is the waiting error of a pass in which no peer answered: it names each
// peer's last error and comes back when the first peer's back-off ends.
func noPeerAnswered(results []resolver.RoomResult, peers []resolver.PeerStatus, interval time.Duration) error {
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
	wait := min(interval/5, 30*time.Second)
	if next := nextPeerRetry(peers); !next.IsZero() {
		wait = min(max(time.Until(next), time.Second), interval)
	}
	return &waitingError{
		Reason:       roomsyncv1alpha1.ReasonPeerUnreachable,
		Err:          fmt.Errorf("no peer answered: %s", strings.Join(errs, "; ")),
		RequeueAfter: wait,
	}
}

// waitingFor joins what the rooms' gaps wait for, at most three items.
func waitingFor(rooms []roomsyncv1alpha1.RoomStatus) string {
	var all []string
	for _, r := range rooms {
		for _, w := range r.WaitingFor {
			if !slices.Contains(all, w) {
				all = append(all, w)
			}
		}
	}
	if len(all) > 3 {
		all = append(all[:3], fmt.Sprintf("%d more", len(all)-3))
	}
	return strings.Join(all, ", ")
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

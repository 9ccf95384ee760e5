package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types, as kstatus reads them: Ready is the summary, Reconciling says work is in
// progress, Stalled says no progress is possible until something changes.
const (
	ReadyCondition       = "Ready"
	ReconcilingCondition = "Reconciling"
	StalledCondition     = "Stalled"
)

// Condition reasons. Kubernetes Events use the same reasons, so `kubectl describe` and
// `kubectl get events` tell one story.
const (
	// ReasonConverged: every room holds every event its peers gave.
	ReasonConverged = "Converged"
	// ReasonSyncing: a sync pass is under way or more passes are needed.
	ReasonSyncing = "Syncing"
	// ReasonPeerUnreachable: no peer answered for some room.
	ReasonPeerUnreachable = "PeerUnreachable"
	// ReasonGapUnfillable: some gap could be filled by no peer; it is retried with back-off.
	ReasonGapUnfillable = "GapUnfillable"
	// ReasonInvalidSpec: the spec is wrong in a way the schema cannot catch.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonJoinFailed: a room needed joining and the join failed.
	ReasonJoinFailed = "JoinFailed"
	// ReasonNotAMember: a peer refused us as a non-member and spec.membership.join is Never.
	ReasonNotAMember = "NotAMember"
	// ReasonSuspended: spec.suspend is true; nothing is pulled.
	ReasonSuspended = "Suspended"
	// ReasonStoreFull: the event store has no room left (the disk is full, or PostgreSQL
	// answered disk_full); what it holds is kept, and syncing resumes once it has room.
	ReasonStoreFull = "StoreFull"
	// ReasonStoreCorrupt: the manager's start-up check found the event store damaged (the
	// database, or the counters of a room against its rows); the rooms it affects are not
	// synced until `roomsync fsck --repair` (or a restore) fixes it.
	ReasonStoreCorrupt = "StoreCorrupt"
)

// ReconcileRequestedAnnotation asks for a sync pass now when its value changes; the value
// handled last is kept in status.lastHandledReconcileAt.
const ReconcileRequestedAnnotation = "reconcile.roomsync.io/requestedAt"

// DefaultInterval is the interval of a RoomSync whose spec leaves it out (the API server
// normally defaults it; this covers objects built in code).
const DefaultInterval = 5 * time.Minute

// GetConditions returns the status conditions.
func (in *RoomSync) GetConditions() []metav1.Condition {
	return in.Status.Conditions
}

// SetConditions replaces the status conditions.
func (in *RoomSync) SetConditions(conditions []metav1.Condition) {
	in.Status.Conditions = conditions
}

// SyncInterval is the interval between passes of a converged RoomSync.
func (in *RoomSync) SyncInterval() time.Duration {
	if in.Spec.Interval == nil || in.Spec.Interval.Duration <= 0 {
		return DefaultInterval
	}
	return in.Spec.Interval.Duration
}

// Package controllers holds the RoomSync reconciler. It stays thin: it reads the spec, drives
// the resolver, and reports through status conditions, Kubernetes Events and metrics.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

// RoomSyncReconciler reconciles RoomSync objects.
type RoomSyncReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Syncer runs the sync passes; nil leaves every room NotSynced.
	Syncer *Syncer

	// MaxConcurrentReconciles bounds how many RoomSyncs are reconciled at once.
	MaxConcurrentReconciles int
}

// The manager reads RoomSyncs and writes only their status; it never updates specs or adds
// finalizers (deleting a RoomSync keeps the stored events, so there is nothing to clean up).
// +kubebuilder:rbac:groups=federation.roomsync.io,resources=roomsyncs,verbs=get;list;watch
// +kubebuilder:rbac:groups=federation.roomsync.io,resources=roomsyncs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler. Status writes change neither the generation nor
// the requestedAt annotation, so they never trigger a reconcile of their own.
func (r *RoomSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&roomsyncv1alpha1.RoomSync{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, reconcileRequestedPredicate()),
		)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("roomsync").
		Complete(r)
}

// reconcileRequestedPredicate passes updates that change the requestedAt annotation, the
// on-demand "sync now" of `kubectl annotate rs NAME reconcile.roomsync.io/requestedAt=$(date +%s)`.
func reconcileRequestedPredicate() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			if e.ObjectOld == nil || e.ObjectNew == nil {
				return false
			}
			key := roomsyncv1alpha1.ReconcileRequestedAnnotation
			return e.ObjectOld.GetAnnotations()[key] != e.ObjectNew.GetAnnotations()[key]
		},
	}
}

// Reconcile runs one pass over a RoomSync: suspend, validation, then the sync steps. Every exit
// goes through finish, which summarises conditions, records an Event on a change of state and
// patches the status once.
func (r *RoomSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &roomsyncv1alpha1.RoomSync{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) && r.Syncer != nil {
			// Deleted: the stored events stay (see the RoomSync docs); only the session goes.
			r.Syncer.Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := obj.DeepCopy()
	start := time.Now()
	defer func() {
		result, retErr = r.finish(ctx, base, obj, result, retErr, start)
	}()

	if v, ok := obj.GetAnnotations()[roomsyncv1alpha1.ReconcileRequestedAnnotation]; ok {
		obj.Status.LastHandledReconcileAt = v
	}

	if obj.Spec.Suspend {
		ctrl.LoggerFrom(ctx).V(1).Info("Reconciliation is suspended")
		markSuspended(obj)
		return ctrl.Result{}, nil
	}

	if err := validateSpec(&obj.Spec); err != nil {
		return ctrl.Result{}, &stallingError{Reason: roomsyncv1alpha1.ReasonInvalidSpec, Err: err}
	}

	return r.reconcileRooms(ctx, obj)
}

// reconcileRooms runs one bounded sync pass over the rooms and reports their state. Without a
// Syncer (a manager with no event store) nothing is synced, and the RoomSync says so rather
// than claiming a Ready it has not earned.
func (r *RoomSyncReconciler) reconcileRooms(ctx context.Context, obj *roomsyncv1alpha1.RoomSync) (ctrl.Result, error) {
	obj.Status.Rooms = roomStatusesForSpec(obj.Spec.Rooms, obj.Status.Rooms)
	obj.Status.Peers = peerStatusesForSpec(obj.Spec.Peers, obj.Status.Peers)
	obj.Status.Summary = summarize(obj.Status.Rooms)
	if r.Syncer == nil {
		msg := fmt.Sprintf("%d of %d rooms not synced yet: this manager has no event store", len(obj.Status.Rooms), len(obj.Status.Rooms))
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonNotSynced, msg)
		setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonNotSynced, msg)
		return ctrl.Result{RequeueAfter: jitter(obj.SyncInterval())}, nil
	}

	results, peers, err := r.Syncer.Sync(ctx, obj)
	if err != nil {
		// The spec passed validation, so this is the federation client refusing our
		// identity or a peer: nothing a retry fixes.
		return ctrl.Result{}, &stallingError{Reason: roomsyncv1alpha1.ReasonInvalidSpec, Err: err}
	}
	now := metav1.Now()
	applyResults(obj, results, now)
	applyPeers(obj, peers)
	obj.Status.Summary = summarize(obj.Status.Rooms)
	if r.Syncer.Metrics != nil {
		// Rooms dropped from the spec lose their series; the others are set again below.
		r.Syncer.Metrics.forget(obj.Namespace, obj.Name)
		for _, room := range obj.Status.Rooms {
			r.Syncer.Metrics.setRoom(obj.Namespace, obj.Name, room)
		}
	}
	return decide(obj, results, peers)
}

// finish turns the outcome of a pass into conditions, an Event and the requeue decision, then
// patches the status if it changed.
func (r *RoomSyncReconciler) finish(ctx context.Context, base, obj *roomsyncv1alpha1.RoomSync,
	result ctrl.Result, err error, start time.Time) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	outcome := "success"
	defer func() {
		if r.Syncer != nil && r.Syncer.Metrics != nil {
			r.Syncer.Metrics.ReconcileSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
		}
	}()

	if stalling, ok := asStalling(err); ok {
		outcome = "stalled"
		msg := stalling.Err.Error()
		setCondition(obj, roomsyncv1alpha1.StalledCondition, metav1.ConditionTrue, stalling.Reason, msg)
		setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, stalling.Reason, msg)
		apimeta.RemoveStatusCondition(&obj.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition)
		log.Info("Reconciliation stalled until the spec changes", "reason", stalling.Reason, "error", msg)
		// No requeue and no error: retrying cannot help until the spec changes, and a spec
		// change passes the generation predicate.
		result, err = ctrl.Result{}, nil
	} else {
		apimeta.RemoveStatusCondition(&obj.Status.Conditions, roomsyncv1alpha1.StalledCondition)
		if waiting, ok := asWaiting(err); ok {
			outcome = "waiting"
			msg := waiting.Err.Error()
			setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, waiting.Reason, msg)
			setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, waiting.Reason, msg)
			result, err = ctrl.Result{RequeueAfter: waiting.RequeueAfter}, nil
		} else if err != nil {
			outcome = "error"
			setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSyncing, err.Error())
			setCondition(obj, roomsyncv1alpha1.ReconcilingCondition, metav1.ConditionTrue, roomsyncv1alpha1.ReasonSyncing, err.Error())
		}
	}

	obj.Status.ObservedGeneration = obj.Generation
	r.recordTransition(base, obj)

	if !equality.Semantic.DeepEqual(base.Status, obj.Status) {
		// The whole status is written, not a merge patch of the difference: the controller
		// owns it, and a merge patch can neither clear an omitted field nor carry zero
		// counters the printer columns should show.
		uerr := r.Status().Update(ctx, obj)
		switch {
		case uerr == nil, apierrors.IsNotFound(uerr):
			// Written, or the RoomSync was deleted during the pass.
		case apierrors.IsConflict(uerr):
			// The object changed under the pass (a spec edit, say): do it again on fresh data.
			log.V(1).Info("RoomSync changed during the pass; reconciling again")
			if err == nil {
				result = ctrl.Result{RequeueAfter: time.Second}
			}
		default:
			err = errors.Join(err, fmt.Errorf("update status of %s/%s: %w", obj.Namespace, obj.Name, uerr))
		}
	}
	return result, err
}

// recordTransition emits an Event when the Ready condition changes status or reason. Events
// follow transitions, not passes, so a room stuck in one state does not flood the namespace.
func (r *RoomSyncReconciler) recordTransition(base, obj *roomsyncv1alpha1.RoomSync) {
	if r.Recorder == nil {
		return
	}
	now := apimeta.FindStatusCondition(obj.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
	if now == nil {
		return
	}
	before := apimeta.FindStatusCondition(base.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
	if before != nil && before.Status == now.Status && before.Reason == now.Reason {
		return
	}
	eventType := "Warning"
	switch now.Reason {
	case roomsyncv1alpha1.ReasonConverged, roomsyncv1alpha1.ReasonSyncing,
		roomsyncv1alpha1.ReasonNotSynced, roomsyncv1alpha1.ReasonSuspended:
		eventType = "Normal"
	}
	r.Recorder.Eventf(obj, nil, eventType, now.Reason, "Reconcile", "%s", now.Message)
}

// markSuspended reports that nothing is being pulled. Ready goes False: a suspended RoomSync
// no longer keeps its rooms up to date, whatever they held when it was suspended.
func markSuspended(obj *roomsyncv1alpha1.RoomSync) {
	msg := "spec.suspend is true: no federation pulls; stored events are kept"
	setCondition(obj, roomsyncv1alpha1.ReadyCondition, metav1.ConditionFalse, roomsyncv1alpha1.ReasonSuspended, msg)
	apimeta.RemoveStatusCondition(&obj.Status.Conditions, roomsyncv1alpha1.ReconcilingCondition)
	apimeta.RemoveStatusCondition(&obj.Status.Conditions, roomsyncv1alpha1.StalledCondition)
}

func setCondition(obj *roomsyncv1alpha1.RoomSync, condType string, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type:               condType,
		Status:             status,
		Reason:             reason,
		Message:            msg,
		ObservedGeneration: obj.Generation,
	})
}

// jitter spreads requeues over ±10% of d so RoomSyncs created together do not pull together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	spread := d / 5
	return d - spread/2 + time.Duration(rand.Int64N(int64(spread)+1))
}

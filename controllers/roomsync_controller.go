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
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

// RoomSyncReconciler reconciles RoomSync objects.
type RoomSyncReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Syncer runs the sync passes.
	Syncer *Syncer

	// MaxConcurrentReconciles bounds how many RoomSyncs are reconciled at once.
	MaxConcurrentReconciles int
}

// The manager reads RoomSyncs and writes only their status; it never updates specs or adds
// finalizers (deleting a RoomSync keeps the stored events, so there is nothing to clean up).
// +kubebuilder:rbac:groups=federation.roomsync.io,resources=roomsyncs,verbs=get;list;watch
// +kubebuilder:rbac:groups=federation.roomsync.io,resources=roomsyncs/status,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler. Status writes change neither the generation nor
// the requestedAt annotation, so they never trigger a reconcile of their own.
func (r *RoomSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&roomsyncv1alpha1.RoomSync{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, reconcileRequestedPredicate()),
		)).
		// Live events pushed to our listener wake the RoomSyncs naming their rooms.
		WatchesRawSource(source.Channel(r.Syncer.Wakes(), &handler.EnqueueRequestForObject{})).
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

// Reconcile runs one pass over a RoomSync: suspend, validation, then the sync steps. The steps
// return a verdict or a typed error; finish, deferred, is the one writer of conditions: it
// summarises them, records an Event on a change of state and updates the status once.
func (r *RoomSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &roomsyncv1alpha1.RoomSync{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			// Deleted: the stored events stay (see the RoomSync docs); only the session goes.
			r.Syncer.Forget(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := obj.DeepCopy()
	start := time.Now()
	var v verdict
	defer func() {
		result, retErr = r.finish(ctx, base, obj, v, retErr, start)
	}()
	v, retErr = r.reconcile(ctx, obj)
	return ctrl.Result{}, retErr
}

// reconcile runs the steps in order and returns their verdict.
func (r *RoomSyncReconciler) reconcile(ctx context.Context, obj *roomsyncv1alpha1.RoomSync) (verdict, error) {
	// A new value of the requestedAt annotation asks for a pass now: peers and gaps in
	// back-off are asked again.
	requested := false
	if v, ok := obj.GetAnnotations()[roomsyncv1alpha1.ReconcileRequestedAnnotation]; ok {
		requested = v != obj.Status.LastHandledReconcileAt
		obj.Status.LastHandledReconcileAt = v
	}
	if obj.Spec.Suspend {
		ctrl.LoggerFrom(ctx).V(1).Info("Reconciliation is suspended")
		// A suspended RoomSync's last figures would keep its alerts firing: its series go.
		if r.Syncer.Metrics != nil {
			r.Syncer.Metrics.forget(obj.Namespace, obj.Name)
		}
		return suspended(), nil
	}
	if err := validateSpec(&obj.Spec); err != nil {
		return verdict{}, &stallingError{Reason: roomsyncv1alpha1.ReasonInvalidSpec, Err: err}
	}
	return r.reconcileRooms(ctx, obj, requested)
}

// reconcileRooms runs one bounded sync pass over the rooms and reports their state.
func (r *RoomSyncReconciler) reconcileRooms(ctx context.Context, obj *roomsyncv1alpha1.RoomSync, retryNow bool) (verdict, error) {
	obj.Status.Rooms = roomStatusesForSpec(obj.Spec.Rooms, obj.Status.Rooms)
	obj.Status.Peers = peerStatusesForSpec(obj.Spec.Peers, obj.Status.Peers)
	obj.Status.Summary = summarize(obj.Status.Rooms)
	// A damaged store is reported, not synced on (see StartStoreCheck).
	damage, err := r.Syncer.damageOf(ctx, roomIDs(obj))
	if err != nil {
		return verdict{}, err
	}
	if damage != nil {
		damage.markRooms(obj.Status.Rooms)
		obj.Status.Summary = summarize(obj.Status.Rooms)
		if r.Syncer.Metrics != nil {
			for _, room := range obj.Status.Rooms {
				r.Syncer.Metrics.setRoom(obj.Namespace, obj.Name, room)
			}
		}
		return verdict{}, damage.err(obj.Namespace, obj.Name)
	}
	results, peers, err := r.Syncer.Sync(ctx, obj, retryNow)
	if err != nil {
		// The spec passed validation, so this is the federation client refusing our
		// identity or a peer: nothing a retry fixes.
		return verdict{}, &stallingError{Reason: roomsyncv1alpha1.ReasonInvalidSpec, Err: err}
	}
	now := metav1.Now()
	applyResults(obj, results, now)
	applyPeers(obj, peers)
	obj.Status.Summary = summarize(obj.Status.Rooms)
	if r.Syncer.Metrics != nil {
		// Rooms and peers dropped from the spec lose their series; the others are set again
		// below.
		r.Syncer.Metrics.forget(obj.Namespace, obj.Name)
		for _, room := range obj.Status.Rooms {
			r.Syncer.Metrics.setRoom(obj.Namespace, obj.Name, room)
		}
		for _, peer := range peers {
			r.Syncer.Metrics.setPeer(obj.Namespace, obj.Name, peer)
		}
	}
	v, err := decide(obj, results, peers)
	if r.Syncer.Metrics != nil {
		r.Syncer.Metrics.setStoreFull(obj.Namespace, obj.Name, err)
	}
	return v, err
}

// finish writes the conditions of a verdict (or of a step's error), records an Event on a
// change of state, and updates the status if it changed. Stalled RoomSyncs are not requeued:
// a spec change passes the generation predicate. Transient errors go back to
// controller-runtime, which backs off.
func (r *RoomSyncReconciler) finish(ctx context.Context, base, obj *roomsyncv1alpha1.RoomSync,
	v verdict, err error, start time.Time) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	outcome := "success"
	if err != nil {
		v = verdictOf(err)
		switch {
		case v.Stalled:
			outcome, err = "stalled", nil
			log.Info("Reconciliation stalled: no retry until the spec changes or a pass is requested", "reason", v.Reason, "error", v.Message)
		case v.RequeueAfter > 0:
			outcome, err = "waiting", nil
		default:
			outcome = "error"
		}
	}
	defer func() {
		if r.Syncer.Metrics != nil {
			r.Syncer.Metrics.ReconcileSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
		}
	}()
	writeConditions(obj, v)
	obj.Status.ObservedGeneration = obj.Generation
	r.recordTransition(base, obj)

	result := ctrl.Result{RequeueAfter: v.RequeueAfter}
	if err != nil {
		result = ctrl.Result{}
	}
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
	case roomsyncv1alpha1.ReasonConverged, roomsyncv1alpha1.ReasonSyncing, roomsyncv1alpha1.ReasonSuspended:
		eventType = "Normal"
	}
	r.Recorder.Eventf(obj, nil, eventType, now.Reason, "Reconcile", "%s", now.Message)
}

// jitter spreads requeues over ±10% of d so RoomSyncs created together do not pull together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	spread := d / 5
	return d - spread/2 + time.Duration(rand.Int64N(int64(spread)+1))
}

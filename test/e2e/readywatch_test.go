package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
)

// readyWatch follows the Ready condition of every RoomSync in the default namespace through
// a watch on the API server, so that no change is missed between two polls, and notes each
// change of Ready's status once armed.
type readyWatch struct {
	mu      sync.Mutex
	ready   map[string]string // name → Ready's status, as last seen
	armed   bool
	changes []string // once armed: "name: True → False (Reason: message)"
	restart int      // watches the server ended that were started again

	cancel context.CancelFunc
	done   chan struct{}
}

// roomSyncClient is a client of the control plane that knows RoomSyncs.
func roomSyncClient(t *testing.T, env *testenv.Env) client.WithWatch {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := roomsyncv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cl, err := client.NewWithWatch(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// watchReady starts watching; the test's end stops it.
func watchReady(t *testing.T, env *testenv.Env) *readyWatch {
	t.Helper()
	cl := roomSyncClient(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	w := &readyWatch{ready: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, cl)
	t.Cleanup(w.stop)
	return w
}

// run watches until ctx ends. The API server ends a watch after a while (30 to 60 minutes by
// default): it is started again, a bounded number of times, and the objects it lists again
// are compared with what was last seen, so a change made meanwhile still counts.
func (w *readyWatch) run(ctx context.Context, cl client.WithWatch) {
	defer close(w.done)
	for attempt := range 1000 {
		if attempt > 0 {
			w.mu.Lock()
			w.restart++
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		wi, err := cl.Watch(ctx, &roomsyncv1alpha1.RoomSyncList{}, client.InNamespace("default"))
		if err != nil {
			continue
		}
		w.consume(ctx, wi)
		wi.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

func (w *readyWatch) consume(ctx context.Context, wi watch.Interface) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			obj, isRoomSync := ev.Object.(*roomsyncv1alpha1.RoomSync)
			if !isRoomSync || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			w.note(obj)
		}
	}
}

// note records obj's Ready status, and a change of it once armed.
func (w *readyWatch) note(obj *roomsyncv1alpha1.RoomSync) {
	status, why := "Unknown", ""
	if c := apimeta.FindStatusCondition(obj.Status.Conditions, roomsyncv1alpha1.ReadyCondition); c != nil {
		status, why = string(c.Status), fmt.Sprintf("%s: %s", c.Reason, c.Message)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, seen := w.ready[obj.Name]; w.armed && seen && last != status {
		w.changes = append(w.changes, fmt.Sprintf("%s: %s → %s (%s)", obj.Name, last, status, why))
	}
	w.ready[obj.Name] = status
}

// arm starts counting changes: after every RoomSync first converged, say.
func (w *readyWatch) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = true
}

// transitions are the changes of Ready's status since arm, and how often the watch was
// started again.
func (w *readyWatch) transitions() ([]string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.changes...), w.restart
}

func (w *readyWatch) stop() {
	w.cancel()
	<-w.done
}

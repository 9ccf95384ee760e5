package controllers

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
)

// TestStoreFullMetric: roomsync_store_full follows what each pass decided: 1 after a pass
// that found the store full (Ready reason StoreFull, which the RoomSyncStoreFull alert
// watches), 0 after any other, so that the series is there at 0 from the first pass; and it
// goes with the RoomSync's other series.
func TestStoreFullMetric(t *testing.T) {
	m := NewMetrics()
	const ns, name = "store-full-metric", "archive"
	healthy := []resolver.PeerStatus{{ServerName: "a", Healthy: true}}
	// As the store and the resolver wrap a write that found no room (store.IsFull).
	diskFull := fmt.Errorf("sync room !a: insert 50 events into !a: %w",
		&fs.PathError{Op: "write", Path: "/data/events.db-wal", Err: syscall.ENOSPC})
	steps := []struct {
		name    string
		rooms   []roomsyncv1alpha1.RoomStatus
		results []resolver.RoomResult
		want    float64
	}{
		{"syncing", []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 4}}, []resolver.RoomResult{{RoomID: "!a", Stored: 50, PeersAnswered: 1}}, 0},
		{"the disk is full", []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 4}}, []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 1, Err: diskFull}}, 1},
		{"still full, no peer answering", []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 4}}, []resolver.RoomResult{{RoomID: "!a", Err: diskFull}}, 1},
		{"another error", []roomsyncv1alpha1.RoomStatus{{ID: "!a", Gaps: 4}}, []resolver.RoomResult{{RoomID: "!a", PeersAnswered: 1, Err: errors.New("event $x: bad signature")}}, 0},
		{"room again, converged", []roomsyncv1alpha1.RoomStatus{{ID: "!a", Converged: true}}, []resolver.RoomResult{{RoomID: "!a", Converged: true, Stored: 4, PeersAnswered: 1}}, 0},
	}
	for _, st := range steps {
		obj := &roomsyncv1alpha1.RoomSync{Spec: roomsyncv1alpha1.RoomSyncSpec{Interval: &metav1.Duration{Duration: 5 * time.Minute}}}
		obj.Status.Rooms = st.rooms
		obj.Status.Summary = summarize(st.rooms)
		_, err := decide(obj, st.results, healthy)
		m.setStoreFull(ns, name, err)
		// As the manager's metrics endpoint serves it.
		if series := fmt.Sprintf("roomsync_store_full{name=%q,namespace=%q} %v\n", name, ns, st.want); !strings.Contains(scrape(t), series) {
			t.Errorf("%s: %q not served (decided %v)", st.name, series, err)
		}
	}
	m.forget(ns, name)
	if strings.Contains(scrape(t), fmt.Sprintf("namespace=%q", ns)) {
		t.Error("the series outlived its RoomSync")
	}
}

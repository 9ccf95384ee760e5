package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/localrun"
)

// manyRoomsGoal is the goal "Many rooms": a steady-state pass over every room, nothing new,
// costs the manager less than this much CPU in all.
const manyRoomsGoal = 2 * time.Second

// TestManyRoomsSteadyState (`make bench-many-rooms`: ROOMSYNC_BENCH_MANY_ROOMS=1): the goal
// "Many rooms", that the operator's cost follows changes, not rooms held. 1,000 fixture rooms
// of 200 events, spread over 4 fixture peers, are named by 20 RoomSyncs of 50 rooms (each
// RoomSync's rooms on one peer, which it names), reconciled by one manager (interval 1h, so
// that no pass comes unasked). Once every RoomSync is Ready with every room converged (how
// long that took is printed), the reconcile.roomsync.io/requestedAt annotation asks each of
// them for a pass at once, with nothing new anywhere; the manager's CPU (utime + stime) from
// just before the request to when the last RoomSync reports it handled it is printed beside
// the goal (under 2 s) and the wall time, then the CPU of an idle interval as long, with no
// request, for reference. The test fails when a RoomSync does not report the pass, or a room
// was not synced in it; the goal itself is reported, met or NOT met, not asserted.
//
// It runs on SQLite, and again on PostgreSQL when ROOMSYNC_TEST_POSTGRES_URL is set (`make
// bench-many-rooms` starts one). ROOMSYNC_MANY_ROOMSYNCS (20), ROOMSYNC_MANY_ROOMS (50 a
// RoomSync, at most 200), ROOMSYNC_MANY_EVENTS (200 a room) and ROOMSYNC_MANY_PEERS (4)
// scale it: 2, 5, 20 and 2 check it in a minute.
func TestManyRoomsSteadyState(t *testing.T) {
	if os.Getenv("ROOMSYNC_BENCH_MANY_ROOMS") == "" {
		t.Skip("the many-rooms benchmark runs in `make bench-many-rooms` (ROOMSYNC_BENCH_MANY_ROOMS=1)")
	}
	nSyncs := soakInt(t, "ROOMSYNC_MANY_ROOMSYNCS", 20, 1)
	perSync := soakInt(t, "ROOMSYNC_MANY_ROOMS", 50, 1)
	events := soakInt(t, "ROOMSYNC_MANY_EVENTS", 200, 10)
	nPeers := min(soakInt(t, "ROOMSYNC_MANY_PEERS", 4, 1), nSyncs)
	if perSync > 200 {
		t.Fatalf("ROOMSYNC_MANY_ROOMS=%d: a RoomSync names at most 200 rooms", perSync)
	}

	t0 := time.Now()
	rooms := make([]*fixturepeer.Room, nSyncs*perSync)
	for i := range rooms {
		rooms[i] = fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: uint64(16000 + i), Events: events})
	}
	// RoomSync i's rooms are rooms[i*perSync:(i+1)*perSync], held by peer i%nPeers.
	peers := make([]*fixturepeer.Peer, nPeers)
	for p := range peers {
		var first *fixturepeer.Room
		var opts []fixturepeer.Option
		for i := p; i < nSyncs; i += nPeers {
			for _, r := range rooms[i*perSync : (i+1)*perSync] {
				if first == nil {
					first = r
				} else {
					opts = append(opts, fixturepeer.WithRoom(r, fixturepeer.HoldAll()))
				}
			}
		}
		peers[p] = fixturepeer.Start(t, first, opts...)
	}
	t.Logf("%d fixture rooms of %d events on %d peers, made in %v", len(rooms), events, nPeers, time.Since(t0).Round(time.Second))

	t.Run("sqlite", func(t *testing.T) {
		manyRoomsSteadyState(t, "", rooms, peers, nSyncs, perSync, events)
	})
	t.Run("postgres", func(t *testing.T) {
		admin := os.Getenv("ROOMSYNC_TEST_POSTGRES_URL")
		if admin == "" {
			t.Skip("ROOMSYNC_TEST_POSTGRES_URL is not set: `make bench-many-rooms` starts a PostgreSQL")
		}
		storeURL, _ := passwordRole(t, admin)
		manyRoomsSteadyState(t, storeURL, rooms, peers, nSyncs, perSync, events)
	})
}

// manyRoomsSteadyState is one run of TestManyRoomsSteadyState on a new control plane and
// manager, with the store at storeURL (empty: a new SQLite file).
func manyRoomsSteadyState(t *testing.T, storeURL string, rooms []*fixturepeer.Room, peers []*fixturepeer.Peer, nSyncs, perSync, events int) {
	env := startEnv(t)
	dir := t.TempDir()
	if storeURL == "" {
		storeURL = "sqlite://" + filepath.Join(dir, "events.db")
	}
	backend := strings.SplitN(storeURL, ":", 2)[0]
	op, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	m := startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)
	manifest := filepath.Join(dir, "roomsyncs.yaml")
	writeManyRoomsManifests(t, manifest, nSyncs, perSync, rooms, peers)

	// Convergence.
	t0 := time.Now()
	cpu0 := processCPU(t, m.PID())
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := env.Kubectl("wait", "rms", "--all", "--for=condition=Ready", "--timeout=40m"); err != nil {
		wide, _ := env.Kubectl("get", "rms", "-o", "wide")
		t.Fatalf("kubectl wait: %v\n%s\n%s", err, out, wide)
	}
	converge, convergeCPU := time.Since(t0), processCPU(t, m.PID())-cpu0
	// What the client logs (a watch that ends, say) goes to the test's output.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	cl := roomSyncClient(t, env)
	checkManyRoomsConverged(t, cl, nSyncs, perSync, events, time.Time{})
	rss, _ := processMemory(t, m.PID())
	t.Logf("%s: %d RoomSyncs × %d rooms of %d events (%d events) converged in %v, manager CPU %.1f s, RSS %s",
		backend, nSyncs, perSync, events, nSyncs*perSync*events, converge.Round(100*time.Millisecond), convergeCPU.Seconds(), mib(rss))

	// Whatever the last passes left running ends before the measure.
	time.Sleep(5 * time.Second)
	requests0 := peerRequests(peers)
	metrics0 := scrape(t, op.metricsURL) // before the CPU is read: a scrape costs the manager too
	token := "many-rooms-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	handled := watchHandled(ctx, t, cl, token, nSyncs)
	asked := time.Now()
	cpu0 = processCPU(t, m.PID())
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, roomsyncv1alpha1.ReconcileRequestedAnnotation, token))
	for i := range nSyncs {
		rs := &roomsyncv1alpha1.RoomSync{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("many-%d", i)}}
		if err := cl.Patch(ctx, rs, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatalf("annotate %s: %v", rs.Name, err)
		}
	}
	if err := handled(m); err != nil {
		t.Fatal(err)
	}
	wall, passCPU := time.Since(asked), processCPU(t, m.PID())-cpu0
	requests := peerRequests(peers) - requests0
	reconciles := scrape(t, op.metricsURL).sum("roomsync_reconcile_duration_seconds_count", nil) - metrics0.sum("roomsync_reconcile_duration_seconds_count", nil)
	checkManyRoomsConverged(t, cl, nSyncs, perSync, events, asked)

	// The same length of time with nothing asked.
	idle0 := processCPU(t, m.PID())
	time.Sleep(max(wall, time.Second))
	idleCPU := processCPU(t, m.PID()) - idle0
	if m.Exited() {
		t.Fatalf("the manager exited: %v", m.ExitError())
	}

	verdict := "met"
	if passCPU >= manyRoomsGoal {
		verdict = "NOT met"
	}
	t.Logf("%s: steady-state pass over %d rooms (%d RoomSyncs, nothing new): manager CPU %.2f s (goal < %v: %s), %.2f ms a room, wall %v; "+
		"%v reconciles, %d requests to the peers (%.1f a room); idle %v: CPU %.2f s; load %s",
		backend, nSyncs*perSync, nSyncs, passCPU.Seconds(), manyRoomsGoal, verdict, passCPU.Seconds()*1000/float64(nSyncs*perSync),
		wall.Round(10*time.Millisecond), reconciles, requests, float64(requests)/float64(nSyncs*perSync), max(wall, time.Second).Round(10*time.Millisecond),
		idleCPU.Seconds(), loadAverage())
}

// writeManyRoomsManifests writes nSyncs RoomSyncs "many-N", each of the perSync rooms
// rooms[N*perSync:] from peer N%len(peers), membership Never, interval 1h.
func writeManyRoomsManifests(t *testing.T, path string, nSyncs, perSync int, rooms []*fixturepeer.Room, peers []*fixturepeer.Peer) {
	t.Helper()
	var b bytes.Buffer
	for i := range nSyncs {
		fmt.Fprintf(&b, "---\napiVersion: federation.roomsync.io/v1alpha1\nkind: RoomSync\nmetadata:\n  name: many-%d\n  namespace: default\nspec:\n  rooms:\n", i)
		for _, r := range rooms[i*perSync : (i+1)*perSync] {
			fmt.Fprintf(&b, "  - id: %q\n", r.ID)
		}
		fmt.Fprintf(&b, "  peers:\n  - serverName: %q\n    insecureSkipTLSVerify: true\n", peers[i%len(peers)].ServerName())
		fmt.Fprintf(&b, "  membership:\n    join: Never\n  interval: 1h\n")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkManyRoomsConverged fails unless every RoomSync is there with every room converged and
// holding its events, each synced at since or later (status times are in whole seconds).
func checkManyRoomsConverged(t *testing.T, cl client.Client, nSyncs, perSync, events int, since time.Time) {
	t.Helper()
	var list roomsyncv1alpha1.RoomSyncList
	if err := cl.List(context.Background(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != nSyncs {
		t.Fatalf("%d RoomSyncs, want %d", len(list.Items), nSyncs)
	}
	since = since.Truncate(time.Second)
	for _, rs := range list.Items {
		s := rs.Status.Summary
		if int(s.Rooms) != perSync || int(s.ConvergedRooms) != perSync || s.Events != int64(perSync*events) {
			t.Errorf("%s: %d rooms, %d converged, %d events; want %d rooms of %d events, all converged", rs.Name, s.Rooms, s.ConvergedRooms, s.Events, perSync, events)
		}
		for _, r := range rs.Status.Rooms {
			if r.LastSyncTime == nil || r.LastSyncTime.Time.Before(since) {
				t.Errorf("%s: room %s last synced at %v, before the pass asked for at %v", rs.Name, r.ID, r.LastSyncTime, since)
				break
			}
		}
	}
}

// watchHandled watches the n RoomSyncs, and returns once the watch has shown each of them (a
// watch from resource version 0 starts with them all, from the API server's cache, which may
// lag behind a watch from "now"); the returned function waits until they all report
// (status.lastHandledReconcileAt) that a pass for token ended, and fails when ctx ends or m
// exits first. A watch the server ends is started again, and a list then finds what it missed.
func watchHandled(ctx context.Context, t *testing.T, cl client.WithWatch, token string, n int) func(m *localrun.Process) error {
	t.Helper()
	fromCache := &client.ListOptions{Namespace: "default", Raw: &metav1.ListOptions{ResourceVersion: "0"}}
	w, err := cl.Watch(ctx, &roomsyncv1alpha1.RoomSyncList{}, fromCache)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("the watch showed %d of %d RoomSyncs", len(seen), n)
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch ended after showing %d of %d RoomSyncs", len(seen), n)
			}
			if rs, isRoomSync := ev.Object.(*roomsyncv1alpha1.RoomSync); isRoomSync {
				seen[rs.Name] = true
			}
		}
	}
	return func(m *localrun.Process) error {
		defer func() { w.Stop() }()
		done := map[string]bool{}
		note := func(rs *roomsyncv1alpha1.RoomSync) {
			if rs.Status.LastHandledReconcileAt == token {
				done[rs.Name] = true
			}
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for len(done) < n {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%d of %d RoomSyncs reported the pass asked for: %w", len(done), n, ctx.Err())
			case <-tick.C:
				if m.Exited() {
					return fmt.Errorf("the manager exited: %v", m.ExitError())
				}
			case ev, ok := <-w.ResultChan():
				switch {
				case !ok:
					t.Logf("the watch ended with %d of %d RoomSyncs done: watching again", len(done), n)
					w.Stop()
					if w, err = cl.Watch(ctx, &roomsyncv1alpha1.RoomSyncList{}, fromCache); err != nil {
						return err
					}
					var list roomsyncv1alpha1.RoomSyncList
					if err := cl.List(ctx, &list, client.InNamespace("default")); err != nil {
						return err
					}
					for i := range list.Items {
						note(&list.Items[i])
					}
				case ev.Type == watch.Error:
					t.Logf("watch error: %v", apierrors.FromObject(ev.Object))
				default:
					if rs, isRoomSync := ev.Object.(*roomsyncv1alpha1.RoomSync); isRoomSync {
						note(rs)
					}
				}
			}
		}
		return nil
	}
}

// peerRequests is how many requests the peers answered in all.
func peerRequests(peers []*fixturepeer.Peer) int64 {
	var n int64
	for _, p := range peers {
		n += p.TotalCount()
	}
	return n
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on Linux.
const userHZ = 100

// processCPU is the CPU a process used so far, in user and kernel mode, all its threads.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatalf("read the CPU time of PID %d: %v", pid, err)
	}
	// The command name (field 2) may hold spaces: the fields after it start at ')'. utime and
	// stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 13 {
		t.Fatalf("PID %d: unexpected /proc stat: %q", pid, b)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("PID %d: /proc stat field %q: %v", pid, f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// loadAverage is the machine's load averages over 1, 5 and 15 minutes, as /proc/loadavg says.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// TestLoad (`make soak` only: ROOMSYNC_SOAK=1): 20 RoomSyncs of 10 rooms each against two
// Dendrites and the fixture peer, for ten minutes while messages flow into the Dendrite rooms.
// Each RoomSync names one room of each Dendrite (each such room named by two RoomSyncs, which
// share its stored copy) and eight fixture rooms of its own, and all three peers; membership
// Never, interval 30 s: the messages are pulled, pass after pass. After every RoomSync first
// converged, the manager's memory and goroutines are sampled each minute, its reconcile
// latency taken from roomsync_reconcile_duration_seconds, and Ready followed through a watch:
// no RoomSync may leave Ready (flap) while its peers keep answering. At the end the Dendrite
// rooms in the store equal what the Dendrites show.
//
// ROOMSYNC_SOAK_DURATION (10m), ROOMSYNC_SOAK_ROOMSYNCS (20) and ROOMSYNC_SOAK_ROOMS (10 a
// RoomSync, at least 3) scale it.
func TestLoad(t *testing.T) {
	if os.Getenv("ROOMSYNC_SOAK") == "" {
		t.Skip("the load test runs in `make soak` (ROOMSYNC_SOAK=1)")
	}
	duration := soakDuration(t, "ROOMSYNC_SOAK_DURATION", 10*time.Minute)
	nSyncs := soakInt(t, "ROOMSYNC_SOAK_ROOMSYNCS", 20, 2)
	perSync := soakInt(t, "ROOMSYNC_SOAK_ROOMS", 10, 3)

	a, b := startDendrite(t), startDendrite(t)
	shared := nSyncs / 2 // Dendrite rooms on each: every one named by two RoomSyncs
	var dendriteRooms []loadRoom
	for i := range shared * 2 {
		d := []*dendrite{a, b}[i%2]
		dendriteRooms = append(dendriteRooms, loadRoom{id: d.seed(t, "", 30), on: d})
	}
	fixtures := make([]*fixturepeer.Room, nSyncs*(perSync-2))
	var opts []fixturepeer.Option
	for i := range fixtures {
		fixtures[i] = fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: uint64(1000 + i), Events: 150})
		if i > 0 {
			opts = append(opts, fixturepeer.WithRoom(fixtures[i], fixturepeer.HoldAll()))
		}
	}
	fix := fixturepeer.Start(t, fixtures[0], opts...)

	env := startEnv(t)
	dir := t.TempDir()
	storeURL := "sqlite://" + filepath.Join(dir, "events.db")
	if os.Getenv("ROOMSYNC_TEST_POSTGRES_URL") != "" {
		storeURL, _ = passwordRole(t, postgresAdmin(t))
	}
	op, args := operatorIdentity(t, dir, storeURL, "--allow-private-networks", "--insecure-skip-tls-verify")
	m := startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)
	ready := watchReady(t, env)
	manifest := filepath.Join(dir, "roomsyncs.yaml")
	writeLoadManifests(t, manifest, nSyncs, perSync, dendriteRooms, fixtures, fix.ServerName(), a, b)
	t0 := time.Now()
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := env.Kubectl("wait", "rms", "--all", "--for=condition=Ready", "--timeout=15m"); err != nil {
		wide, _ := env.Kubectl("get", "rms", "-o", "wide")
		status, _ := env.Kubectl("get", "roomsync/load-1", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait: %v\n%s\n%s\nload-1: %s", err, out, wide, status)
	}
	t.Logf("%d RoomSyncs of %d rooms (%d Dendrite rooms, %d fixture rooms of 150 events) Ready in %v, in %s",
		nSyncs, perSync, len(dendriteRooms), len(fixtures), time.Since(t0).Round(time.Second), strings.SplitN(storeURL, ":", 2)[0])

	// The soak: messages flow while the manager is sampled.
	ready.arm()
	start := scrape(t, op.metricsURL)
	rss0, _ := processMemory(t, m.PID())
	goroutines0 := start.sum("go_goroutines", nil)
	sent := sendRoundRobin(t, dendriteRooms, 500*time.Millisecond, duration)
	for i := range int(duration / time.Minute) {
		time.Sleep(time.Minute)
		if m.Exited() {
			t.Fatalf("the manager exited: %v", m.ExitError())
		}
		rss, _ := processMemory(t, m.PID())
		t.Logf("minute %d: RSS %s, %v goroutines", i+1, mib(rss), scrape(t, op.metricsURL).sum("go_goroutines", nil))
	}
	messages, err := sent()
	if err != nil {
		t.Fatal(err)
	}
	end := scrape(t, op.metricsURL)
	rss1, peak := processMemory(t, m.PID())
	goroutines1 := end.sum("go_goroutines", nil)
	reconciles := end.buckets("roomsync_reconcile_duration_seconds", start)
	count := reconciles[len(reconciles)-1].count
	flaps, restarts := ready.transitions()

	// Every message is pulled by the next passes (30 s apart), and the Dendrite rooms in the
	// store equal what the Dendrites show.
	for _, r := range dendriteRooms {
		waitStoreHolds(t, storeURL, r.id, r.on.eventIDs(t, r.id))
	}
	t.Logf("load: %d RoomSyncs × %d rooms for %v, %d messages into %d Dendrite rooms: manager RSS %s at the start, %s at the end (peak %s); goroutines %v → %v; "+
		"%v reconciles, p50 %.3f s, p99 %.3f s; Ready transitions after the first convergence: %d (watch restarted %d times)",
		nSyncs, perSync, duration, messages, len(dendriteRooms), mib(rss0), mib(rss1), mib(peak), goroutines0, goroutines1,
		count, quantile(0.5, reconciles), quantile(0.99, reconciles), len(flaps), restarts)
	for _, peer := range []string{fix.ServerName(), a.serverName, b.serverName} {
		t.Logf("requests to %s: %v", peer, requestsTo(end, start, peer))
	}
	if len(flaps) > 0 {
		t.Errorf("Ready changed %d times after every RoomSync converged: %s", len(flaps), strings.Join(flaps[:min(len(flaps), 10)], "; "))
	}
	// A leak shows as growth the work does not explain: the same work at the end as at the
	// start.
	if goroutines1 > 2*goroutines0+50 {
		t.Errorf("goroutines grew from %v to %v", goroutines0, goroutines1)
	}
	if rss1 > 2*rss0+(64<<20) {
		t.Errorf("RSS grew from %s to %s", mib(rss0), mib(rss1))
	}
}

// loadRoom is a Dendrite room of the load test and the Dendrite it was made on.
type loadRoom struct {
	id string
	on *dendrite
}

// writeLoadManifests writes nSyncs RoomSyncs "load-N": the two Dendrite rooms N/2 (one of
// each Dendrite, shared with the RoomSync next to it) and perSync−2 fixture rooms of its own,
// from all three peers, membership Never, interval 30 s.
func writeLoadManifests(t *testing.T, path string, nSyncs, perSync int, dendriteRooms []loadRoom, fixtures []*fixturepeer.Room, fixture string, ds ...*dendrite) {
	t.Helper()
	var b bytes.Buffer
	for i := range nSyncs {
		fmt.Fprintf(&b, "---\napiVersion: federation.roomsync.io/v1alpha1\nkind: RoomSync\nmetadata:\n  name: load-%d\n  namespace: default\nspec:\n  rooms:\n", i)
		pair := (i / 2) % (len(dendriteRooms) / 2)
		fmt.Fprintf(&b, "  - id: %q\n  - id: %q\n", dendriteRooms[2*pair].id, dendriteRooms[2*pair+1].id)
		for j := range perSync - 2 {
			fmt.Fprintf(&b, "  - id: %q\n", fixtures[i*(perSync-2)+j].ID)
		}
		fmt.Fprintf(&b, "  peers:\n  - serverName: %q\n    insecureSkipTLSVerify: true\n", fixture)
		for _, d := range ds {
			fmt.Fprintf(&b, "  - serverName: %q\n    insecureSkipTLSVerify: true\n", d.serverName)
		}
		fmt.Fprintf(&b, "  membership:\n    join: Never\n  interval: 30s\n")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sendRoundRobin sends a message every interval for period, to each room in turn from its
// Dendrite's seeding user, in the background; the returned function waits for the end and
// says how many were sent.
func sendRoundRobin(t *testing.T, rooms []loadRoom, interval, period time.Duration) func() (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), period+2*time.Minute)
	clients := map[*dendrite]interface {
		Send(ctx context.Context, room string, count, parallel int) ([]string, error)
	}{}
	for _, r := range rooms {
		if clients[r.on] == nil {
			c, err := r.on.peer.Login(ctx, "")
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			clients[r.on] = c
		}
	}
	var wg sync.WaitGroup
	var sent int
	var sendErr error
	wg.Go(func() {
		end := time.Now().Add(period)
		for i := range int(period/interval) + 1 {
			if time.Now().After(end) {
				return
			}
			at := time.Now()
			r := rooms[i%len(rooms)]
			if _, err := clients[r.on].Send(ctx, r.id, 1, 1); err != nil {
				sendErr = fmt.Errorf("message %d to %s on %s: %w", i, r.id, r.on.serverName, err)
				return
			}
			sent++
			time.Sleep(time.Until(at.Add(interval)))
		}
	})
	return func() (int, error) {
		wg.Wait()
		cancel()
		return sent, sendErr
	}
}

// soakInt reads a positive whole number of at least least from the environment, def when
// unset.
func soakInt(t *testing.T, name string, def, least int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least || n > 1000 {
		t.Fatalf("%s=%q: want a number from %d to 1000", name, v, least)
	}
	return n
}

// soakDuration reads a Go duration of at least a minute from the environment, def when unset.
func soakDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute || d > 24*time.Hour {
		t.Fatalf("%s=%q: want a duration from 1m to 24h", name, v)
	}
	return d
}

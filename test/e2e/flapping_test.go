package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomsync/roomsync/resolver"
)

// flapFor is how long the flapping peer flaps: 30 s in `make test`, ROOMSYNC_FLAP_SECONDS
// (`make soak`: 60) otherwise.
func flapFor(t *testing.T) time.Duration {
	if v := os.Getenv("ROOMSYNC_FLAP_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 3600 {
			t.Fatalf("ROOMSYNC_FLAP_SECONDS=%q: want 5 to 3600", v)
		}
		return time.Duration(n) * time.Second
	}
	return 30 * time.Second
}

// window is a time the flapping peer was down: from its stop until its start returned.
type window struct{ from, to time.Time }

// TestFlappingPeer: a room on Dendrite A and B (B joined through A), replicated by the
// operator from both, joined (membership Always), so that A pushes each message to the
// manager and wakes a pass, and every pass asks both peers for their heads. B is then stopped
// and started every few seconds while A's user sends a message every 300 ms. The messages
// keep arriving (B's absence does not hold up A's), the room converges to what A shows, and
// the requests to B that fail stay within what the back-off lets through in B's down time
// (resolver.FailuresWithin): no retry storm, however many passes the messages wake.
func TestFlappingPeer(t *testing.T) {
	a, b := startDendrite(t), startDendrite(t)
	room := a.seed(t, "", 100)
	b.seed(t, room, 5, "--join-from", a.serverName)

	env := startEnv(t)
	dir := t.TempDir()
	op, args := operatorIdentity(t, dir, "sqlite://"+filepath.Join(dir, "events.db"), "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "  membership:\n    join: Always\n", a, b)
	startManagerProcess(t, env, filepath.Join(dir, "manager.log"), args...)
	waitArchiveReady(t, env, 2*time.Minute)

	// Messages on both at once first, so the DAG the flapping starts from forks.
	watch := watchStore(t, op.storeURL, room, 30*time.Second)
	sendAtOnce(t, watch, room, 15, a, b)
	watch.wait()

	flap := flapFor(t)
	before := scrape(t, op.metricsURL)
	start := time.Now()
	sent := sendPaced(t, watch, a, room, 300*time.Millisecond, flap)
	windows := flapPeer(t, b, flap)
	if err := sent(); err != nil {
		t.Fatalf("sending on %s while %s flapped: %v", a.serverName, b.serverName, err)
	}
	took := time.Since(start)
	after := scrape(t, op.metricsURL)

	latencies, _ := watch.wait()
	t.Logf("%d messages from %s stored while %s flapped: send-to-stored p50 %v, p99 %v, max %v", len(latencies), a.serverName, b.serverName,
		percentile(latencies, 50), percentile(latencies, 99), latencies[len(latencies)-1])
	waitArchiveReady(t, env, 2*time.Minute)
	assertStoreEquals(t, op.storeURL, room, a.eventIDs(t, room))
	if out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", op.storeURL, "--room", room, "--check"); code != 0 {
		t.Errorf("inspect --check exited %d: %s", code, out)
	}

	// The requests to B in the flapping, by endpoint and outcome, against the back-off's bound.
	requests := requestsTo(after, before, b.serverName)
	failed, answered := 0, 0
	for key, n := range requests {
		switch key[strings.IndexByte(key, '/')+1:] {
		case "ok", "not_found", "forbidden", "bad_request":
			answered += n
		default:
			failed += n
		}
	}
	failBound, down := 0, time.Duration(0)
	for _, w := range windows {
		failBound += resolver.FailuresWithin(w.to.Sub(w.from))
		down += w.to.Sub(w.from)
	}
	// While B is up, a pass asks it for its heads once (make_join, or timestamp_to_event
	// where make_join is backed off), and for a gap only when A, first in the spec, did not
	// fill it: B sends nothing in the flapping, so that is rare, and one answered request a
	// pass on average is a generous bound.
	reconcile := map[string]string{"controller": "roomsync"}
	passes := int(after.sum("controller_runtime_reconcile_total", reconcile) - before.sum("controller_runtime_reconcile_total", reconcile))
	t.Logf("%d requests to the flapping peer in %v, bound %d: %d failed, bound %d (resolver.FailuresWithin over its %d down times, %v in all); %d answered, bound %d (one a pass); %v",
		failed+answered, took.Round(time.Second), failBound+passes, failed, failBound, len(windows), down.Round(100*time.Millisecond),
		answered, passes, requests)
	if failed > failBound {
		t.Errorf("%d requests to %s failed, more than the back-off lets through (%d): a retry storm", failed, b.serverName, failBound)
	}
	if answered > passes {
		t.Errorf("%s answered %d requests in %d passes: more than its heads were asked for", b.serverName, answered, passes)
	}
	if failed == 0 {
		t.Errorf("no request to %s failed: the test did not flap it under the manager", b.serverName)
	}
}

// flapPeer stops and starts d every 2 to 4 s (down 2 to 4 s each time) for about period, and
// returns when it was down. It ends with d running.
func flapPeer(t *testing.T, d *dendrite, period time.Duration) []window {
	t.Helper()
	var windows []window
	end := time.Now().Add(period)
	// Bounded: each round takes at least 4 s.
	for range int(period/(4*time.Second)) + 1 {
		if time.Now().After(end) {
			break
		}
		from := time.Now()
		d.stop(t)
		time.Sleep(time.Duration(2000+rand.IntN(2000)) * time.Millisecond)
		d.start(t)
		windows = append(windows, window{from, time.Now()})
		time.Sleep(time.Duration(2000+rand.IntN(2000)) * time.Millisecond)
	}
	return windows
}

// sendPaced has d's user send a message to room every interval for period, in the
// background, noting each in w; the returned function waits for the end and says whether a
// send failed.
func sendPaced(t *testing.T, w *liveWatch, d *dendrite, room string, interval, period time.Duration) func() error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), period+2*time.Minute)
	c, err := d.peer.Login(ctx, "")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		end := time.Now().Add(period)
		for i := range int(period/interval) + 1 {
			if time.Now().After(end) {
				return
			}
			at := time.Now()
			ids, err := c.Send(ctx, room, 1, 1)
			if err != nil {
				sendErr = fmt.Errorf("message %d: %w", i, err)
				return
			}
			w.noteSent(ids[0], at)
			time.Sleep(time.Until(at.Add(interval)))
		}
	})
	return func() error {
		wg.Wait()
		cancel()
		return sendErr
	}
}

// requestsTo is the federation requests to peer between two scrapes, by "endpoint/outcome".
func requestsTo(after, before metrics, peer string) map[string]int {
	out := map[string]int{}
	for sign, m := range map[int]metrics{1: after, -1: before} {
		for _, s := range m {
			if s.name == "roomsync_federation_requests_total" && s.labels["peer"] == peer {
				out[s.labels["endpoint"]+"/"+s.labels["outcome"]] += sign * int(s.value)
			}
		}
	}
	for key, n := range out {
		if n == 0 {
			delete(out, key)
		}
	}
	return out
}

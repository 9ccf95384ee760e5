package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
)

// TestDisasterRecovery is what the replica is for: a room lives on Dendrite A, forked with
// Dendrite B, and roomsync replicates it, joined. Dendrite C joins late through B, so it holds
// only what a join brings (the state and its auth chain). Then A stops for good, and B too, so
// that no homeserver that lived the history is left; C's user pages /messages back to
// m.room.create and gets the whole history, equal to A's as A showed it before it died. It
// can only have come from roomsync, whose served-request counters say how much it served.
func TestDisasterRecovery(t *testing.T) {
	env := startEnv(t)
	a, b, c := startDendrite(t), startDendrite(t), startDendrite(t)
	room := a.seed(t, "", 1900, "--history", "shared")
	b.seed(t, room, 5, "--join-from", a.serverName)

	dir := t.TempDir()
	op := startOperator(t, env, dir, "events.db", "--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, dir, room, "  membership:\n    join: Always\n", a, b)
	waitArchiveReady(t, env, 3*time.Minute)

	// A forked stretch: both servers send at once, and roomsync takes it live.
	watch := watchStore(t, op.storeURL, room, 15*time.Second)
	sendAtOnce(t, watch, room, 60, a, b)
	_, merges := watch.wait()
	waitHolds(t, a, room, watch.sentIDs())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	late, err := c.peer.Login(ctx, "late")
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Join(ctx, room, b.serverName); err != nil {
		t.Fatal(err)
	}
	// The truth, read from A before it dies: the history up to C's join.
	var truth []string
	for n := 0; n < 120 && truth == nil; n++ {
		timeline, err := a.peer.Timeline(ctx, room, "")
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(timeline, func(e dendritepeer.RoomEvent) bool {
			return e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == late.UserID && e.Membership == "join"
		}) {
			for _, e := range timeline {
				truth = append(truth, e.EventID)
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if truth == nil {
		t.Fatalf("A does not show C's join within a minute")
	}
	if len(truth) < 2000 || merges == 0 {
		t.Fatalf("A holds %d events, %d merges sent live; want at least 2000 and a fork", len(truth), merges)
	}
	waitStoreHolds(t, op.storeURL, room, truth)
	servedBefore := servedRequests(t, op.metricsURL)

	b.stop(t)
	a.stop(t)
	t0 := time.Now()
	got, err := c.peer.EventIDs(ctx, room, "late")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("C's /messages gave %d events in %v, with A and B stopped; A held %d", len(got), time.Since(t0).Round(time.Millisecond), len(truth))
	if !sameSet(got, truth) {
		t.Errorf("C's history differs from A's: %s", setDiff(got, truth))
	}
	served := servedRequests(t, op.metricsURL)
	t.Logf("roomsync served, while C recovered the room: %v (before: %v)", served, servedBefore)
	if served["backfill"]-servedBefore["backfill"] == 0 {
		t.Errorf("roomsync served no /backfill: the history came from elsewhere")
	}
}

// servedRegexp reads roomsync_served_requests_total samples that succeeded.
var servedRegexp = regexp.MustCompile(`(?m)^roomsync_served_requests_total\{endpoint="([^"]+)",outcome="ok"\} ([0-9.e+]+)$`)

// servedRequests scrapes the manager's metrics: the requests it answered, by endpoint.
func servedRequests(t *testing.T, metricsURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, m := range servedRegexp.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] += v
	}
	return out
}

// setDiff says how two sets of event IDs differ, briefly.
func setDiff(got, want []string) string {
	var extra, missing []string
	for _, e := range got {
		if !slices.Contains(want, e) {
			extra = append(extra, e)
		}
	}
	for _, e := range want {
		if !slices.Contains(got, e) {
			missing = append(missing, e)
		}
	}
	return "missing " + strconv.Itoa(len(missing)) + " " + firstFew(missing) + ", extra " + strconv.Itoa(len(extra)) + " " + firstFew(extra)
}

func firstFew(ids []string) string {
	return "[" + strings.Join(ids[:min(len(ids), 5)], " ") + "]"
}

// waitStoreHolds waits, up to a minute, until the store holds every event of want.
func waitStoreHolds(t *testing.T, storeURL, room string, want []string) {
	t.Helper()
	for n := 0; ; n++ {
		out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--event-ids")
		held := strings.Fields(out)
		missing := 0
		for _, e := range want {
			if !slices.Contains(held, e) {
				missing++
			}
		}
		if code == 0 && missing == 0 {
			return
		}
		if n == 60 {
			t.Fatalf("the store lacks %d of %d events after a minute (inspect exited %d)", missing, len(want), code)
		}
		time.Sleep(time.Second)
	}
}

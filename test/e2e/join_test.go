package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestJoinPolicy: a room whose history Dendrite shows to members only (history_visibility
// shared). With --join never, roomsync stores the events as Dendrite shows them to a
// non-member, redacted, and joins nothing; with --join if-needed it joins, pulls the redacted
// events again in full, and the store equals Dendrite's own view with nothing redacted. Truth
// (events, members) is read from Dendrite's client API.
func TestJoinPolicy(t *testing.T) {
	d := startDendrite(t)
	// Two rooms: Dendrite keeps serving, from its cache, the redacted copies it once gave a
	// non-member, even after that server joins; the IfNeeded room is never read as one.
	neverRoom := d.seed(t, "", 150, "--history", "shared")
	room := d.seed(t, "", 150, "--history", "shared")

	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	cert, key := selfSignedCert(t, dir)
	ourName := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	ourUser := "@roomsync:" + ourName
	syncArgs := func(storeURL, room, policy string) []string {
		return []string{"sync", "--store", storeURL,
			"--server-name", ourName, "--signing-key", keyFile,
			// Dendrite verifies our requests, and our join, with the key served here.
			"--listen", ourName, "--tls-cert", cert, "--tls-key", key,
			"--peer", d.serverName, "--insecure-skip-tls-verify",
			"--room", room, "--join", policy, "--timeout", "3m"}
	}
	type report struct {
		Events              int      `json:"events"`
		Redacted            int      `json:"redacted"`
		BackwardExtremities []string `json:"backward_extremities"`
	}
	inspect := func(storeURL, room string) report {
		t.Helper()
		out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", storeURL, "--room", room, "--json")
		var r report
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("inspect --json exited %d: %s", code, out)
		}
		return r
	}

	// Never: the events as a non-member sees them.
	neverStore := "sqlite://" + filepath.Join(dir, "never.db")
	_, progress, _ := runCapture(t, 4*time.Minute, roomsyncBin, syncArgs(neverStore, neverRoom, "never")...)
	r := inspect(neverStore, neverRoom)
	if r.Redacted == 0 || r.Events == 0 {
		t.Errorf("--join never: %+v; want the events stored, most of them redacted", r)
	}
	if !strings.Contains(progress, "redacted") {
		t.Errorf("--join never does not say events are redacted:\n%s", tail(progress, 2000))
	}
	if slices.Contains(d.members(t, neverRoom), ourUser) {
		t.Fatalf("--join never joined: Dendrite lists %s", ourUser)
	}
	t.Logf("--join never: %d events, %d redacted", r.Events, r.Redacted)

	// IfNeeded: joins, and then holds every event in full.
	ifNeededStore := "sqlite://" + filepath.Join(dir, "if-needed.db")
	if _, progress, code := runCapture(t, 4*time.Minute, roomsyncBin, syncArgs(ifNeededStore, room, "if-needed")...); code != 0 {
		t.Fatalf("--join if-needed exited %d:\n%s", code, tail(progress, 3000))
	}
	if m := d.members(t, room); !slices.Contains(m, ourUser) {
		t.Fatalf("--join if-needed: Dendrite does not list %s among %v", ourUser, m)
	}
	// Our join is part of the room now: Dendrite's view holds it.
	want := d.eventIDs(t, room)
	r = inspect(ifNeededStore, room)
	if r.Redacted != 0 || len(r.BackwardExtremities) != 0 {
		t.Errorf("--join if-needed: %+v; want nothing redacted, no gaps", r)
	}
	assertStoreEquals(t, ifNeededStore, room, want)
}

// TestOperatorJoinsAndLeaves: a RoomSync with membership Always joins its room (Dendrite lists
// our member) and converges. Then users of two Dendrites in the room send at once, so the DAG
// forks and events reach us with prev events we have not seen: with interval 1h and no
// annotation, each is stored within 10 s of being sent, and the store then equals Dendrite's
// view. Deleting the RoomSync leaves the room (Dendrite shows the leave) and keeps the events.
func TestOperatorJoinsAndLeaves(t *testing.T) {
	env := startEnv(t)
	d, d2 := startDendrite(t), startDendrite(t)
	room := d.seed(t, "", 40, "--history", "shared")
	// A second resident server: its user joins through the first.
	d2.seed(t, room, 5, "--join-from", d.serverName)
	dir := t.TempDir()
	// Dendrite pushes to us from 127.0.0.1 with a self-signed certificate: checking its
	// signed requests means fetching its key there.
	op := startOperator(t, env, dir, "events.db", "--allow-private-networks", "--insecure-skip-tls-verify")

	manifest := filepath.Join(dir, "roomsync.yaml")
	writeManifest(t, manifest, room, d, d2)
	addToSpec(t, manifest, "  membership:\n    join: Always\n")
	if out, err := env.Kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := env.Kubectl("wait", "roomsync/archive", "--for=condition=Ready", "--timeout=120s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait: %v\n%s\nstatus: %s", err, out, status)
	}
	membership, _ := env.Kubectl("get", "roomsync/archive", "-o", "jsonpath={.status.rooms[0].membership}")
	if strings.TrimSpace(membership) != "Joined" {
		t.Errorf("status.rooms[0].membership %q, want Joined", membership)
	}
	ourUser := "@roomsync:" + op.serverName
	if !slices.Contains(d.members(t, room), ourUser) {
		t.Fatalf("Dendrite lists no member of ours: %v", d.members(t, room))
	}
	assertStoreEquals(t, op.storeURL, room, d.eventIDs(t, room))

	// The live path, from both Dendrites at once.
	watch := watchStore(t, op.storeURL, room, 10*time.Second)
	sendAtOnce(t, watch, room, 12, d, d2)
	latencies, merges := watch.wait()
	t.Logf("send-to-stored latency of %d messages from 2 Dendrites at once (%d of them merge a fork): p50 %v, p99 %v, max %v",
		len(latencies), merges, percentile(latencies, 50), percentile(latencies, 99), latencies[len(latencies)-1])
	// Each Dendrite relays the other's events; once the first holds all of them, so must we.
	waitHolds(t, d, room, watch.sentIDs())
	assertStoreEquals(t, op.storeURL, room, d.eventIDs(t, room))

	if out, err := env.Kubectl("delete", "roomsync/archive"); err != nil {
		t.Fatalf("kubectl delete: %v\n%s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for slices.Contains(d.members(t, room), ourUser) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still in the room a minute after its RoomSync was deleted", ourUser)
		}
		time.Sleep(500 * time.Millisecond)
	}
	op.stop()
	// The events stay: the room up to and including our join.
	out, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", op.storeURL, "--room", room, "--json")
	var r struct {
		Events int `json:"events"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Events < 40 {
		t.Fatalf("after the delete, inspect exited %d: %s", code, out)
	}
}

// TestInvites: rooms that let in only invited users (join rule invite, history shared). A
// RoomSync with IfNeeded finds it cannot join until a Dendrite user invites our user; the
// invite is countersigned and the join follows within seconds. Under Never the invite is
// refused, so Dendrite's invite fails and we never join.
func TestInvites(t *testing.T) {
	env := startEnv(t)
	d := startDendrite(t)
	invited := d.seed(t, "", 10, "--history", "shared", "--join-rule", "invite")
	refused := d.seed(t, "", 10, "--history", "shared", "--join-rule", "invite")
	dir := t.TempDir()
	op := startOperator(t, env, dir, "events.db", "--allow-private-networks", "--insecure-skip-tls-verify")
	ourUser := "@roomsync:" + op.serverName

	manifest := filepath.Join(dir, "roomsyncs.yaml")
	writeNamedManifest(t, manifest, "invited", invited, d)
	never := filepath.Join(dir, "never.yaml")
	writeNamedManifest(t, never, "never", refused, d)
	addToSpec(t, never, "  membership:\n    join: Never\n")
	for _, m := range []string{manifest, never} {
		if out, err := env.Kubectl("apply", "-f", m); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
	}
	// Not invited yet: the join is refused, and says so.
	if out, err := env.Kubectl("wait", "roomsync/invited", "--for=jsonpath={.status.rooms[0].membership}=JoinFailed", "--timeout=120s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/invited", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait for JoinFailed: %v\n%s\nstatus: %s", err, out, status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := d.peer.Login(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Invite(ctx, invited, ourUser); err != nil {
		t.Fatalf("Dendrite could not invite us: %v", err)
	}
	if out, err := env.Kubectl("wait", "roomsync/invited", "--for=jsonpath={.status.rooms[0].membership}=Joined", "--timeout=30s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/invited", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait for Joined after the invite: %v\n%s\nstatus: %s", err, out, status)
	}
	t.Logf("joined %v after the invite", time.Since(start).Round(time.Millisecond))
	if !slices.Contains(d.members(t, invited), ourUser) {
		t.Fatalf("Dendrite does not list %s among %v", ourUser, d.members(t, invited))
	}

	if err := c.Invite(ctx, refused, ourUser); err == nil {
		t.Error("Dendrite invited us to the room whose RoomSync says Never")
	}
	if out, err := env.Kubectl("wait", "roomsync/never", "--for=jsonpath={.status.rooms[0].membership}=NotJoined", "--timeout=60s"); err != nil {
		status, _ := env.Kubectl("get", "roomsync/never", "-o", "jsonpath={.status}")
		t.Fatalf("kubectl wait for NotJoined: %v\n%s\nstatus: %s", err, out, status)
	}
	if slices.Contains(d.members(t, refused), ourUser) {
		t.Error("joined the room whose RoomSync says Never")
	}
}

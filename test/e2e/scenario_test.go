package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
	"github.com/roomsync/roomsync/internal/testenv"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/resolver/stateres"
	"github.com/roomsync/roomsync/store"
)

// TestForkedRoomScenario builds, on two Dendrites, a room whose DAG forks and merges and whose
// state both sides change at once, and checks that both servers end up with the same history,
// that it is big enough to matter, and that its membership and state changes are in it. Then
// it is the oracle for roomsync's room state: roomsync, joined before the rounds (so that
// Dendrite shows it the whole history), syncs the room, and the state it computed after every
// event equals Dendrite's own.
func TestForkedRoomScenario(t *testing.T) {
	a, b := startDendrite(t), startDendrite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	us := newSyncIdentity(t, a, b)
	t0 := time.Now()
	fr, err := dendritepeer.BuildForkedRoom(ctx, a.peer, b.peer, dendritepeer.ForkedRoomOptions{
		AfterSetUp: func(_ context.Context, room string) error { return us.sync(t, room) },
	})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(t0)
	t.Logf("built %s in %v: %d events; made %v; refused %v; state resolution undid %d kicks or bans, %d users mended",
		fr.RoomID, built.Round(time.Millisecond), fr.Events, fr.Made, fr.Refused, fr.Undone, fr.Mended)
	if fr.Events < 1000 {
		t.Errorf("%d events, want at least 1000", fr.Events)
	}
	if len(fr.Users[a.serverName]) == 0 || len(fr.Users[b.serverName]) == 0 {
		t.Errorf("users by server: %v", fr.Users)
	}

	// Both servers, each read by its own admin (joined throughout, so history visibility hides
	// nothing from them), show the same events.
	ids := func(d *dendrite) []string {
		got, err := d.peer.EventIDs(ctx, fr.RoomID, fr.Admins[d.serverName])
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	idsA, idsB := ids(a), ids(b)
	if len(idsA) != fr.Events || !slices.Equal(idsA, idsB) {
		t.Errorf("A shows %d events, B %d (build said %d); same set: %t", len(idsA), len(idsB), fr.Events, slices.Equal(idsA, idsB))
	}

	// The history holds what the rounds did, as B (which took part through federation) shows it.
	timeline, err := b.peer.Timeline(ctx, fr.RoomID, fr.Admins[b.serverName])
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range timeline {
		switch {
		case e.Sender == us.user:
			counts["ours"]++
		case e.Type != "m.room.member":
			counts[e.Type]++
		case e.Membership == "leave" && e.StateKey != nil && *e.StateKey != e.Sender:
			counts["kick or unban"]++
		default:
			counts[e.Membership]++
		}
	}
	t.Logf("B's timeline: %d events: %v", len(timeline), counts)
	// Every event a server accepted is in the history, once: the room's creation adds its own
	// join, power levels, join rule and history visibility.
	m := fr.Made
	for kind, want := range map[string]int{
		"m.room.message":            m["message"],
		"m.room.topic":              m["topic"],
		"m.room.power_levels":       m["power_levels"] + 1,
		"m.room.join_rules":         m["join_rules"] + 1,
		"m.room.history_visibility": m["history_visibility"] + 1,
		"join":                      m["join"] + 1,
		"leave":                     m["leave"],
		"invite":                    m["invite"],
		"ban":                       m["ban"],
		"kick or unban":             m["kick"] + m["unban"],
	} {
		// A request that raced the other server may succeed without an event (a join of a
		// user already joined): a few fewer than made, never more, and every message.
		if counts[kind] > want || counts[kind] < want-3 || (kind == "m.room.message" && counts[kind] != want) {
			t.Errorf("%d %s in the history, want %d", counts[kind], kind, want)
		}
	}
	// Each kind of change happened, the kicks and bans included, and both servers' topics and
	// power levels.
	for _, kind := range []string{"message", "topic", "power_levels", "join_rules", "history_visibility",
		"join", "leave", "invite", "kick", "ban", "unban"} {
		if m[kind] == 0 {
			t.Errorf("no %s made", kind)
		}
	}
	if m["topic"] < 2 || m["power_levels"] < 3 {
		t.Errorf("topics %d, power levels %d: the concurrent changes are not all there", m["topic"], m["power_levels"])
	}

	// Both servers' current state is the same: the forks' state resolved alike.
	var states [2]map[string]string
	for i, d := range []*dendrite{a, b} {
		state, err := d.peer.StateEvents(ctx, fr.RoomID, fr.Admins[d.serverName])
		if err != nil {
			t.Fatal(err)
		}
		states[i] = map[string]string{}
		for _, e := range state {
			if e.StateKey != nil {
				states[i][e.Type+" "+*e.StateKey] = e.EventID
			}
		}
	}
	if !maps.Equal(states[0], states[1]) {
		t.Errorf("current state differs:\nA: %v\nB: %v", states[0], states[1])
	}
	t.Logf("current state: %d events on both servers", len(states[0]))

	if err := us.sync(t, fr.RoomID); err != nil {
		t.Fatal(err)
	}
	assertStoreEquals(t, us.storeURL, fr.RoomID, idsA)
	us.compareStates(t, ctx, a, fr.RoomID)
}

// syncIdentity is roomsync's side of the oracle test: a server name on loopback with its key
// and certificate (Dendrite fetches the key to check our join and our requests) and a store.
type syncIdentity struct {
	name, user, keyFile, cert, key, storeURL string
	peers                                    []*dendrite
}

func newSyncIdentity(t *testing.T, peers ...*dendrite) *syncIdentity {
	dir := t.TempDir()
	cert, key := selfSignedCert(t, dir)
	name := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	return &syncIdentity{name: name, user: "@roomsync:" + name, keyFile: signingKey(t, dir), cert: cert, key: key,
		storeURL: "sqlite://" + filepath.Join(dir, "events.db"), peers: peers}
}

// sync runs `roomsync sync --join always` on the room, named as users name peers.
func (s *syncIdentity) sync(t *testing.T, room string) error {
	args := []string{"sync", "--store", s.storeURL, "--server-name", s.name, "--signing-key", s.keyFile,
		"--listen", s.name, "--tls-cert", s.cert, "--tls-key", s.key, "--insecure-skip-tls-verify",
		"--room", room, "--join", "always", "--timeout", "4m"}
	for _, p := range s.peers {
		args = append(args, "--peer", p.serverName)
	}
	_, progress, code := runCapture(t, 5*time.Minute, roomsyncBin, args...)
	if code != 0 {
		return fmt.Errorf("roomsync sync exited %d:\n%s", code, tail(progress, 3000))
	}
	// Every pass goes without an error: a pass that failed and a later one that mended it
	// would hide a fault.
	if strings.Contains(progress, "last error:") {
		return fmt.Errorf("a pass of roomsync sync failed:\n%s", tail(progress, 3000))
	}
	return nil
}

// compareStates asks d, over federation as roomsync's server, for the state at every stored
// event (/state_ids: Dendrite answers the state after the event, the event included when it
// is an accepted state event) and compares it with the state roomsync computed after it.
func (s *syncIdentity) compareStates(t *testing.T, ctx context.Context, d *dendrite, room string) {
	t.Helper()
	st, err := store.OpenReadOnly(ctx, s.storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, err := federation.LoadSigningKey(s.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := federation.ParseEndpoint("https://"+d.serverName, true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := federation.NewClient(federation.Options{ServerName: s.name, Key: key,
		Endpoints: map[string]federation.Endpoint{d.serverName: ep}, RequestTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	var events []store.Event
	if err := st.StreamEvents(ctx, room, func(ev store.Event) error { events = append(events, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	o := &mergeOracle{st: st, gmsl: buildGMSLCheck(t), dir: os.Getenv("ROOMSYNC_ORACLE_DUMP")}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	compared, merges, rejected, refused := 0, 0, 0, 0
	var mismatches, unexplained []string
	differs := map[string]bool{}
	anomalies := map[string]int{}
	theirAfter := map[string]stateres.StateMap{}
	for _, ev := range events {
		if len(ev.PrevEvents) > 1 {
			merges++
		}
		ours, own, err := resolver.StateAfter(ctx, st, ev.ID)
		if err != nil {
			t.Fatalf("our state at %s: %v", ev.ID, err)
		}
		if own.Rejected != "" {
			rejected++
		}
		theirIDs, _, err := client.StateIDs(ctx, d.serverName, room, ev.ID)
		if err != nil {
			refused++
			continue
		}
		compared++
		theirs := stateOf(t, ctx, st, theirIDs)
		theirAfter[ev.ID] = theirs
		if maps.Equal(ours, theirs) {
			continue
		}
		differs[ev.ID] = true
		root := true
		for _, p := range ev.PrevEvents {
			root = root && !differs[p]
		}
		line := fmt.Sprintf("%s (%s, depth %d, %d prevs): %s", ev.ID, ev.Type, ev.Depth, len(ev.PrevEvents), diffStates(ctx, st, ours, theirs))
		mismatches = append(mismatches, line)
		if !root {
			continue // it inherits an earlier difference
		}
		// Where the prevs' states agree and ours and Dendrite's merged states do not, the
		// difference must be Dendrite's resolver's own answer (gomatrixserverlib, fed the
		// same prev states), and of one of two kinds where that resolver departs from the
		// spec (see dendriteAnomaly and the stateres tests that pin our answer). Lost power
		// levels: gomatrixserverlib falls back to an event's own auth events for member keys
		// only, so while the power levels are conflicted it checks them against none.
		prevStates := make([]stateres.StateMap, len(ev.PrevEvents))
		for i, p := range ev.PrevEvents {
			if prevStates[i], _, err = resolver.StateAfter(ctx, st, p); err != nil {
				t.Fatal(err)
			}
		}
		unexplained = append(unexplained, o.explainMerge(t, ctx, "ours", ev, prevStates, ours, theirs, anomalies)...)
	}

	// Past a root the stored states differ for good, so the comparison above says nothing of
	// the later events. The same rules run again on Dendrite's own inputs, at every event:
	// the state before it resolved from Dendrite's states after its prevs, the event
	// authorized against that, with Dendrite's verdicts on the events it names. The answer
	// must be Dendrite's state after the event, except at merges explained as above.
	local := o.localCheck(t, ctx, events, theirAfter)
	unexplained = append(unexplained, local.unexplained...)
	t.Logf("state after %d of %d events compared with Dendrite's /state_ids (%d merges, %d rejected by the rules, %d not shown to us): %d differ",
		compared, len(events), merges, rejected, refused, len(mismatches))
	t.Logf("where the stored states begin to differ, Dendrite's answer %v", anomalies)
	t.Logf("our rules on Dendrite's inputs: %d events checked, %d give Dendrite's answer; the others are merges where Dendrite's answer is gomatrixserverlib's: %v",
		local.checked, local.agree, local.anomalies)
	for _, m := range mismatches[:min(len(mismatches), 5)] {
		t.Logf("differs: %s", m)
	}
	if compared < 1000 || merges < 20 || local.checked < 1000 {
		t.Errorf("compared %d events over %d merges, %d on Dendrite's inputs; want at least 1000, 20 and 1000", compared, merges, local.checked)
	}
	if len(unexplained) > 0 {
		t.Errorf("%d places where our state begins to differ from Dendrite's for no reason the rules give:\n%s",
			len(unexplained), strings.Join(unexplained[:min(len(unexplained), 10)], "\n"))
	}
}

// mergeOracle explains where our state and Dendrite's differ at a merge.
type mergeOracle struct {
	st   store.Store
	gmsl string // hack/gmslcheck, built
	dir  string // where merges are dumped for gmslcheck
	// rejected is Dendrite's verdict on an event, once its answers are known.
	rejected func(store.Event) bool
}

// explainMerge accounts for the keys where got, the state after ev from prevStates by our
// rules, differs from theirs, Dendrite's: each must be Dendrite's resolver's own answer
// (gomatrixserverlib, fed the same prev states, with the verdicts named) and of one of two
// kinds where that resolver departs from the spec (see dendriteAnomaly and the stateres tests
// that pin our answer). It counts those in anomalies and returns the others, described.
// Lost power levels: gomatrixserverlib falls back to an event's own auth events for member
// keys only, so while the power levels are conflicted it checks them against none.
func (o *mergeOracle) explainMerge(t *testing.T, ctx context.Context, verdicts string, ev store.Event, prevStates []stateres.StateMap, got, theirs stateres.StateMap, anomalies map[string]int) []string {
	t.Helper()
	line := fmt.Sprintf("%s (%s, depth %d, %d prevs; %s verdicts): %s", ev.ID, ev.Type, ev.Depth, len(ev.PrevEvents), verdicts, diffStates(ctx, o.st, got, theirs))
	rootFile, eventsFile := o.dumpRoot(t, ctx, verdicts, ev, prevStates, got, theirs)
	gmsl := stateOf(t, ctx, o.st, runGMSL(t, o.gmsl, eventsFile, rootFile))
	noFallback := conflictedAuthKeys(prevStates)
	var out []string
	for k := range keysOf(got, theirs) {
		if got[k] == theirs[k] || (ev.StateKey != nil && k == (pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey})) {
			continue
		}
		kind := dendriteAnomaly(ctx, o.st, k, got[k], theirs[k])
		switch {
		case gmsl[k] != theirs[k]:
			kind = ""
			line += fmt.Sprintf("\n  gomatrixserverlib answers %s, not Dendrite's %s", gmsl[k], theirs[k])
		case kind == "lost the power levels" && !slices.Contains(noFallback, "m.room.power_levels"):
			kind = ""
		}
		if kind == "" {
			evs, _ := o.st.Events(ctx, []string{string(got[k])})
			out = append(out, fmt.Sprintf("%s\n  ours is %s", line, evs[string(got[k])].Raw))
		} else {
			anomalies[kind]++
		}
	}
	return out
}

// localResult is what the rules gave on Dendrite's inputs.
type localResult struct {
	checked, agree int
	anomalies      map[string]int
	unexplained    []string
}

// localCheck runs state resolution and the authorization rules at every event of events
// whose prevs Dendrite showed us, on Dendrite's states after the prevs (theirAfter) and with
// Dendrite's verdicts (a state event it rejected is not in its state after the event), and
// compares the state after the event with Dendrite's.
func (o *mergeOracle) localCheck(t *testing.T, ctx context.Context, events []store.Event, theirAfter map[string]stateres.StateMap) localResult {
	t.Helper()
	res := localResult{anomalies: map[string]int{}}
	if len(events) == 0 {
		return res
	}
	room, err := o.st.Room(ctx, events[0].RoomID)
	if err != nil {
		t.Fatal(err)
	}
	version := id.RoomVersion(room.Version)
	o.rejected = func(e store.Event) bool {
		after, ok := theirAfter[e.ID]
		if !ok || e.StateKey == nil {
			return e.Rejected != ""
		}
		return after[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] != id.EventID(e.ID)
	}
	parsed := map[id.EventID]*pdu.PDU{}
	parse := func(e store.Event) *pdu.PDU {
		if p, ok := parsed[id.EventID(e.ID)]; ok {
			return p
		}
		var p pdu.PDU
		if err := jsonv2.Unmarshal(e.Raw, &p); err != nil {
			t.Fatalf("parse %s: %v", e.ID, err)
		}
		p.InternalMeta.EventID = id.EventID(e.ID)
		p.InternalMeta.Rejected = o.rejected(e)
		parsed[p.InternalMeta.EventID] = &p
		return &p
	}
	load := func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
		held, err := o.st.Events(ctx, slices.Collect(func(yield func(string) bool) {
			for _, e := range ids {
				if !yield(string(e)) {
					return
				}
			}
		}))
		if err != nil {
			return nil, err
		}
		out := make([]*pdu.PDU, 0, len(held))
		for _, e := range held {
			out = append(out, parse(e))
		}
		return out, nil
	}
	noKeys := func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return "", time.Time{}, errors.New("no third-party invites in this room")
	}
	for _, ev := range events {
		want, ok := theirAfter[ev.ID]
		if !ok {
			continue
		}
		prevStates := make([]stateres.StateMap, 0, len(ev.PrevEvents))
		for _, p := range ev.PrevEvents {
			if s, ok := theirAfter[p]; ok {
				prevStates = append(prevStates, s)
			}
		}
		if len(prevStates) < len(ev.PrevEvents) {
			continue // a prev Dendrite did not show us
		}
		before, err := stateres.Resolve(ctx, version, prevStates, load)
		if err != nil {
			res.unexplained = append(res.unexplained, fmt.Sprintf("%s: resolving Dendrite's prev states: %v", ev.ID, err))
			continue
		}
		evt := parse(ev)
		kind, broken := resolver.Authorize(ctx, version, evt, before, load, noKeys)
		got := maps.Clone(before)
		if kind == "" && evt.StateKey != nil {
			got[pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}] = id.EventID(ev.ID)
		}
		res.checked++
		if maps.Equal(got, want) {
			res.agree++
			continue
		}
		if len(ev.PrevEvents) < 2 {
			// No merge: the state rolled forward and the event's verdict must be Dendrite's.
			res.unexplained = append(res.unexplained, fmt.Sprintf("%s (%s, depth %d, one prev; our verdict %q %v): %s",
				ev.ID, ev.Type, ev.Depth, kind, broken, diffStates(ctx, o.st, got, want)))
			continue
		}
		res.unexplained = append(res.unexplained, o.explainMerge(t, ctx, "dendrite", ev, prevStates, got, want, res.anomalies)...)
	}
	return res
}

// conflictedAuthKeys are the keys among the power levels and the join rules whose events
// differ between prevStates.
func conflictedAuthKeys(prevStates []stateres.StateMap) []string {
	var out []string
	for _, k := range []pdu.StateKey{{Type: "m.room.power_levels"}, {Type: "m.room.join_rules"}} {
		values := map[id.EventID]bool{}
		for _, s := range prevStates {
			values[s[k]] = true
		}
		if len(values) > 1 {
			out = append(out, k.Type)
		}
	}
	return out
}

// dendriteAnomaly names what is odd in Dendrite's value of key k where a merge makes it
// differ from ours, or "" when nothing does:
//   - "lost the power levels": no m.room.power_levels at all, which state resolution cannot
//     give, since the power levels of every state passed the rules before;
//   - "rewound a key": an older event of the same key, one that ours descends from (through
//     its auth events or its prev events): the newer event, which passed the rules on its
//     branch and in our resolution, was dropped. gomatrixserverlib leaves the auth
//     difference out of the full conflicted set (its isInAllAuthLists looks up the auth set
//     of the event itself, which only a conflicted event has), so an invite or a ban that
//     only the auth difference holds is never replayed, and what depends on it fails.
//     stateres's tests pin our answer for both shapes seen.
func dendriteAnomaly(ctx context.Context, st store.Store, k pdu.StateKey, ours, theirs id.EventID) string {
	if k.Type == "m.room.power_levels" && theirs == "" && ours != "" {
		return "lost the power levels"
	}
	if ours == "" || theirs == "" {
		return ""
	}
	held, err := st.Events(ctx, []string{string(theirs)})
	if err != nil || len(held) == 0 {
		return ""
	}
	floor := held[string(theirs)].Depth
	// Walk back from ours through auth and prev events, no deeper than theirs.
	seen := map[string]bool{string(ours): true}
	frontier, err := st.Events(ctx, []string{string(ours)})
	for err == nil && len(frontier) > 0 {
		var next []string
		for _, e := range frontier {
			refs := append(gjson.GetBytes(e.Raw, "auth_events").Array(), gjson.GetBytes(e.Raw, "prev_events").Array()...)
			for _, r := range refs {
				if r.Str == string(theirs) {
					return "rewound a key"
				}
				if !seen[r.Str] {
					seen[r.Str] = true
					next = append(next, r.Str)
				}
			}
		}
		// Only what can still lead to theirs: deeper than it.
		frontier, err = st.Events(ctx, next)
		maps.DeleteFunc(frontier, func(_ string, e store.Event) bool { return e.Depth <= floor })
	}
	return ""
}

// dumpRoot writes a merge into o.dir: the event, the states after its prevs, both merged
// states (root-….json, whose path it returns), and, once per verdicts, every event of the
// room with its rejection as verdicts say (events-VERDICTS.jsonl, one JSON object a line).
func (o *mergeOracle) dumpRoot(t *testing.T, ctx context.Context, verdicts string, ev store.Event, prevStates []stateres.StateMap, ours, theirs stateres.StateMap) (rootFile, eventsFile string) {
	t.Helper()
	list := func(m stateres.StateMap) []string {
		out := []string{}
		for _, e := range m {
			out = append(out, string(e))
		}
		slices.Sort(out)
		return out
	}
	root := map[string]any{"event": ev.ID, "ours": list(ours), "theirs": list(theirs)}
	var states [][]string
	for _, s := range prevStates {
		states = append(states, list(s))
	}
	root["prev_states"] = states
	rootFile = filepath.Join(o.dir, verdicts+"-root-"+strings.TrimPrefix(ev.ID, "$")+".json")
	b, _ := json.Marshal(root)
	if err := os.WriteFile(rootFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	eventsFile = filepath.Join(o.dir, "events-"+verdicts+".jsonl")
	if _, err := os.Stat(eventsFile); err == nil {
		return rootFile, eventsFile
	}
	var all bytes.Buffer
	_ = o.st.StreamEvents(ctx, ev.RoomID, func(e store.Event) error {
		rejected := e.Rejected
		if o.rejected != nil && verdicts == "dendrite" {
			rejected = ""
			if o.rejected(e) {
				rejected = "rejected by Dendrite"
			}
		}
		fmt.Fprintf(&all, "{\"event_id\":%q,\"rejected\":%q,\"pdu\":%s}\n", e.ID, rejected, e.Raw)
		return nil
	})
	if err := os.WriteFile(eventsFile, all.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return rootFile, eventsFile
}

// buildGMSLCheck builds hack/gmslcheck (a module of its own: gomatrixserverlib's state
// resolution, as Dendrite runs it) into the test's directory.
func buildGMSLCheck(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gmslcheck")
	dir := filepath.Join(testenv.RepoRoot(), "hack", "gmslcheck")
	if _, code := run(t, 5*time.Minute, "go", "build", "-C", dir, "-o", bin, "."); code != 0 {
		t.Fatalf("go build hack/gmslcheck exited %d", code)
	}
	return bin
}

// runGMSL resolves a dumped root with gomatrixserverlib and returns the state it gives.
func runGMSL(t *testing.T, bin, eventsFile, rootFile string) []string {
	t.Helper()
	out, code := run(t, time.Minute, bin, eventsFile, rootFile)
	var ans struct {
		Resolved []string `json:"resolved"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ans) != nil {
		t.Fatalf("gmslcheck exited %d: %s", code, out)
	}
	return ans.Resolved
}

// stateOf names each event of ids by its key, from the store.
func stateOf(t *testing.T, ctx context.Context, st store.Store, ids []string) map[pdu.StateKey]id.EventID {
	events, err := st.Events(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	out := map[pdu.StateKey]id.EventID{}
	for _, e := range ids {
		ev, ok := events[e]
		if !ok || ev.StateKey == nil {
			t.Fatalf("Dendrite's state names %s, which we do not hold as a state event", e)
		}
		out[pdu.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = id.EventID(e)
	}
	return out
}

func keysOf(states ...map[pdu.StateKey]id.EventID) map[pdu.StateKey]bool {
	out := map[pdu.StateKey]bool{}
	for _, s := range states {
		for k := range s {
			out[k] = true
		}
	}
	return out
}

// diffStates lists the keys whose events differ.
func diffStates(ctx context.Context, st store.Store, ours, theirs map[pdu.StateKey]id.EventID) string {
	var out []string
	for k := range keysOf(ours, theirs) {
		if ours[k] != theirs[k] {
			out = append(out, fmt.Sprintf("%s %q: ours %s, Dendrite's %s", k.Type, k.StateKey,
				describe(ctx, st, nonEmpty(ours[k])), describe(ctx, st, nonEmpty(theirs[k]))))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

func nonEmpty(e id.EventID) []string {
	if e == "" {
		return nil
	}
	return []string{string(e)}
}

// describe says what the events are, as the store holds them: for a diagnosis.
func describe(ctx context.Context, st store.Store, ids []string) string {
	events, _ := st.Events(ctx, ids)
	states, _ := st.EventStates(ctx, ids)
	var out []string
	for _, id := range ids {
		e := events[id]
		sk := ""
		if e.StateKey != nil {
			sk = *e.StateKey
		}
		out = append(out, fmt.Sprintf("%s{%s %s by %s depth %d %s rejected %q}", id, e.Type, sk, e.Sender, e.Depth,
			gjsonMembership(e.Raw), states[id].Rejected))
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func gjsonMembership(raw []byte) string { return gjson.GetBytes(raw, "content.membership").Str }

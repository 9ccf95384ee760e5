package fixturepeer

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// stateful is a forked room whose state changes (joins, renames) and that holds unauthorized
// events of both kinds, a message from a stranger and a power-levels change.
var stateful = sync.OnceValue(func() *Room {
	r, err := Generate(RoomOptions{
		Seed: 21, Events: 1500, ForkRate: 0.1, JoinRate: 0.02, RenameRate: 0.02, UnauthorizedRate: 0.03, Heads: 2,
	})
	if err != nil {
		panic(err)
	}
	return r
})

// bruteState computes the state at e from scratch, independently of state.go: it collects
// every ancestor of e by walking prev_events, keeps for each (type, state_key) the state
// event with the highest Index that is not unauthorized (and e itself for the state after
// e), then walks auth_events from those events for the auth chain. Both are in generation
// order.
func bruteState(r *Room, e *Event, after bool) (state, chain []id.EventID) {
	ancestors := map[id.EventID]bool{}
	queue := slices.Clone(e.Prev)
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		if ancestors[x] {
			continue
		}
		ancestors[x] = true
		queue = append(queue, r.Get(x).Prev...)
	}
	if after {
		ancestors[e.ID] = true
	}
	newest := map[[2]string]*Event{}
	for x := range ancestors {
		ev := r.Get(x)
		if _, bad := r.Unauthorized[x]; bad || ev.StateKey == nil {
			continue
		}
		k := [2]string{ev.Type, *ev.StateKey}
		if cur := newest[k]; cur == nil || ev.Index > cur.Index {
			newest[k] = ev
		}
	}
	var stateEvs []*Event
	for _, ev := range newest {
		stateEvs = append(stateEvs, ev)
	}
	inChain := map[id.EventID]bool{}
	var chainEvs []*Event
	var walk func(ev *Event)
	walk = func(ev *Event) {
		for _, a := range ev.Auth {
			if !inChain[a] {
				inChain[a] = true
				chainEvs = append(chainEvs, r.Get(a))
				walk(r.Get(a))
			}
		}
	}
	for _, ev := range stateEvs {
		walk(ev)
	}
	return byIndex(stateEvs), byIndex(chainEvs)
}

func byIndex(evs []*Event) []id.EventID {
	slices.SortFunc(evs, func(a, b *Event) int { return a.Index - b.Index })
	out := make([]id.EventID, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func setOf(ids []id.EventID) EventSet {
	s := make(EventSet, len(ids))
	for _, e := range ids {
		s[e] = struct{}{}
	}
	return s
}

// stateCases are the events of a room the state tests ask about, by what makes each one
// interesting. A case the room lacks fails the test: the room would not test what it claims.
func stateCases(t *testing.T, r *Room) map[string]*Event {
	t.Helper()
	cases := map[string]*Event{
		"create":                    r.Events[0],
		"history visibility":        r.Events[initialStateEvents-1],
		"first after initial state": r.Events[initialStateEvents],
	}
	members := map[string]bool{}
	for _, e := range r.Events {
		rule, bad := r.Unauthorized[e.ID]
		switch {
		case bad && rule == "6":
			setOnce(cases, "unauthorized message", e)
		case bad && rule == "8":
			setOnce(cases, "unauthorized power levels", e)
		case e.Type == "m.room.member" && e.Index >= initialStateEvents && !members[*e.StateKey]:
			setOnce(cases, "join", e)
		case e.Type == "m.room.member" && members[*e.StateKey]:
			setOnce(cases, "rename", e)
		case len(e.Prev) >= 3:
			setOnce(cases, "merge of three", e)
		}
		if e.Type == "m.room.member" {
			members[*e.StateKey] = true
		}
	}
	for _, name := range []string{"join", "rename", "unauthorized message", "unauthorized power levels", "merge of three"} {
		if cases[name] == nil {
			t.Fatalf("the room has no %s", name)
		}
	}
	for _, e := range r.Events {
		for _, name := range []string{"unauthorized power levels", "rename"} {
			if slices.Contains(e.Prev, cases[name].ID) {
				setOnce(cases, "child of "+name, e)
			}
		}
	}
	for i, h := range r.Heads() {
		cases["head "+string(rune('A'+i))] = r.Get(h)
	}
	return cases
}

func setOnce(m map[string]*Event, name string, e *Event) {
	if m[name] == nil {
		m[name] = e
	}
}

// TestRoomState checks Room.StateBefore and StateAfter at every event of rooms of several
// versions against the brute-force computation.
func TestRoomState(t *testing.T) {
	for _, tc := range []struct {
		name string
		room func() *Room
	}{
		{"v11 forked", stateful},
		{"v12", func() *Room {
			return MustGenerate(t, RoomOptions{Seed: 22, Events: 400, Version: id.RoomV12, JoinRate: 0.03, RenameRate: 0.03, UnauthorizedRate: 0.05, Heads: 3})
		}},
		{"v1", func() *Room {
			return MustGenerate(t, RoomOptions{Seed: 23, Events: 400, Version: id.RoomV1, JoinRate: 0.03, RenameRate: 0.03, UnauthorizedRate: 0.05, Heads: 3})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.room()
			superseded := false
			for _, e := range r.Events {
				for _, after := range []bool{false, true} {
					state, chain := r.StateBefore(e.ID)
					if after {
						state, chain = r.StateAfter(e.ID)
					}
					wantState, wantChain := bruteState(r, e, after)
					if !slices.Equal(state, wantState) || !slices.Equal(chain, wantChain) {
						t.Fatalf("event %d (%s), after %v: state %v chain %v; want %v and %v", e.Index, e.Type, after, state, chain, wantState, wantChain)
					}
					checkStateInvariants(t, r, state, chain)
					for _, c := range chain {
						if !slices.Contains(state, c) && r.Get(c).Type == "m.room.member" {
							superseded = true
						}
					}
				}
			}
			if !superseded {
				t.Error("no auth chain holds a superseded member event: the room has no renames")
			}
			if s, c := r.StateBefore("$nope"); s != nil || c != nil {
				t.Errorf("unknown event: %v, %v", s, c)
			}
		})
	}
}

// checkStateInvariants checks what holds of any state answer: no unauthorized event, one
// event per (type, state_key), an auth chain closed under auth_events.
func checkStateInvariants(t *testing.T, r *Room, state, chain []id.EventID) {
	t.Helper()
	keys := map[[2]string]bool{}
	for _, e := range state {
		ev := r.Get(e)
		if ev == nil || ev.StateKey == nil {
			t.Fatalf("%s in the state is not a state event of the room", e)
		}
		if rule, bad := r.Unauthorized[e]; bad {
			t.Fatalf("unauthorized event %s (rule %s) in the state", e, rule)
		}
		k := [2]string{ev.Type, *ev.StateKey}
		if keys[k] {
			t.Fatalf("two events for %v in the state", k)
		}
		keys[k] = true
	}
	inChain := setOf(chain)
	for _, e := range slices.Concat(state, chain) {
		if rule, bad := r.Unauthorized[e]; bad {
			t.Fatalf("unauthorized event %s (rule %s) in the state or auth chain", e, rule)
		}
		for _, a := range r.Get(e).Auth {
			if !inChain.Holds(a) {
				t.Fatalf("auth event %s of %s is not in the auth chain", a, e)
			}
		}
	}
}

func stateIDs(t *testing.T, c *federation.Client, p *Peer, roomID id.RoomID, e id.EventID) (*federation.RespGetStateIDs, error) {
	t.Helper()
	return c.GetStateIDs(ctx(t), p.ServerName(), roomID, e)
}

func stateOf(t *testing.T, c *federation.Client, p *Peer, roomID id.RoomID, e id.EventID) (*federation.RespGetState, error) {
	t.Helper()
	return c.GetState(ctx(t), p.ServerName(), roomID, e)
}

// TestStateEndpoints asks a Synapse-like peer (state before) and a Dendrite-like one (state
// after) for the state at chosen events over federation.
func TestStateEndpoints(t *testing.T) {
	r := stateful()
	cases := stateCases(t, r)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range cases {
			if !yield(n) {
				return
			}
		}
	})
	for _, mode := range []struct {
		name  string
		after bool
		peer  func(t *testing.T) *Peer
	}{
		{"synapse-like before", false, func(t *testing.T) *Peer { return StartSynapseLike(t, r, WithJoined(ourName)) }},
		{"default before", false, func(t *testing.T) *Peer { return Start(t, r) }},
		{"dendrite-like after", true, func(t *testing.T) *Peer { return Start(t, r, WithStateAfter()) }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			p := mode.peer(t)
			c := client(t, p)
			for _, name := range names {
				e := cases[name]
				t.Run(name, func(t *testing.T) {
					wantState, wantChain := bruteState(r, e, mode.after)
					ids, err := stateIDs(t, c, p, r.ID, e.ID)
					if err != nil {
						t.Fatalf("state_ids at %d: %v", e.Index, err)
					}
					compareSets(t, "pdu_ids", setOf(ids.PDUs), setOf(wantState))
					compareSets(t, "auth_chain_ids", setOf(ids.AuthChain), setOf(wantChain))
					if len(ids.PDUs) != len(wantState) || len(ids.AuthChain) != len(wantChain) {
						t.Errorf("duplicates: %d and %d IDs, want %d and %d", len(ids.PDUs), len(ids.AuthChain), len(wantState), len(wantChain))
					}
					checkStateInvariants(t, r, ids.PDUs, ids.AuthChain)
					_, bad := r.Unauthorized[e.ID]
					if in := slices.Contains(ids.PDUs, e.ID); in != (mode.after && e.StateKey != nil && !bad) {
						t.Errorf("the event itself in its state: %v", in)
					}

					full, err := stateOf(t, c, p, r.ID, e.ID)
					if err != nil {
						t.Fatalf("state at %d: %v", e.Index, err)
					}
					// Byte for byte the generated events, and verifiable as a receiver would.
					compareSets(t, "pdus", servedIDs(t, r, full.PDUs), setOf(ids.PDUs))
					compareSets(t, "auth_chain", servedIDs(t, r, full.AuthChain), setOf(ids.AuthChain))
					for _, raw := range slices.Concat(full.PDUs, full.AuthChain) {
						if got := check(r, raw); !got.valid() || got.roomID != r.ID {
							t.Fatalf("served PDU does not verify: %+v", got)
						}
					}
				})
			}
		})
	}
}

// TestStateRefusals: members only, unknown rooms and events, holds, counts.
func TestStateRefusals(t *testing.T) {
	r := stateful()
	other := linear()
	head := r.Heads()[0]
	notFound := func(t *testing.T, what string, err error) {
		t.Helper()
		if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
			t.Errorf("%s: %d %s (%v); want 404 M_NOT_FOUND", what, status, code, err)
		}
	}
	both := func(c *federation.Client, p *Peer, roomID id.RoomID, e id.EventID) [2]error {
		return [2]error{errOf(stateIDs(t, c, p, roomID, e)), errOf(stateOf(t, c, p, roomID, e))}
	}

	t.Run("members only", func(t *testing.T) {
		p := StartSynapseLike(t, r)
		c := client(t, p)
		for _, err := range both(c, p, r.ID, head) {
			forbidden(t, "not joined", err)
		}
		for _, err := range both(c, p, "!nope:origin-a.invalid", head) {
			forbidden(t, "unknown room", err)
		}
		p.SetJoined(ourName, true)
		for _, err := range both(c, p, r.ID, head) {
			if err != nil {
				t.Errorf("joined: %v", err)
			}
		}
		if p.Count(EndpointStateIDs) != 3 || p.Count(EndpointState) != 3 {
			t.Errorf("counts %v", p.Counts())
		}
	})

	t.Run("not found", func(t *testing.T) {
		p := Start(t, r, WithRoom(other, nil), WithHold(HoldIndexes(300, len(r.Events))))
		c := client(t, p)
		for name, q := range map[string]struct {
			room id.RoomID
			e    id.EventID
		}{
			"unknown room":          {"!nope:origin-a.invalid", head},
			"unknown event":         {r.ID, "$nope"},
			"empty event_id":        {r.ID, ""},
			"event of another room": {r.ID, other.Events[10].ID},
			"event not held":        {r.ID, r.Events[299].ID},
		} {
			for _, err := range both(c, p, q.room, q.e) {
				notFound(t, name, err)
			}
		}
		// No event_id at all (mautrix always sends one).
		for _, path := range []string{"state_ids", "state"} {
			_, _, err := c.MakeFullRequest(ctx(t), federation.RequestParams{
				ServerName: p.ServerName(), Method: http.MethodGet, Path: federation.URLPath{"v1", path, r.ID}, Authenticate: true,
			})
			notFound(t, "no event_id at "+path, err)
		}
		// A held event's state is the room's, even where the peer holds none of the state
		// events (the create event is at 0), as for a server that joined late.
		e := r.Events[400]
		ids, err := stateIDs(t, c, p, r.ID, e.ID)
		if want, _ := bruteState(r, e, false); err != nil || !slices.Equal(slices.Sorted(slices.Values(ids.PDUs)), slices.Sorted(slices.Values(want))) {
			t.Errorf("state at a held event: %v, %v", ids, err)
		}
		if !slices.Contains(ids.PDUs, r.Create().ID) {
			t.Error("the create event is not in the state")
		}
		// The other room is served too.
		if _, err := stateIDs(t, c, p, other.ID, other.Events[10].ID); err != nil {
			t.Errorf("second room: %v", err)
		}
	})

	t.Run("unauthenticated", func(t *testing.T) {
		p := Start(t, r)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		t.Cleanup(hc.CloseIdleConnections)
		for _, path := range []string{"state_ids", "state"} {
			resp, err := hc.Get(p.URL() + "/_matrix/federation/v1/" + path + "/" + url.PathEscape(string(r.ID)) + "?event_id=" + url.QueryEscape(string(head)))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("unsigned request to %s: %d", path, resp.StatusCode)
			}
		}
	})
}

// TestStateFaultsAndLies: faults apply to the state endpoints as to the others, and lies to
// /state's events.
func TestStateFaultsAndLies(t *testing.T) {
	r := stateful()
	head := r.Heads()[0]
	p := Start(t, r)
	c := client(t, p)

	p.SetFaults(Fault{Kind: FaultError, Endpoint: EndpointStateIDs, Status: 502})
	if _, status := respErr(t, errOf(stateIDs(t, c, p, r.ID, head))); status != 502 {
		t.Errorf("fault at state_ids: %d", status)
	}
	if _, err := stateOf(t, c, p, r.ID, head); err != nil {
		t.Errorf("state during a state_ids fault: %v", err)
	}

	p.SetFaults(Fault{Kind: FaultManyPDUs, Count: 1000})
	if ids, err := stateIDs(t, c, p, r.ID, head); err != nil || len(ids.PDUs) != 1000 || ids.PDUs[999] != "$e999" {
		t.Errorf("many IDs at /state_ids: %v", err)
	}
	if st, err := stateOf(t, c, p, r.ID, head); err != nil || len(st.PDUs) != 1000 || string(st.PDUs[0]) != "{}" {
		t.Errorf("many PDUs at /state: %v", err)
	}
	p.SetFaults(Fault{Kind: FaultHugePDU, Size: 200})
	if ids, err := stateIDs(t, c, p, r.ID, head); err != nil || len(ids.PDUs) != 1 || len(ids.PDUs[0]) != 198 {
		t.Errorf("huge ID at /state_ids: %v", err)
	}
	if st, err := stateOf(t, c, p, r.ID, head); err != nil || len(st.PDUs) != 1 || len(st.PDUs[0]) != 200 || !json.Valid(st.PDUs[0]) {
		t.Errorf("huge PDU at /state: %v", err)
	}
	p.ClearFaults()

	p.SetLies(Lie{Kind: LieBadSignature, Endpoint: EndpointState})
	want, _ := r.StateBefore(head)
	ids, err := stateIDs(t, c, p, r.ID, head)
	if err != nil || !slices.Equal(slices.Sorted(slices.Values(ids.PDUs)), slices.Sorted(slices.Values(want))) {
		t.Errorf("state_ids under a lie at /state: %v", err)
	}
	st, err := stateOf(t, c, p, r.ID, head)
	if err != nil || len(st.PDUs) != len(want) {
		t.Fatalf("state under a lie: %v", err)
	}
	for _, raw := range slices.Concat(st.PDUs, st.AuthChain) {
		if got := check(r, raw); got.sigErr == nil {
			t.Fatalf("%s: signature verifies under LieBadSignature", got.id)
		}
	}
}

// BenchmarkRoomState measures the state of a 10,000-event room: the first StateBefore (which
// computes every event's state at once; goal: well under 100 ms) and a /state request after it.
func BenchmarkRoomState(b *testing.B) {
	r := MustGenerate(b, RoomOptions{Seed: 24, Events: 10000, JoinRate: 0.01, RenameRate: 0.01, UnauthorizedRate: 0.01, Heads: 3})
	var first time.Duration
	for i := 0; i < b.N; i++ {
		r.stateOnce, r.stateMemo = sync.Once{}, nil
		start := time.Now()
		r.StateBefore(r.Heads()[0])
		first += time.Since(start)
	}
	b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "ms/first-StateBefore")
}

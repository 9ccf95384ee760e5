package resolver_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver/federation"
)

// Paging /backfill from the heads, each page from the prev events the pages so far reference
// and do not hold (as a server recovering the room asks), serves every event of a forked
// room exactly once, byte for byte as signed; each page starts at the deepest event asked
// for, is deepest first, stays within the limit, and holds only the events asked for and
// their ancestors.
func TestServeBackfillPagesTheWholeRoom(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 111, Events: 400, Heads: 3})
	member := s.as(serveOrigins[1])
	for _, limit := range []int{100, 37} {
		served := map[id.EventID]int{}
		frontier := s.room.Heads()
		pages := 0
		for len(frontier) > 0 {
			pages++
			if pages > len(s.room.Events) {
				t.Fatalf("limit %d: more pages than events", limit)
			}
			pdus, err := s.backfill(member, frontier, limit)
			if err != nil {
				t.Fatalf("limit %d, page %d: %v", limit, pages, err)
			}
			if len(pdus) == 0 || len(pdus) > limit {
				t.Fatalf("limit %d, page %d: %d events", limit, pages, len(pdus))
			}
			asked := ancestors(s.room, frontier...)
			deepest := slices.MaxFunc(frontier, func(a, b id.EventID) int {
				return cmp.Or(cmp.Compare(s.room.Get(a).Depth, s.room.Get(b).Depth), cmp.Compare(a, b))
			})
			prevDepth := int64(1 << 62)
			for i, raw := range pdus {
				evID := eventIDOf(t, s.room.Version, raw)
				ev := s.room.Get(evID)
				switch {
				case ev == nil || !asked[evID]:
					t.Fatalf("limit %d, page %d: %s is not one asked for nor an ancestor", limit, pages, evID)
				case i == 0 && evID != deepest:
					t.Errorf("limit %d, page %d starts at %s, want the deepest asked for, %s", limit, pages, evID, deepest)
				case ev.Depth > prevDepth:
					t.Errorf("limit %d, page %d: %s at depth %d after depth %d", limit, pages, evID, ev.Depth, prevDepth)
				case !bytes.Equal(raw, ev.JSON):
					t.Errorf("limit %d: %s is not served as signed", limit, evID)
				}
				if p, dup := served[evID]; dup {
					t.Errorf("limit %d: %s served by pages %d and %d", limit, evID, p, pages)
				}
				served[evID] = pages
				prevDepth = ev.Depth
			}
			next := map[id.EventID]bool{}
			for evID := range served {
				for _, p := range s.room.Get(evID).Prev {
					if _, ok := served[p]; !ok {
						next[p] = true
					}
				}
			}
			frontier = frontier[:0]
			for p := range next {
				frontier = append(frontier, p)
			}
			slices.Sort(frontier)
		}
		if len(served) != len(s.room.Events) {
			t.Errorf("limit %d: %d events served in %d pages, want all %d", limit, len(served), pages, len(s.room.Events))
		}
		t.Logf("limit %d: %d events in %d pages", limit, len(served), pages)
	}
	if n := s.served.count(federation.EndpointBackfill, federation.OutcomeOK); n == 0 {
		t.Error("no backfill observed")
	}
}

// /get_missing_events answers the events between earliest and latest: never an earliest
// event or an ancestor of one (the requester holds them), never a latest event, nothing
// below min_depth, at most the limit (10 by default, 20 at most), oldest first; and, when
// more are missing than the limit, the newest of them.
func TestServeMissingEventsBounds(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 112, Events: 300, ForkRate: 0.2, MaxBranches: 5})
	member := s.as(serveOrigins[0])
	ev := func(i int) id.EventID { return s.room.Events[i].ID }
	heads := s.room.Heads()
	// A merge past a fork: the requester holds one branch, and the other's events, which
	// share ancestors with the branch it holds, are what it lacks.
	var merge *fixturepeer.Event
	for _, e := range s.room.Events[100:] {
		if len(e.Prev) > 1 && !ancestors(s.room, e.Prev[0])[e.Prev[1]] && !ancestors(s.room, e.Prev[1])[e.Prev[0]] {
			merge = e
			break
		}
	}
	if merge == nil {
		t.Fatal("no merge of two branches in the room")
	}
	cases := []struct {
		name             string
		earliest, latest []id.EventID
		limit, minDepth  int
		wantLimit        int
	}{
		{"a short gap", []id.EventID{ev(200)}, []id.EventID{ev(206)}, 20, 0, 20},
		{"default limit", []id.EventID{ev(100)}, []id.EventID{ev(180)}, 0, 0, 10},
		{"limit capped", []id.EventID{ev(10)}, heads, 50, 0, 20},
		{"min depth", []id.EventID{ev(100)}, []id.EventID{ev(140)}, 20, int(s.room.Events[130].Depth), 20},
		{"from the create event", []id.EventID{ev(0)}, heads, 20, 0, 20},
		{"several earliest on branches", []id.EventID{ev(150), ev(151), ev(152), ev(153)}, []id.EventID{ev(170), ev(171)}, 20, 0, 20},
		{"one branch held, the other missing", []id.EventID{merge.Prev[0]}, []id.EventID{merge.ID}, 20, 0, 20},
		{"earliest not held", []id.EventID{"$nobody-has-this"}, []id.EventID{ev(40)}, 20, 0, 20},
		{"earliest after latest", []id.EventID{ev(250)}, []id.EventID{ev(240)}, 20, 0, 20},
		{"earliest is latest", []id.EventID{ev(120)}, []id.EventID{ev(120)}, 20, 0, 20},
		{"latest not held", []id.EventID{ev(120)}, []id.EventID{"$nobody-has-this"}, 20, 0, 20},
		{"no earliest", nil, []id.EventID{ev(30)}, 20, 0, 20},
	}
	for _, tc := range cases {
		pdus, err := s.missingEvents(member, tc.earliest, tc.latest, tc.limit, tc.minDepth)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		// What the requester lacks: the ancestors of latest that are not ancestors of
		// earliest, less latest itself, at min_depth or deeper; the answer is the newest
		// of them, up to the limit.
		known := ancestors(s.room, tc.earliest...)
		var want []id.EventID
		for evID := range ancestors(s.room, tc.latest...) {
			if !known[evID] && !slices.Contains(tc.latest, evID) && s.room.Get(evID).Depth >= int64(tc.minDepth) {
				want = append(want, evID)
			}
		}
		slices.SortFunc(want, func(a, b id.EventID) int {
			return cmp.Or(cmp.Compare(s.room.Get(b).Depth, s.room.Get(a).Depth), cmp.Compare(b, a))
		})
		want = want[:min(len(want), tc.wantLimit)]
		slices.SortFunc(want, func(a, b id.EventID) int {
			return cmp.Or(cmp.Compare(s.room.Get(a).Depth, s.room.Get(b).Depth), cmp.Compare(a, b))
		})
		got := make([]id.EventID, len(pdus))
		for i, raw := range pdus {
			got[i] = eventIDOf(t, s.room.Version, raw)
			if slices.Contains(tc.earliest, got[i]) || slices.Contains(tc.latest, got[i]) || known[got[i]] {
				t.Errorf("%s: answered %s, an earliest or latest event or an ancestor of an earliest one", tc.name, got[i])
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: answered %d events %v,\nwant %d %v", tc.name, len(got), got, len(want), want)
		}
		t.Logf("%s: %d events", tc.name, len(got))
	}
}

// A server with no user joined to the room, and any server asking about a room the store
// does not hold, gets 403 "Host not in room." from every endpoint; malformed requests get
// the spec's 400s; an event not held is 404; /version is served beside the history.
func TestServeRefusals(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 113, Events: 60})
	stranger, member := s.as(s.source.ServerName()), s.as(serveOrigins[2])
	room, head := s.room.ID, s.room.Heads()[0]
	path := func(p ...any) mfed.URLPath { return mfed.URLPath(p) }
	requests := map[string]func(c *mfed.Client, room id.RoomID) error{
		"backfill": func(c *mfed.Client, room id.RoomID) error {
			_, err := c.Backfill(testContext(t), &mfed.ReqBackfill{ServerName: ourServer, RoomID: room, Limit: 10, BackfillFrom: []id.EventID{head}})
			return err
		},
		"get_missing_events": func(c *mfed.Client, room id.RoomID) error {
			_, err := c.GetMissingEvents(testContext(t), &mfed.ReqGetMissingEvents{ServerName: ourServer, RoomID: room,
				EarliestEvents: []id.EventID{s.room.Events[10].ID}, LatestEvents: []id.EventID{head}, Limit: 10})
			return err
		},
		"state_ids": func(c *mfed.Client, room id.RoomID) error {
			_, err := c.GetStateIDs(testContext(t), ourServer, room, head)
			return err
		},
		"state": func(c *mfed.Client, room id.RoomID) error {
			_, err := c.GetState(testContext(t), ourServer, room, head)
			return err
		},
		"event_auth": func(c *mfed.Client, room id.RoomID) error {
			_, err := c.GetEventAuthChain(testContext(t), ourServer, room, head)
			return err
		},
	}
	for name, req := range requests {
		if status, code, msg := refusal(req(stranger, room)); status != http.StatusForbidden || code != "M_FORBIDDEN" || msg != "Host not in room." {
			t.Errorf("%s by a server not in the room: %d %s %q, want 403 M_FORBIDDEN", name, status, code, msg)
		}
		if status, code, _ := refusal(req(member, "!unknown:elsewhere.example")); status != http.StatusForbidden || code != "M_FORBIDDEN" {
			t.Errorf("%s of a room not held: %d %s, want 403 M_FORBIDDEN as for a room the server is not in", name, status, code)
		}
		if err := req(member, room); err != nil {
			t.Errorf("%s by a member: %v", name, err)
		}
	}
	if status, _, _ := refusal(func() error { _, err := s.event(stranger, head); return err }()); status != http.StatusForbidden {
		t.Errorf("/event by a server not in the room: %d, want 403", status)
	}
	if status, code, _ := refusal(func() error { _, err := s.event(member, "$not-held"); return err }()); status != http.StatusNotFound || code != "M_NOT_FOUND" {
		t.Errorf("/event of an event not held: %d %s, want 404 M_NOT_FOUND", status, code)
	}
	malformed := []struct {
		name   string
		method string
		path   mfed.URLPath
		query  url.Values
		body   any
		code   string
	}{
		{"backfill without v", http.MethodGet, path("v1", "backfill", room), url.Values{"limit": {"10"}}, nil, "M_MISSING_PARAM"},
		{"backfill limit not a number", http.MethodGet, path("v1", "backfill", room), url.Values{"v": {string(head)}, "limit": {"ten"}}, nil, "M_INVALID_PARAM"},
		{"backfill limit 0", http.MethodGet, path("v1", "backfill", room), url.Values{"v": {string(head)}, "limit": {"0"}}, nil, "M_INVALID_PARAM"},
		{"state_ids without event_id", http.MethodGet, path("v1", "state_ids", room), nil, nil, "M_MISSING_PARAM"},
		{"state without event_id", http.MethodGet, path("v1", "state", room), nil, nil, "M_MISSING_PARAM"},
		{"get_missing_events limit 0", http.MethodPost, path("v1", "get_missing_events", room), nil,
			json.RawMessage(`{"earliest_events":[],"latest_events":["` + string(head) + `"],"limit":0}`), "M_INVALID_PARAM"},
		{"get_missing_events not an object", http.MethodPost, path("v1", "get_missing_events", room), nil, json.RawMessage(`[1,2]`), "M_BAD_JSON"},
	}
	for _, tc := range malformed {
		status, code, _ := refusal(s.raw(member, tc.method, tc.path, tc.query, tc.body))
		if status != http.StatusBadRequest || code != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, status, code, tc.code)
		}
	}
	// Past the cap, and without a limit, /backfill serves 100.
	for _, q := range []url.Values{{"v": {string(head)}, "limit": {"1000"}}, {"v": {string(head)}}} {
		var resp mfed.RespBackfill
		if _, _, err := member.MakeFullRequest(testContext(t), mfed.RequestParams{ServerName: ourServer, Method: http.MethodGet,
			Path: path("v1", "backfill", room), Query: q, Authenticate: true, ResponseJSON: &resp}); err != nil {
			t.Fatal(err)
		}
		if want := min(len(s.room.Events), federation.BackfillMaxLimit); len(resp.PDUs) != want || resp.Origin != ourServer || resp.OriginServerTS.IsZero() {
			t.Errorf("backfill %v: %d events from %q at %v, want %d from %s", q, len(resp.PDUs), resp.Origin, resp.OriginServerTS, want, ourServer)
		}
	}
	if _, err := member.Version(testContext(t), ourServer); err != nil {
		t.Errorf("/version: %v", err)
	}
	if n := s.served.count(federation.EndpointBackfill, federation.OutcomeForbidden); n != 2 {
		t.Errorf("%d forbidden backfills observed, want 2", n)
	}
	if n := s.served.count(federation.EndpointEvent, federation.OutcomeNotFound); n != 1 {
		t.Errorf("%d /event not found observed, want 1", n)
	}
}

// In a room whose history is visible to joined members only, a server is served in full
// what its users were joined for, and redacted (still verifiable) what they were not; a
// server whose users all left is refused until one joins again; a server joined throughout
// sees everything.
func TestServeJoinedHistoryVisibility(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 114, Events: 40, Linear: true, JoinRate: 1e-9})
	a := newRoomAuthor(t, s.room)
	creator := a.creator()
	leaver := serveOrigins[1]
	var leaverUsers []id.UserID
	for user := range a.members {
		if user.Homeserver() == leaver {
			leaverUsers = append(leaverUsers, user)
		}
	}
	if len(leaverUsers) == 0 {
		t.Fatalf("no user of %s in the room", leaver)
	}
	slices.Sort(leaverUsers)
	msg := func(body string) authored {
		return a.next(creator, "m.room.message", nil, `{"msgtype":"m.text","body":"`+body+`"}`)
	}
	// hidden are the events a server of leaver may not see in full.
	hidden := map[id.EventID]bool{}
	before := []authored{
		a.next(creator, "m.room.history_visibility", ptrTo(""), `{"history_visibility":"joined"}`),
		msg("for the members"),
	}
	for i, u := range leaverUsers {
		leave := a.next(u, "m.room.member", ptrTo(string(u)), `{"membership":"leave"}`)
		before = append(before, leave)
		if i == len(leaverUsers)-1 {
			hidden[leave.ID] = true // after the last leave no user of the server is joined
		}
	}
	gone := []authored{msg("while they were away"), msg("still away")}
	for _, e := range gone {
		hidden[e.ID] = true
	}
	s.push(append(before, gone...)...)

	leaverClient := s.as(leaver)
	if status, _, _ := refusal(func() error { _, err := s.event(leaverClient, before[1].ID); return err }()); status != http.StatusForbidden {
		t.Fatalf("a server whose users all left: %d, want 403", status)
	}
	back := a.next(leaverUsers[0], "m.room.member", ptrTo(string(leaverUsers[0])), `{"membership":"join"}`)
	after := msg("welcome back")
	s.push(back, after)

	authoredJSON := map[id.EventID][]byte{}
	for _, e := range append(append(before, gone...), back, after) {
		authoredJSON[e.ID] = e.JSON
	}
	check := func(server string, hides map[id.EventID]bool) {
		c := s.as(server)
		// The room is linear and shorter than a page: one page holds it all.
		pdus, err := s.backfill(c, []id.EventID{after.ID}, 100)
		if err != nil {
			t.Fatalf("%s: %v", server, err)
		}
		if len(pdus) != len(s.room.Events)+len(authoredJSON) {
			t.Fatalf("%s: %d events served, want %d", server, len(pdus), len(s.room.Events)+len(authoredJSON))
		}
		redacted := 0
		for _, raw := range pdus {
			evID := eventIDOf(t, s.room.Version, raw)
			full := authoredJSON[evID]
			if full == nil {
				full = s.room.Get(evID).JSON
			}
			want := full
			if hides[evID] {
				want = redactedForm(t, s.room.Version, full)
				redacted++
			}
			if !bytes.Equal(raw, want) {
				t.Errorf("%s: %s served %s, want it %s", server, evID, map[bool]string{true: "wrongly", false: "redacted or changed"}[bytes.Equal(raw, full)],
					map[bool]string{true: "redacted", false: "in full"}[hides[evID]])
			}
			if err := verifiesAsSigned(t, s.room.Version, raw); err != nil {
				t.Errorf("%s: %s as served does not verify: %v", server, evID, err)
			}
		}
		t.Logf("%s: %d events, %d redacted", server, len(pdus), redacted)
		for evID := range hides {
			raw, err := s.event(c, evID)
			if err != nil || !bytes.Equal(raw, redactedForm(t, s.room.Version, authoredJSON[evID])) {
				t.Errorf("%s: /event %s not served redacted (%v)", server, evID, err)
			}
		}
	}
	check(leaver, hidden)
	check(serveOrigins[0], nil)
}

// Events that break the authorization rules are never served as valid: /backfill and
// /get_missing_events go through them to their prev events without serving them, /event
// answers 404, and state answers hold none. The state served is the room's state before the
// event, as the DAG defines it, with its auth chain; /event_auth is an event's auth chain.
func TestServeRejectedEventsAndState(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 115, Events: 250, UnauthorizedRate: 0.08, RenameRate: 0.02})
	if len(s.room.Unauthorized) < 5 {
		t.Fatalf("only %d unauthorized events", len(s.room.Unauthorized))
	}
	member := s.as(serveOrigins[0])
	// Paged as a recovering server does: from the prevs it lacks, each asked once; a
	// rejected one, asked for, is walked through and not served.
	served, asked := map[id.EventID]bool{}, map[id.EventID]bool{}
	for from := s.room.Heads(); len(from) > 0; {
		for _, evID := range from {
			asked[evID] = true
		}
		page, err := s.backfill(member, from, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page {
			served[eventIDOf(t, s.room.Version, raw)] = true
		}
		from = from[:0]
		for evID := range served {
			for _, p := range s.room.Get(evID).Prev {
				if !served[p] && !asked[p] && !slices.Contains(from, p) {
					from = append(from, p)
				}
			}
		}
		slices.Sort(from)
	}
	for evID := range s.room.Unauthorized {
		if served[evID] {
			t.Errorf("rejected event %s served by /backfill", evID)
		}
		if status, code, _ := refusal(func() error { _, err := s.event(member, evID); return err }()); status != http.StatusNotFound || code != "M_NOT_FOUND" {
			t.Errorf("/event of rejected %s: %d %s, want 404", evID, status, code)
		}
	}
	if want := len(s.room.Events) - len(s.room.Unauthorized); len(served) != want {
		t.Errorf("backfill served %d events, want the %d accepted", len(served), want)
	}
	gme, err := s.missingEvents(member, []id.EventID{s.room.Events[0].ID}, s.room.Heads(), 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range gme {
		if evID := eventIDOf(t, s.room.Version, raw); s.room.Unauthorized[evID] != "" {
			t.Errorf("rejected event %s served by /get_missing_events", evID)
		}
	}

	// State at a sample of events, against the fixture's own computation.
	for i := 5; i < len(s.room.Events); i += 23 {
		ev := s.room.Events[i]
		if _, rejected := s.room.Unauthorized[ev.ID]; rejected {
			continue
		}
		wantState, wantChain := s.room.StateBefore(ev.ID)
		ids, err := member.GetStateIDs(testContext(t), ourServer, s.room.ID, ev.ID)
		if err != nil {
			t.Fatalf("state_ids at %s: %v", ev.ID, err)
		}
		if !sameSet(ids.PDUs, wantState) || !sameSet(ids.AuthChain, wantChain) {
			t.Errorf("state_ids at event %d: %d state events and %d in the auth chain, want %d and %d",
				i, len(ids.PDUs), len(ids.AuthChain), len(wantState), len(wantChain))
		}
		for _, evID := range append(slices.Clone(ids.PDUs), ids.AuthChain...) {
			if s.room.Unauthorized[evID] != "" {
				t.Errorf("state_ids at %s lists rejected %s", ev.ID, evID)
			}
		}
		full, err := member.GetState(testContext(t), ourServer, s.room.ID, ev.ID)
		if err != nil {
			t.Fatalf("state at %s: %v", ev.ID, err)
		}
		if got := rawIDs(t, s, full.PDUs); !slices.Equal(got, ids.PDUs) {
			t.Errorf("state at event %d: PDUs %v, want those of state_ids %v", i, got, ids.PDUs)
		}
		if got := rawIDs(t, s, full.AuthChain); !slices.Equal(got, ids.AuthChain) {
			t.Errorf("state at event %d: auth chain differs from state_ids'", i)
		}
		auth, err := member.GetEventAuthChain(testContext(t), ourServer, s.room.ID, ev.ID)
		if err != nil {
			t.Fatalf("event_auth of %s: %v", ev.ID, err)
		}
		if got, want := rawIDs(t, s, auth.AuthChain), authChainOf(s.room, ev.ID); !sameSet(got, want) {
			t.Errorf("event_auth of event %d: %v, want %v", i, got, want)
		}
	}
}

func sameSet(a, b []id.EventID) bool {
	return len(a) == len(b) && len(a) == len(slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...)))))
}

func rawIDs(t *testing.T, s *replicaSetup, pdus []json.RawMessage) []id.EventID {
	out := make([]id.EventID, len(pdus))
	for i, raw := range pdus {
		out[i] = eventIDOf(t, s.room.Version, raw)
		if !bytes.Equal(raw, s.room.Get(out[i]).JSON) {
			t.Errorf("%s is not served as signed", out[i])
		}
	}
	return out
}

// authChainOf is the fixture room's auth chain of one event.
func authChainOf(room *fixturepeer.Room, evID id.EventID) []id.EventID {
	seen := map[id.EventID]bool{}
	queue := slices.Clone(room.Get(evID).Auth)
	var out []id.EventID
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		if seen[e] {
			continue
		}
		seen[e] = true
		out = append(out, e)
		queue = append(queue, room.Get(e).Auth...)
	}
	return out
}

// A server the room's m.room.server_acl denies is refused by every endpoint, though its users
// are joined; the others are served as before.
func TestServeServerACL(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 116, Events: 50})
	a := newRoomAuthor(t, s.room)
	denied, allowed := serveOrigins[2], serveOrigins[1]
	deniedClient := s.as(denied)
	if _, err := s.event(deniedClient, s.room.Heads()[0]); err != nil {
		t.Fatalf("before the ACL: %v", err)
	}
	acl := a.next(a.creator(), "m.room.server_acl", ptrTo(""), `{"allow":["*"],"deny":["127.0.0.3"],"allow_ip_literals":true}`)
	s.push(acl)

	head := acl.ID
	calls := map[string]func(c *mfed.Client) error{
		"backfill": func(c *mfed.Client) error { _, err := s.backfill(c, []id.EventID{head}, 10); return err },
		"get_missing_events": func(c *mfed.Client) error {
			_, err := s.missingEvents(c, []id.EventID{s.room.Events[20].ID}, []id.EventID{head}, 10, 0)
			return err
		},
		"event": func(c *mfed.Client) error { _, err := s.event(c, head); return err },
		"state_ids": func(c *mfed.Client) error {
			_, err := c.GetStateIDs(testContext(t), ourServer, s.room.ID, head)
			return err
		},
		"state": func(c *mfed.Client) error {
			_, err := c.GetState(testContext(t), ourServer, s.room.ID, head)
			return err
		},
		"event_auth": func(c *mfed.Client) error {
			_, err := c.GetEventAuthChain(testContext(t), ourServer, s.room.ID, head)
			return err
		},
	}
	for name, call := range calls {
		if status, code, msg := refusal(call(deniedClient)); status != http.StatusForbidden || code != "M_FORBIDDEN" || !strings.Contains(msg, "banned") {
			t.Errorf("%s by a denied server: %d %s %q, want 403 M_FORBIDDEN", name, status, code, msg)
		}
		if err := call(s.as(allowed)); err != nil {
			t.Errorf("%s by an allowed server: %v", name, err)
		}
	}
}

// An event whose state is not computed (a prev event is missing) is judged on the nearest
// states before it: in full where they show it, redacted where there is none (its only prev
// is missing), since then nothing says the server may see it.
func TestServeEventsWithoutState(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 117, Events: 30, Linear: true})
	a := newRoomAuthor(t, s.room)
	creator := a.creator()
	head := s.room.Heads()[0]
	ghost := a.write(creator, "m.room.message", nil, `{"msgtype":"m.text","body":"never pushed"}`, []id.EventID{head})
	orphan := a.write(creator, "m.room.message", nil, `{"msgtype":"m.text","body":"after the ghost"}`, []id.EventID{ghost.ID})
	merge := a.write(creator, "m.room.message", nil, `{"msgtype":"m.text","body":"after the head and the ghost"}`, []id.EventID{head, ghost.ID})
	s.push(orphan, merge)

	member := s.as(serveOrigins[0])
	for _, tc := range []struct {
		ev   authored
		want []byte
	}{
		{orphan, redactedForm(t, s.room.Version, orphan.JSON)},
		{merge, merge.JSON},
	} {
		raw, err := s.event(member, tc.ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, tc.want) {
			t.Errorf("%s served as %s, want %s", tc.ev.ID, raw, tc.want)
		}
	}
	if _, err := member.GetStateIDs(testContext(t), ourServer, s.room.ID, merge.ID); err == nil {
		t.Error("state_ids at an event whose state is not computed answered")
	}
}

// Served PDUs are the stored bytes, canonical JSON as signed, whatever they hold (encoding/json
// would escape <, > and &); a store that fails is a plain 500 that says nothing of the store.
func TestServeAnswersAsStored(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 118, Events: 20, Linear: true})
	a := newRoomAuthor(t, s.room)
	html := a.next(a.creator(), "m.room.message", nil, `{"body":"<b>bold</b> & \"quoted\" é ☃","format":"org.matrix.custom.html","msgtype":"m.text"}`)
	s.push(html)
	if !bytes.Contains(html.JSON, []byte("<b>")) {
		t.Fatalf("the canonical JSON escapes <: %s", html.JSON)
	}
	member := s.as(serveOrigins[0])
	raw, err := s.event(member, html.ID)
	if err != nil || !bytes.Equal(raw, html.JSON) {
		t.Fatalf("/event served %s (%v), want %s", raw, err, html.JSON)
	}
	page, err := s.backfill(member, []id.EventID{html.ID}, 5)
	if err != nil || len(page) == 0 || !bytes.Equal(page[0], html.JSON) {
		t.Fatalf("/backfill served %d events (%v), the first not as stored", len(page), err)
	}

	if err := s.h.store.Close(); err != nil {
		t.Fatal(err)
	}
	status, code, msg := refusal(func() error { _, err := s.event(member, html.ID); return err }())
	if status != http.StatusInternalServerError || code != "M_UNKNOWN" || strings.Contains(msg, "sql") {
		t.Errorf("with the store closed: %d %s %q, want 500 M_UNKNOWN without the store's words", status, code, msg)
	}
	if n := s.served.count(federation.EndpointEvent, federation.OutcomeServerError); n != 1 {
		t.Errorf("%d server errors observed, want 1", n)
	}
}

// In room version 12 the room ID names the create event, which events leave out of their
// auth events: it is in every auth chain served all the same, since nothing is authorized
// without it.
func TestServeRoomVersion12AuthChains(t *testing.T) {
	s := newReplicaSetup(t, fixturepeer.RoomOptions{Seed: 119, Events: 60, Version: id.RoomV12, RenameRate: 0.05})
	member := s.as(serveOrigins[0])
	create := s.room.Create().ID
	for _, ev := range []*fixturepeer.Event{s.room.Events[10], s.room.Events[40], s.room.Events[59]} {
		wantState, wantChain := s.room.StateBefore(ev.ID)
		ids, err := member.GetStateIDs(testContext(t), ourServer, s.room.ID, ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSet(ids.PDUs, wantState) || !sameSet(ids.AuthChain, append(slices.DeleteFunc(wantChain, func(e id.EventID) bool { return e == create }), create)) {
			t.Errorf("state_ids at %s: %v and %v, want %v and %v with the create event", ev.ID, ids.PDUs, ids.AuthChain, wantState, wantChain)
		}
		auth, err := member.GetEventAuthChain(testContext(t), ourServer, s.room.ID, ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := rawIDs(t, s, auth.AuthChain); !slices.Contains(got, create) || !sameSet(got, append(slices.DeleteFunc(authChainOf(s.room, ev.ID), func(e id.EventID) bool { return e == create }), create)) {
			t.Errorf("event_auth of %s: %v, want its auth chain with the create event", ev.ID, got)
		}
	}
}

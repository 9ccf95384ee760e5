package fixturepeer

import (
	"bytes"
	"cmp"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// forbidden fails t unless err is Synapse's 403 for a server that is not in the room.
func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	code, status := respErr(t, err)
	var he mautrix.HTTPError
	if status != 403 || code != "M_FORBIDDEN" || !errors.As(err, &he) || he.RespError == nil || he.RespError.Err != ErrHostNotInRoom {
		t.Errorf("%s: %d %s (%v); want 403 M_FORBIDDEN %q", what, status, code, err, ErrHostNotInRoom)
	}
}

func TestMembersOnly(t *testing.T) {
	r := linear()
	p := StartSynapseLike(t, r)
	c := client(t, p)
	e := func(i int) id.EventID { return r.Events[i].ID }
	head := r.Heads()[0]

	// A server that is not in the room gets nothing of its history.
	_, err := backfill(t, c, p, r.ID, 10, head)
	forbidden(t, "backfill", err)
	_, err = gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 20, 0)
	forbidden(t, "get_missing_events", err)
	_, err = c.GetEvent(ctx(t), p.ServerName(), e(42))
	forbidden(t, "event", err)
	_, err = backfill(t, c, p, "!nope:origin-a.invalid", 10, head)
	forbidden(t, "backfill of an unknown room", err)
	_, err = c.GetEvent(ctx(t), p.ServerName(), "$nope")
	if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
		t.Errorf("unknown event: %d %s", status, code)
	}
	// make_join and timestamp_to_event answer anyone, as Synapse.
	if _, err := c.MakeJoin(ctx(t), &federation.ReqMakeJoin{
		RoomID: r.ID, UserID: id.NewUserID("roomsync", ourName), Via: p.ServerName(), SupportedVersions: []id.RoomVersion{r.Version},
	}); err != nil {
		t.Errorf("make_join: %v", err)
	}
	if _, err := c.TimestampToEvent(ctx(t), p.ServerName(), r.ID, time.Now(), mautrix.DirectionBackward); err != nil {
		t.Errorf("timestamp_to_event: %v", err)
	}
	if !p.MembersOnly() || p.Joined(ourName) || len(p.JoinedServers()) != 0 {
		t.Fatalf("members only %v, joined %v", p.MembersOnly(), p.JoinedServers())
	}

	// A member is served as by any peer, except that min_depth is ignored (Synapse never
	// passes it on).
	p.SetJoined(ourName, true)
	if !p.Joined(ourName) || !slices.Equal(p.JoinedServers(), []string{ourName}) {
		t.Fatalf("joined %v", p.JoinedServers())
	}
	if got := ids(t, r, must(backfill(t, c, p, r.ID, 10, head))); len(got) != 10 || got[0] != head {
		t.Errorf("member backfill: %v", got)
	}
	got := ids(t, r, must(gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 50, int(r.Events[95].Depth))))
	var want []id.EventID
	for i := 80; i < 100; i++ {
		want = append(want, e(i))
	}
	if !slices.Equal(got, want) {
		t.Errorf("member gme with min_depth: %d events, want the cap of 20 from 80", len(got))
	}
	if resp, err := c.GetEvent(ctx(t), p.ServerName(), e(42)); err != nil || string(resp.PDUs[0]) != string(r.Events[42].JSON) {
		t.Errorf("member event: %v", err)
	}
	// Membership is per server.
	other := NewClient("other.invalid", nil, p)
	t.Cleanup(other.HTTP.CloseIdleConnections)
	_, err = backfill(t, other, p, r.ID, 10, head)
	forbidden(t, "another server's backfill", err)

	// Leaving shuts the door again; turning members-only off opens it to all.
	p.SetJoined(ourName, false)
	_, err = backfill(t, c, p, r.ID, 10, head)
	forbidden(t, "backfill after leaving", err)
	p.SetMembersOnly(false)
	if _, err := backfill(t, other, p, r.ID, 10, head); err != nil {
		t.Errorf("members-only off: %v", err)
	}

	// WithJoined, and membership per room.
	fr := forked()
	q := Start(t, r, WithMembersOnly(), WithJoined(ourName), WithRoom(fr, nil))
	cq := client(t, q)
	if _, err := backfill(t, cq, q, r.ID, 10, head); err != nil {
		t.Errorf("WithJoined: %v", err)
	}
	_, err = backfill(t, cq, q, fr.ID, 10, fr.Heads()...)
	forbidden(t, "second room", err)
	if err := q.SetRoomJoined(fr.ID, ourName, true); err != nil || !q.JoinedRoom(fr.ID, ourName) {
		t.Fatalf("SetRoomJoined: %v", err)
	}
	if _, err := backfill(t, cq, q, fr.ID, 10, fr.Heads()...); err != nil {
		t.Errorf("second room after joining: %v", err)
	}
	if q.SetRoomJoined("!nope:x.invalid", ourName, true) == nil || q.JoinedRoom("!nope:x.invalid", ourName) {
		t.Error("joined a room the peer does not serve")
	}
}

// joinTemplate asks p for a join template for @roomsync:<ourName>.
func joinTemplate(t *testing.T, c *federation.Client, p *Peer, r *Room) json.RawMessage {
	t.Helper()
	resp, err := c.MakeJoin(ctx(t), &federation.ReqMakeJoin{
		RoomID: r.ID, UserID: id.NewUserID("roomsync", ourName), Via: p.ServerName(),
		SupportedVersions: []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV10, id.RoomV11, id.RoomV12},
	})
	if err != nil || resp.RoomVersion != r.Version {
		t.Fatalf("make_join: %+v, %v", resp, err)
	}
	return resp.Event
}

// signJoin fills a make_join template as a joining server does: change (room v3 and later),
// origin_server_ts, content hash, signature by ourName with key, event ID (minted by the
// joiner in room versions 1 and 2, computed later). It returns the join's JSON and ID.
func signJoin(t *testing.T, tmpl json.RawMessage, v id.RoomVersion, key *federation.SigningKey, change func(*pdu.PDU)) (json.RawMessage, id.EventID) {
	t.Helper()
	var e pdu.AnyPDU
	if v.EventIDFormat() == id.EventIDFormatCustom {
		v1 := new(pdu.RoomV1PDU)
		if err := jsonv2.Unmarshal(tmpl, v1); err != nil {
			t.Fatal(err)
		}
		v1.EventID = id.EventID("$join" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":" + ourName)
		v1.OriginServerTS = time.Now().UnixMilli()
		e = v1
	} else {
		v3 := new(pdu.PDU)
		if err := jsonv2.Unmarshal(tmpl, v3); err != nil {
			t.Fatal(err)
		}
		if change != nil {
			change(v3)
		}
		v3.OriginServerTS = time.Now().UnixMilli()
		e = v3
	}
	if err := e.FillContentHash(); err != nil {
		t.Fatal(err)
	}
	if err := e.Sign(v, ourName, key.ID, key.Priv); err != nil {
		t.Fatal(err)
	}
	evID, err := e.GetEventID(v)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := canonicaljson.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return raw, evID
}

func sendJoin(t *testing.T, c *federation.Client, p *Peer, roomID id.RoomID, evID id.EventID, raw json.RawMessage) (*federation.RespSendJoin, error) {
	t.Helper()
	return c.SendJoin(ctx(t), &federation.ReqSendJoin{RoomID: roomID, EventID: evID, Event: raw, Via: p.ServerName()})
}

// servedIDs maps served PDUs to the room's events they are, byte for byte.
func servedIDs(t *testing.T, r *Room, pdus []json.RawMessage) EventSet {
	t.Helper()
	byJSON := make(map[string]id.EventID, len(r.Events))
	for _, e := range r.Events {
		byJSON[string(e.JSON)] = e.ID
	}
	out := make(EventSet, len(pdus))
	for i, raw := range pdus {
		evID, ok := byJSON[string(raw)]
		if !ok {
			t.Fatalf("PDU %d is not an event of the room as generated", i)
		}
		out[evID] = struct{}{}
	}
	if len(out) != len(pdus) {
		t.Errorf("%d PDUs, %d distinct", len(pdus), len(out))
	}
	return out
}

// currentState is the newest event for each (type, state_key), computed from the end.
func currentState(r *Room) EventSet {
	seen := make(map[[2]string]bool)
	out := make(EventSet)
	for i := len(r.Events) - 1; i >= 0; i-- {
		e := r.Events[i]
		if e.StateKey == nil || seen[[2]string{e.Type, *e.StateKey}] {
			continue
		}
		seen[[2]string{e.Type, *e.StateKey}] = true
		out[e.ID] = struct{}{}
	}
	return out
}

func TestSendJoin(t *testing.T) {
	for _, v := range []id.RoomVersion{id.RoomV2, id.RoomV11, id.RoomV12} {
		t.Run("v"+string(v), func(t *testing.T) {
			r := MustGenerate(t, RoomOptions{Seed: 13, Events: 300, Version: v, RenameRate: 0.05, Heads: 2})
			key := federation.GenerateSigningKey()
			p := StartSynapseLike(t, r, WithJoinKey(ourName, key.ID, key.Pub))
			c := NewClient(ourName, key, p)
			t.Cleanup(c.HTTP.CloseIdleConnections)
			head := r.Heads()[0]
			_, err := backfill(t, c, p, r.ID, 10, head)
			forbidden(t, "backfill before joining", err)

			raw, evID := signJoin(t, joinTemplate(t, c, p, r), v, key, nil)
			resp, err := sendJoin(t, c, p, r.ID, evID, raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(resp.Event, raw) || resp.MembersOmitted {
				t.Errorf("event %s, members omitted %v", resp.Event, resp.MembersOmitted)
			}
			state, chain := servedIDs(t, r, resp.State), servedIDs(t, r, resp.AuthChain)
			if v != id.RoomV2 { // check parses room v3+ PDUs only
				ids(t, r, resp.State)
				ids(t, r, resp.AuthChain)
			}
			compareSets(t, "state", state, currentState(r))
			types := make(map[string]bool)
			for e := range state {
				types[r.Get(e).Type] = true
			}
			for _, typ := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.member"} {
				if !types[typ] {
					t.Errorf("no %s in the state", typ)
				}
			}
			// The auth chain is every auth ancestor of the state that is not in it.
			want := make(EventSet)
			queue := state.Sorted()
			for n := 0; len(queue) > 0 && n < len(r.Events)*4; n++ {
				e := queue[0]
				queue = queue[1:]
				for _, a := range r.Get(e).Auth {
					if !want.Holds(a) && !state.Holds(a) {
						want[a] = struct{}{}
						queue = append(queue, a)
					}
				}
			}
			compareSets(t, "auth chain", chain, want)
			if len(chain) == 0 {
				t.Error("empty auth chain: no superseded state in the room")
			}
			servers := slices.Sorted(slices.Values(append(r.Origins(), ourName)))
			if !slices.Equal(resp.ServersInRoom, servers) {
				t.Errorf("servers in room %v, want %v", resp.ServersInRoom, servers)
			}

			// The joiner is served history now; the join itself is recorded, never served.
			if !p.Joined(ourName) {
				t.Fatal("not joined")
			}
			if got := servedIDs(t, r, must(backfill(t, c, p, r.ID, 10, head))); len(got) != 10 {
				t.Errorf("backfill after joining: %d events", len(got))
			}
			if _, err := gme(t, c, p, r.ID, nil, []id.EventID{head}, 5, 0); err != nil {
				t.Errorf("gme after joining: %v", err)
			}
			_, err = c.GetEvent(ctx(t), p.ServerName(), evID)
			if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" || p.Holds(evID) {
				t.Errorf("the join served back: %d %s", status, code)
			}
			if p.Count(EndpointSendJoin) != 1 {
				t.Errorf("counts %v", p.Counts())
			}
		})
	}
}

func TestSendJoinRefusals(t *testing.T) {
	r := MustGenerate(t, RoomOptions{Seed: 14, Events: 200, Heads: 2})
	key := federation.GenerateSigningKey()
	p := StartSynapseLike(t, r, WithJoinKey(ourName, key.ID, key.Pub))
	c := NewClient(ourName, key, p)
	t.Cleanup(c.HTTP.CloseIdleConnections)
	tmpl := joinTemplate(t, c, p, r)
	badKey := *federation.GenerateSigningKey()
	badKey.ID = key.ID // the right key ID, the wrong key
	otherUser := id.NewUserID("roomsync", "other.invalid")
	for _, tc := range []struct {
		name   string
		change func(*pdu.PDU)
		signer *federation.SigningKey
		pathID id.EventID // "" is the join's ID
		roomID id.RoomID  // "" is the room's
		body   string     // "" is the join
		status int
		code   string
	}{
		{name: "sender on another server", change: func(e *pdu.PDU) { e.Sender, e.StateKey = otherUser, ptr(string(otherUser)) }, status: 403, code: "M_FORBIDDEN"},
		{name: "state_key is not the sender", change: func(e *pdu.PDU) { e.StateKey = ptr("@someone:" + ourName) }, status: 400, code: "M_BAD_JSON"},
		{name: "event ID mismatch", pathID: r.Events[10].ID, status: 400, code: "M_BAD_JSON"},
		{name: "not a join", change: func(e *pdu.PDU) { e.Content = jsontext.Value(`{"membership":"leave"}`) }, status: 400, code: "M_BAD_JSON"},
		{name: "not a member event", change: func(e *pdu.PDU) { e.Type, e.StateKey = "m.room.message", nil }, status: 400, code: "M_BAD_JSON"},
		{name: "another room's event", change: func(e *pdu.PDU) { e.RoomID = "!other:origin-a.invalid" }, status: 400, code: "M_BAD_JSON"},
		{name: "unknown prev event", change: func(e *pdu.PDU) { e.PrevEvents = append(e.PrevEvents, "$unknown") }, status: 403, code: "M_FORBIDDEN"},
		{name: "no prev events", change: func(e *pdu.PDU) { e.PrevEvents = []id.EventID{} }, status: 403, code: "M_FORBIDDEN"},
		{name: "unknown auth event", change: func(e *pdu.PDU) { e.AuthEvents = append(e.AuthEvents, "$unknown") }, status: 403, code: "M_FORBIDDEN"},
		{name: "bad signature", signer: &badKey, status: 403, code: "M_FORBIDDEN"},
		{name: "unknown key", signer: federation.GenerateSigningKey(), status: 403, code: "M_FORBIDDEN"},
		{name: "not a PDU", body: `{"type":5}`, pathID: "$x", status: 400, code: "M_BAD_JSON"},
		{name: "unknown room", roomID: "!nope:origin-a.invalid", status: 404, code: "M_NOT_FOUND"},
	} {
		signer := cmp.Or(tc.signer, key)
		raw, evID := signJoin(t, tmpl, r.Version, signer, tc.change)
		if tc.body != "" {
			raw = json.RawMessage(tc.body)
		}
		if tc.pathID != "" {
			evID = tc.pathID
		}
		roomID := r.ID
		if tc.roomID != "" {
			roomID = tc.roomID
		}
		_, err := sendJoin(t, c, p, roomID, evID, raw)
		if code, status := respErr(t, err); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	if p.Joined(ourName) || p.Joined("other.invalid") {
		t.Errorf("joined after refusals: %v", p.JoinedServers())
	}
	if p.Count(EndpointSendJoin) != 13 {
		t.Errorf("send_join count %d", p.Count(EndpointSendJoin))
	}
	// The template itself, well signed, is accepted.
	raw, evID := signJoin(t, tmpl, r.Version, key, nil)
	if _, err := sendJoin(t, c, p, r.ID, evID, raw); err != nil || !p.Joined(ourName) {
		t.Errorf("valid join after refusals: %v", err)
	}

	// Without a way to get keys, signatures are not checked.
	open := StartSynapseLike(t, r)
	co := NewClient(ourName, key, open)
	t.Cleanup(co.HTTP.CloseIdleConnections)
	raw, evID = signJoin(t, tmpl, r.Version, &badKey, nil)
	if _, err := sendJoin(t, co, open, r.ID, evID, raw); err != nil || !open.Joined(ourName) {
		t.Errorf("badly signed join without keys: %v", err)
	}
	// WithJoinKeys is asked for keys WithJoinKey does not have.
	asked := 0
	byFunc := StartSynapseLike(t, r, WithJoinKeys(func(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		asked++
		if server == ourName && keyID == key.ID {
			return key.Pub, time.Now().Add(time.Hour), nil
		}
		return "", time.Time{}, nil
	}))
	cf := NewClient(ourName, key, byFunc)
	t.Cleanup(cf.HTTP.CloseIdleConnections)
	raw, evID = signJoin(t, tmpl, r.Version, &badKey, nil)
	_, err := sendJoin(t, cf, byFunc, r.ID, evID, raw)
	if code, status := respErr(t, err); status != 403 || code != "M_FORBIDDEN" {
		t.Errorf("bad signature, key from WithJoinKeys: %d %s", status, code)
	}
	raw, evID = signJoin(t, tmpl, r.Version, key, nil)
	if _, err := sendJoin(t, cf, byFunc, r.ID, evID, raw); err != nil || !byFunc.Joined(ourName) || asked != 2 {
		t.Errorf("key from WithJoinKeys: %v (asked %d times)", err, asked)
	}
}

func TestSendJoinFaultsAndLies(t *testing.T) {
	r := linear()
	p := StartSynapseLike(t, r)
	c := client(t, p)
	key := federation.GenerateSigningKey()
	raw, evID := signJoin(t, joinTemplate(t, c, p, r), r.Version, key, nil)

	p.AddFault(Fault{Kind: FaultError, Endpoint: EndpointSendJoin, Status: 503, Times: 1})
	_, err := sendJoin(t, c, p, r.ID, evID, raw)
	if _, status := respErr(t, err); status != 503 || p.Joined(ourName) {
		t.Errorf("fault: %d, joined %v", status, p.Joined(ourName))
	}
	p.AddFault(Fault{Kind: FaultManyPDUs, Endpoint: EndpointSendJoin, Count: 1000, Times: 1})
	if resp, err := sendJoin(t, c, p, r.ID, evID, raw); err != nil || len(resp.State) != 1000 {
		t.Errorf("many PDUs: %v", err)
	}

	create := r.Create().ID
	p.SetLies(Lie{Kind: LieBadSignature, Events: []id.EventID{create}})
	resp, err := sendJoin(t, c, p, r.ID, evID, raw)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, raw := range resp.State {
		if got := check(r, raw); !got.valid() {
			bad++
			if got.id != create || !got.hashOK || got.sigErr == nil {
				t.Errorf("lied-about event %+v", got)
			}
		}
	}
	if bad != 1 || !p.Joined(ourName) {
		t.Errorf("%d badly signed state events, want the create event only", bad)
	}
}

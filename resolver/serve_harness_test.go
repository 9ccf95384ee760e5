package resolver_test

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
)

// serveOrigins are the origins of the rooms the serving tests replicate: IP literals on
// closed ports, as fixturepeer.DefaultOrigins, but on distinct addresses, so that a server
// ACL (which ignores ports) can tell them apart.
var serveOrigins = []string{"127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"}

// replicaSetup is a room synced from a fixture peer into a store, and our listener serving
// that store's history. The room's origins are requesters too: a fixture peer for each signs
// requests as that origin, so they are servers in the room; the peer the room came from is
// a server that is not.
type replicaSetup struct {
	t      *testing.T
	h      *harness
	room   *fixturepeer.Room
	source *fixturepeer.Peer
	addr   string
	served *servedRecorder
	peers  map[string]*fixturepeer.Peer
}

func newReplicaSetup(t *testing.T, opts fixturepeer.RoomOptions) *replicaSetup {
	t.Helper()
	if opts.Origins == nil {
		opts.Origins = serveOrigins
	}
	room := fixturepeer.MustGenerate(t, opts)
	source := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{source})
	h.res.SetRooms([]string{string(room.ID)})
	results := h.syncUntilDone(20)
	if last := results[len(results)-1]; !last.Converged {
		t.Fatalf("the room did not converge: %+v", last)
	}
	s := &replicaSetup{t: t, h: h, room: room, source: source, served: &servedRecorder{}, peers: map[string]*fixturepeer.Peer{}}
	endpoints := map[string]federation.Endpoint{}
	add := func(p *fixturepeer.Peer) {
		ep, err := federation.ParseEndpoint(p.URL(), true)
		if err != nil {
			t.Fatal(err)
		}
		endpoints[p.ServerName()] = ep
		s.peers[p.ServerName()] = p
	}
	add(source)
	for _, o := range room.Origins() {
		add(fixturepeer.Start(t, room, fixturepeer.WithServerName(o), fixturepeer.WithSigningKey(fixturepeer.OriginKey(o))))
	}
	client, err := federation.NewClient(federation.Options{ServerName: ourServer, Key: mfed.GenerateSigningKey(),
		Endpoints: endpoints, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)

	srv := federation.NewServer()
	// The tests ask more than a real server would in a second.
	srv.OriginRate, srv.OriginBurst = 10000, 10000
	srv.HandleKeys(ourServer, mfed.GenerateSigningKey(), "test")
	srv.RequireAuth(ourServer, federation.NewKeyRing(client, federation.StaticNotaries()))
	srv.HandleHistory(ourServer, resolver.NewReplica(resolver.ReplicaConfig{Store: h.store, Log: testLogger(t)}), s.served)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	s.addr = ln.Addr().String()
	return s
}

// as is a client that signs requests as server (one of the room's origins, or the source).
func (s *replicaSetup) as(server string) *mfed.Client {
	s.t.Helper()
	p, ok := s.peers[server]
	if !ok {
		s.t.Fatalf("no requester %s", server)
	}
	return p.Pusher(s.addr, nil)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *replicaSetup) backfill(c *mfed.Client, from []id.EventID, limit int) ([]json.RawMessage, error) {
	resp, err := c.Backfill(testContext(s.t), &mfed.ReqBackfill{ServerName: ourServer, RoomID: s.room.ID, Limit: limit, BackfillFrom: from})
	if err != nil {
		return nil, err
	}
	return resp.PDUs, nil
}

func (s *replicaSetup) missingEvents(c *mfed.Client, earliest, latest []id.EventID, limit, minDepth int) ([]json.RawMessage, error) {
	resp, err := c.GetMissingEvents(testContext(s.t), &mfed.ReqGetMissingEvents{ServerName: ourServer, RoomID: s.room.ID,
		EarliestEvents: earliest, LatestEvents: latest, Limit: limit, MinDepth: minDepth})
	if err != nil {
		return nil, err
	}
	return resp.Events, nil
}

func (s *replicaSetup) event(c *mfed.Client, eventID id.EventID) (json.RawMessage, error) {
	resp, err := c.GetEvent(testContext(s.t), ourServer, eventID)
	if err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		s.t.Fatalf("/event %s answered %d PDUs", eventID, len(resp.PDUs))
	}
	return resp.PDUs[0], nil
}

// raw makes a request with query parameters of its own, for the malformed ones the mautrix
// client would not send.
func (s *replicaSetup) raw(c *mfed.Client, method string, path mfed.URLPath, query url.Values, body any) error {
	_, _, err := c.MakeFullRequest(testContext(s.t), mfed.RequestParams{ServerName: ourServer, Method: method, Path: path,
		Query: query, Authenticate: true, RequestJSON: body})
	return err
}

// refusal is the status and errcode of a request's error (0 and "" when it succeeded).
func refusal(err error) (int, string, string) {
	if err == nil {
		return 0, "", ""
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code, msg := "", ""
		if httpErr.RespError != nil {
			code, msg = httpErr.RespError.ErrCode, httpErr.RespError.Err
		}
		return httpErr.Response.StatusCode, code, msg
	}
	return -1, err.Error(), ""
}

// eventIDOf computes a served PDU's event ID.
func eventIDOf(t *testing.T, version id.RoomVersion, raw []byte) id.EventID {
	t.Helper()
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		t.Fatalf("served PDU does not parse: %v", err)
	}
	evID, err := p.GetEventID(version)
	if err != nil {
		t.Fatal(err)
	}
	return evID
}

// redactedForm is the canonical redacted form of a PDU, as a server that may not see it
// should get it.
func redactedForm(t *testing.T, version id.RoomVersion, raw []byte) []byte {
	t.Helper()
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	out, err := canonicaljson.Marshal(p.Redact(version))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verifiesAsSigned checks a served PDU's signature by its origin's key.
func verifiesAsSigned(t *testing.T, version id.RoomVersion, raw []byte) error {
	t.Helper()
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return err
	}
	origin := p.Sender.Homeserver()
	key := fixturepeer.OriginKey(origin)
	return p.VerifySignature(version, origin, func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return key.Pub, time.Now().Add(time.Hour), nil
	})
}

// ancestors is the set of events reachable from ids through prev_events in the fixture
// room, ids included.
func ancestors(room *fixturepeer.Room, ids ...id.EventID) map[id.EventID]bool {
	seen := map[id.EventID]bool{}
	queue := slices.Clone(ids)
	for len(queue) > 0 {
		e := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[e] || !room.Has(e) {
			continue
		}
		seen[e] = true
		queue = append(queue, room.Get(e).Prev...)
	}
	return seen
}

// servedRecorder is a federation.ServeObserver that counts outcomes and events by endpoint.
type servedRecorder struct {
	mu       sync.Mutex
	outcomes map[string]map[federation.Outcome]int
	events   map[string]int
}

func (r *servedRecorder) Served(endpoint string, outcome federation.Outcome, events int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outcomes == nil {
		r.outcomes, r.events = map[string]map[federation.Outcome]int{}, map[string]int{}
	}
	if r.outcomes[endpoint] == nil {
		r.outcomes[endpoint] = map[federation.Outcome]int{}
	}
	r.outcomes[endpoint][outcome]++
	r.events[endpoint] += events
}

func (r *servedRecorder) count(endpoint string, outcome federation.Outcome) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outcomes[endpoint][outcome]
}

// roomAuthor writes events the generator does not make (history visibility changes, server
// ACLs, leaves and joins) on top of a fixture room, signed with its origins' keys as the
// room's users would send them, to push to the resolver as live events.
type roomAuthor struct {
	t       *testing.T
	room    *fixturepeer.Room
	heads   []id.EventID
	depths  map[id.EventID]int64
	ts      int64
	create  id.EventID
	power   id.EventID
	rules   id.EventID
	members map[id.UserID]id.EventID
}

// authored is an event a roomAuthor wrote.
type authored struct {
	ID   id.EventID
	JSON json.RawMessage
}

func newRoomAuthor(t *testing.T, room *fixturepeer.Room) *roomAuthor {
	a := &roomAuthor{t: t, room: room, heads: room.Heads(), depths: map[id.EventID]int64{},
		create: room.Create().ID, members: map[id.UserID]id.EventID{}}
	for _, e := range room.Events {
		a.depths[e.ID] = e.Depth
		a.ts = max(a.ts, e.TS)
		if _, rejected := room.Unauthorized[e.ID]; rejected {
			continue
		}
		switch e.Type {
		case "m.room.member":
			a.members[id.UserID(*e.StateKey)] = e.ID
		case "m.room.power_levels":
			a.power = e.ID
		case "m.room.join_rules":
			a.rules = e.ID
		}
	}
	return a
}

// creator is the room's creator, who has power 100.
func (a *roomAuthor) creator() id.UserID { return a.room.Create().Sender }

// next writes an event on top of the heads, which it then replaces.
func (a *roomAuthor) next(sender id.UserID, typ string, stateKey *string, content string) authored {
	ev := a.write(sender, typ, stateKey, content, a.heads)
	a.heads = []id.EventID{ev.ID}
	return ev
}

// write makes an event with the given prev events, leaving the heads as they are.
func (a *roomAuthor) write(sender id.UserID, typ string, stateKey *string, content string, prevs []id.EventID) authored {
	a.t.Helper()
	v := a.room.Version
	var auth []id.EventID
	if !v.RoomIDIsCreateEventID() {
		auth = append(auth, a.create)
	}
	auth = append(auth, a.power)
	if m, ok := a.members[sender]; ok {
		auth = append(auth, m)
	}
	// The auth events selection: join rules only for joins and invites.
	if m := gjson.Get(content, "membership").Str; typ == "m.room.member" && (m == "join" || m == "invite") {
		auth = append(auth, a.rules)
	}
	var depth int64
	for _, p := range prevs {
		depth = max(depth, a.depths[p])
	}
	a.ts++
	p := &pdu.PDU{AuthEvents: auth, Content: jsontext.Value(content), Depth: depth + 1, OriginServerTS: a.ts,
		PrevEvents: prevs, RoomID: a.room.ID, Sender: sender, StateKey: stateKey, Type: typ}
	if err := p.FillContentHash(); err != nil {
		a.t.Fatal(err)
	}
	origin := sender.Homeserver()
	key := fixturepeer.OriginKey(origin)
	if err := p.Sign(v, origin, key.ID, key.Priv); err != nil {
		a.t.Fatal(err)
	}
	evID, err := p.GetEventID(v)
	if err != nil {
		a.t.Fatal(err)
	}
	raw, err := canonicaljson.Marshal(p)
	if err != nil {
		a.t.Fatal(err)
	}
	a.depths[evID] = depth + 1
	if typ == "m.room.member" {
		a.members[id.UserID(*stateKey)] = evID
	}
	return authored{ID: evID, JSON: raw}
}

// push hands events to the resolver as a transaction from the source peer, and checks each
// was taken.
func (s *replicaSetup) push(events ...authored) {
	s.t.Helper()
	raws := make([]json.RawMessage, len(events))
	for i, e := range events {
		raws[i] = e.JSON
	}
	results, _ := s.h.receiveRaw(s.source.ServerName(), raws...)
	for _, e := range events {
		if errText := results[string(e.ID)]; errText != "" {
			s.t.Fatalf("pushed event %s refused: %s", e.ID, errText)
		}
	}
}

func ptrTo(s string) *string { return &s }

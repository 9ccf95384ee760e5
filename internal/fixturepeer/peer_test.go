package fixturepeer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

const ourName = "tester.invalid"

var forked = sync.OnceValue(func() *Room {
	r, err := Generate(RoomOptions{Seed: 11, Events: 1200, ForkRate: 0.1, Heads: 2})
	if err != nil {
		panic(err)
	}
	return r
})

var linear = sync.OnceValue(func() *Room {
	r, err := Generate(RoomOptions{Seed: 12, Events: 300, Linear: true})
	if err != nil {
		panic(err)
	}
	return r
})

func client(t *testing.T, peers ...*Peer) *federation.Client {
	t.Helper()
	c := NewClient(ourName, nil, peers...)
	c.ResponseSizeLimit = 4 << 20
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// respErr returns the Matrix error of err and the HTTP status.
func respErr(t *testing.T, err error) (string, int) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("want an HTTP error, got %v", err)
	}
	if he.RespError == nil {
		return "", he.Response.StatusCode
	}
	return he.RespError.ErrCode, he.Response.StatusCode
}

func backfill(t *testing.T, c *federation.Client, p *Peer, roomID id.RoomID, limit int, v ...id.EventID) ([]json.RawMessage, error) {
	t.Helper()
	resp, err := c.Backfill(ctx(t), &federation.ReqBackfill{ServerName: p.ServerName(), RoomID: roomID, Limit: limit, BackfillFrom: v})
	if err != nil {
		return nil, err
	}
	if resp.Origin != p.ServerName() {
		t.Errorf("backfill origin %q", resp.Origin)
	}
	return resp.PDUs, nil
}

func gme(t *testing.T, c *federation.Client, p *Peer, roomID id.RoomID, earliest, latest []id.EventID, limit, minDepth int) ([]json.RawMessage, error) {
	t.Helper()
	resp, err := c.GetMissingEvents(ctx(t), &federation.ReqGetMissingEvents{
		ServerName: p.ServerName(), RoomID: roomID, EarliestEvents: earliest, LatestEvents: latest, Limit: limit, MinDepth: minDepth,
	})
	if err != nil {
		return nil, err
	}
	return resp.Events, nil
}

// ids verifies every PDU and returns their IDs in answer order.
func ids(t *testing.T, r *Room, pdus []json.RawMessage) []id.EventID {
	t.Helper()
	out := make([]id.EventID, len(pdus))
	for i, raw := range pdus {
		c := check(r, raw)
		if !c.valid() || c.roomID != r.ID || !r.Has(c.id) {
			t.Fatalf("PDU %d does not verify: %+v", i, c)
		}
		out[i] = c.id
	}
	return out
}

func ancestors(r *Room, from id.EventID) EventSet {
	set, _ := Closure(r, []id.EventID{from}, r.IDSet())
	return set
}

func TestKeysAndVersion(t *testing.T) {
	r := forked()
	p := Start(t, r)
	c := client(t, p)
	if !strings.HasPrefix(p.URL(), "https://127.0.0.1:") || p.ServerName() != strings.TrimPrefix(p.URL(), "https://") {
		t.Errorf("name %q, URL %q", p.ServerName(), p.URL())
	}
	v, err := c.Version(ctx(t), p.ServerName())
	if err != nil || v.Server.Name != "roomsync-fixturepeer" {
		t.Fatalf("version %+v, %v", v, err)
	}
	own, err := c.ServerKeys(ctx(t), p.ServerName())
	if err != nil || own.ServerName != p.ServerName() || !own.HasKey(p.Key().ID) || own.VerifySelfSignature() != nil {
		t.Fatalf("own key %+v, %v", own, err)
	}

	notarised := func(keys []*federation.ServerKeyResponse, origin string) {
		t.Helper()
		if len(keys) != 1 {
			t.Fatalf("%d key responses for %s", len(keys), origin)
		}
		k := keys[0]
		if k.ServerName != origin || !k.HasKey(OriginKey(origin).ID) || k.VerifyKeys[OriginKey(origin).ID].Key != OriginKey(origin).Pub {
			t.Errorf("key response %+v", k)
		}
		if err := k.VerifySelfSignature(); err != nil {
			t.Errorf("self-signature: %v", err)
		}
		if err := signutil.VerifyJSON(p.ServerName(), p.Key().ID, p.Key().Pub, k.Raw); err != nil {
			t.Errorf("notary signature: %v", err)
		}
		if k.ValidUntilTS.Before(time.Now().Add(time.Hour)) {
			t.Errorf("valid until %v", k.ValidUntilTS)
		}
	}
	for _, origin := range DefaultOrigins {
		resp, err := c.QueryKeys(ctx(t), p.ServerName(), &federation.ReqQueryKeys{
			ServerKeys: map[string]map[id.KeyID]federation.QueryKeysCriteria{origin: {}},
		})
		if err != nil {
			t.Fatal(err)
		}
		notarised(resp.ServerKeys, origin)

		var get federation.QueryKeysResponse
		_, _, err = c.MakeFullRequest(ctx(t), federation.RequestParams{
			ServerName: p.ServerName(), Method: http.MethodGet, Path: federation.KeyURLPath{"v2", "query", origin}, ResponseJSON: &get,
		})
		if err != nil {
			t.Fatal(err)
		}
		notarised(get.ServerKeys, origin)
	}
	resp, err := c.QueryKeys(ctx(t), p.ServerName(), &federation.ReqQueryKeys{
		ServerKeys: map[string]map[id.KeyID]federation.QueryKeysCriteria{
			"unknown.invalid":   {},
			"origin-a.invalid":  {"ed25519:nope": {}},
			DefaultOrigins[1]:   {OriginKey(DefaultOrigins[1]).ID: {}},
			"origin-z.invalid:": {},
		},
	})
	if err != nil || len(resp.ServerKeys) != 1 || resp.ServerKeys[0].ServerName != DefaultOrigins[1] {
		t.Errorf("mixed query: %+v, %v", resp, err)
	}
}

func TestAuthentication(t *testing.T) {
	r := linear()
	p := Start(t, r)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	t.Cleanup(hc.CloseIdleConnections)
	u := p.URL() + "/_matrix/federation/v1/backfill/" + url.PathEscape(string(r.ID)) + "?limit=5&v=" + url.QueryEscape(string(r.Heads()[0]))
	for name, auth := range map[string]string{
		"none":              "",
		"bearer":            "Bearer abc",
		"wrong destination": `X-Matrix origin="a.invalid",destination="elsewhere.invalid",key="ed25519:k",sig="c2ln"`,
		"no destination":    `X-Matrix origin="a.invalid",key="ed25519:k",sig="c2ln"`,
		"no sig":            `X-Matrix origin="a.invalid",destination="` + p.ServerName() + `",key="ed25519:k"`,
		"ok":                `X-Matrix origin="a.invalid",destination="` + p.ServerName() + `",key="ed25519:k",sig="c2ln"`,
	} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if name == "ok" {
			if resp.StatusCode != http.StatusOK || len(body["pdus"].([]any)) != 5 {
				t.Errorf("%s: %d %v", name, resp.StatusCode, body)
			}
		} else if resp.StatusCode != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" {
			t.Errorf("%s: %d %v", name, resp.StatusCode, body)
		}
	}
	// Key and version endpoints need no authentication; unknown endpoints are M_UNRECOGNIZED.
	for path, want := range map[string]int{
		"/_matrix/key/v2/server": 200, "/_matrix/federation/v1/version": 200, "/_matrix/federation/v1/nope": 404,
	} {
		resp, err := hc.Get(p.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	if p.Count(EndpointBackfill) != 6 || p.Count(EndpointOther) != 1 {
		t.Errorf("counts %v", p.Counts())
	}
}

func TestBackfill(t *testing.T) {
	r := forked()
	p := Start(t, r)
	c := client(t, p)
	head := r.Heads()[0]

	got := ids(t, r, must(backfill(t, c, p, r.ID, 50, head)))
	if len(got) != 50 || got[0] != head {
		t.Fatalf("%d events, first %s", len(got), got[0])
	}
	anc := ancestors(r, head)
	seen := EventSet{}
	var minDepth int64 = 1 << 62
	for i, e := range got {
		if seen.Holds(e) || !anc.Holds(e) {
			t.Fatalf("event %d %s duplicate or not an ancestor of v", i, e)
		}
		seen[e] = struct{}{}
		if i > 0 && r.Get(e).Depth > r.Get(got[i-1]).Depth {
			t.Errorf("event %d deeper than the one before", i)
		}
		minDepth = min(minDepth, r.Get(e).Depth)
	}
	for e := range anc { // every ancestor deeper than the page's floor is in the page
		if r.Get(e).Depth > minDepth && !seen.Holds(e) {
			t.Errorf("ancestor %s at depth %d left out", e, r.Get(e).Depth)
		}
	}

	// Several v, overlapping: de-duplicated, all v included.
	heads := r.Heads()
	got = ids(t, r, must(backfill(t, c, p, r.ID, 30, heads[0], heads[1], heads[0])))
	if len(got) != 30 || !slices.Contains(got, heads[0]) || !slices.Contains(got, heads[1]) || len(slices.Compact(slices.Sorted(slices.Values(got)))) != 30 {
		t.Errorf("two heads: %d events", len(got))
	}

	// The cap.
	if got := must(backfill(t, c, p, r.ID, 1000, head)); len(got) != DefaultBackfillCap {
		t.Errorf("limit 1000: %d events, want the cap %d", len(got), DefaultBackfillCap)
	}
	capped := Start(t, r, WithBackfillCap(7))
	c2 := client(t, capped)
	if got := must(backfill(t, c2, capped, r.ID, 100, head)); len(got) != 7 {
		t.Errorf("cap 7: %d events", len(got))
	}
	// Near the start: fewer events than asked.
	if got := ids(t, r, must(backfill(t, c, p, r.ID, 100, r.Events[3].ID))); len(got) != 4 || got[3] != r.Create().ID {
		t.Errorf("from event 3: %v", got)
	}
	// Unknown room; unknown v.
	_, err := backfill(t, c, p, "!nope:origin-a.invalid", 10, head)
	if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
		t.Errorf("unknown room: %d %s", status, code)
	}
	if got := must(backfill(t, c, p, r.ID, 10, "$unknown")); len(got) != 0 {
		t.Errorf("unknown v: %d events", len(got))
	}

	// A subset: the walk stops at events the peer lacks.
	mid := r.Events[600]
	sub := Start(t, r, WithHold(HoldAllBut(mid.ID).And(HoldDepths(mid.Depth-20, 1<<40))))
	c3 := client(t, sub)
	if got := must(backfill(t, c3, sub, r.ID, 10, mid.ID)); len(got) != 0 {
		t.Errorf("v not held: %d events", len(got))
	}
	got = ids(t, r, must(backfill(t, c3, sub, r.ID, 100, head)))
	for _, e := range got {
		if !sub.Holds(e) || e == mid.ID {
			t.Errorf("served %s, which the peer does not hold", e)
		}
	}
	if len(got) != 100 {
		t.Errorf("subset from head: %d events", len(got))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestMissingEvents(t *testing.T) {
	r := linear()
	p := Start(t, r)
	c := client(t, p)
	e := func(i int) id.EventID { return r.Events[i].ID }
	rng := func(from, to int) []id.EventID {
		var out []id.EventID
		for i := from; i < to; i++ {
			out = append(out, e(i))
		}
		return out
	}

	got := ids(t, r, must(gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 15, 0)))
	if !slices.Equal(got, rng(85, 100)) {
		t.Errorf("limit 15: %v", got)
	}
	got = ids(t, r, must(gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 500, 0)))
	if !slices.Equal(got, rng(80, 100)) {
		t.Errorf("limit 500: %d events, want the cap of 20", len(got))
	}
	got = ids(t, r, must(gme(t, c, p, r.ID, []id.EventID{e(90)}, []id.EventID{e(100)}, 50, 0)))
	if !slices.Equal(got, rng(91, 100)) {
		t.Errorf("stops at earliest: %v", got)
	}
	got = ids(t, r, must(gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 50, int(r.Events[95].Depth))))
	if !slices.Equal(got, rng(95, 100)) {
		t.Errorf("min_depth: %v", got)
	}
	big := Start(t, r, WithMissingEventsCap(1000))
	c2 := client(t, big)
	got = ids(t, r, must(gme(t, c2, big, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 1000, 0)))
	if !slices.Equal(got, rng(51, 100)) {
		t.Errorf("cap 1000: %d events", len(got))
	}
	// Without limit, the spec's default of 10 (mautrix leaves a zero limit out).
	if got := must(gme(t, c, p, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 0, 0)); len(got) != 10 {
		t.Errorf("no limit: %d events", len(got))
	}
	// Holes: the walk stops at events the peer lacks.
	holey := Start(t, r, WithHold(HoldAllBut(e(95))))
	c3 := client(t, holey)
	got = ids(t, r, must(gme(t, c3, holey, r.ID, []id.EventID{e(50)}, []id.EventID{e(100)}, 20, 0)))
	if !slices.Equal(got, rng(96, 100)) {
		t.Errorf("hole at 95: %v", got)
	}
	// Unknown room.
	_, err := gme(t, c, p, "!nope:origin-a.invalid", nil, []id.EventID{e(100)}, 10, 0)
	if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
		t.Errorf("unknown room: %d %s", status, code)
	}
	// Without Content-Type: 400 M_NOT_JSON, as Dendrite.
	bare := NewClient(ourName, nil, p)
	bare.HTTP.Transport.(*Transport).NoContentType = true
	_, err = gme(t, bare, p, r.ID, nil, []id.EventID{e(100)}, 10, 0)
	if code, status := respErr(t, err); status != 400 || code != "M_NOT_JSON" {
		t.Errorf("no Content-Type: %d %s", status, code)
	}
	log := p.RequestLog()
	last := log[len(log)-1]
	if last.Endpoint != EndpointMissingEvents || last.ContentType != "" || last.Status != 400 || !strings.Contains(string(last.Body), `"limit":10`) || last.Origin != ourName {
		t.Errorf("last request %+v", last)
	}

	// A forked DAG: only ancestors of latest, oldest first, none of earliest's ancestors.
	fr := forked()
	fp := Start(t, fr)
	c4 := client(t, fp)
	latest, earliest := fr.Heads()[0], fr.Events[len(fr.Events)-15].ID
	got = ids(t, fr, must(gme(t, c4, fp, fr.ID, []id.EventID{earliest}, []id.EventID{latest}, 20, 0)))
	// Reachable from latest's prev_events without passing through earliest.
	others := fr.IDSet()
	delete(others, earliest)
	avoiding, _ := Closure(fr, fr.Get(latest).Prev, others)
	if len(got) == 0 || len(got) != min(20, len(avoiding)) {
		t.Fatalf("%d events, %d reachable without passing earliest", len(got), len(avoiding))
	}
	for i, id := range got {
		if !avoiding.Holds(id) {
			t.Errorf("event %s is not reachable from latest without passing earliest", id)
		}
		if i > 0 && fr.Get(id).Depth < fr.Get(got[i-1]).Depth {
			t.Errorf("not oldest first at %d", i)
		}
	}
}

func TestEvent(t *testing.T) {
	r := forked()
	p := Start(t, r, WithHold(HoldIndexes(0, 100)))
	c := client(t, p)
	resp, err := c.GetEvent(ctx(t), p.ServerName(), r.Events[42].ID)
	if err != nil || len(resp.PDUs) != 1 || string(resp.PDUs[0]) != string(r.Events[42].JSON) || resp.Origin != p.ServerName() {
		t.Fatalf("event: %+v, %v", resp, err)
	}
	for _, missing := range []id.EventID{r.Events[100].ID, "$nope"} {
		_, err = c.GetEvent(ctx(t), p.ServerName(), missing)
		if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
			t.Errorf("%s: %d %s", missing, status, code)
		}
	}
	// Changing the hold while running.
	p.SetHold(nil)
	if _, err := c.GetEvent(ctx(t), p.ServerName(), r.Events[100].ID); err != nil {
		t.Errorf("after SetHold(all): %v", err)
	}
}

func TestTimestampToEvent(t *testing.T) {
	r := forked()
	p := Start(t, r, WithHold(HoldIndexes(0, 700)))
	c := client(t, p)
	tte := func(ts int64, dir mautrix.Direction) (id.EventID, error) {
		resp, err := c.TimestampToEvent(ctx(t), p.ServerName(), r.ID, time.UnixMilli(ts), dir)
		if err != nil {
			return "", err
		}
		if resp.Timestamp.UnixMilli() != r.Get(resp.EventID).TS {
			t.Errorf("timestamp %v for %s", resp.Timestamp, resp.EventID)
		}
		return resp.EventID, nil
	}
	now := time.Now().UnixMilli()
	for _, tc := range []struct {
		ts   int64
		dir  mautrix.Direction
		want id.EventID
	}{
		{now, mautrix.DirectionBackward, r.Events[699].ID},
		{r.Events[300].TS, mautrix.DirectionBackward, r.Events[300].ID},
		{r.Events[300].TS - 1, mautrix.DirectionBackward, r.Events[299].ID},
		{r.Events[300].TS + 1, mautrix.DirectionForward, r.Events[301].ID},
		{0, mautrix.DirectionForward, r.Events[0].ID},
	} {
		if got, err := tte(tc.ts, tc.dir); err != nil || got != tc.want {
			t.Errorf("ts %d dir %c: %s, %v; want %s", tc.ts, tc.dir, got, err, tc.want)
		}
	}
	if p.Latest() != r.Events[699].ID {
		t.Errorf("Latest %s", p.Latest())
	}
	_, err := tte(now, mautrix.DirectionForward)
	if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
		t.Errorf("nothing after now: %d %s", status, code)
	}
	p.SetTimestampToEvent(false)
	_, err = tte(now, mautrix.DirectionBackward)
	if code, status := respErr(t, err); status != 404 || code != "M_UNRECOGNIZED" {
		t.Errorf("switched off: %d %s", status, code)
	}
	d := Start(t, r, WithoutTimestampToEvent())
	_, err = client(t, d).TimestampToEvent(ctx(t), d.ServerName(), r.ID, time.Now(), mautrix.DirectionBackward)
	if code, status := respErr(t, err); status != 404 || code != "M_UNRECOGNIZED" {
		t.Errorf("Dendrite mode: %d %s", status, code)
	}
}

func TestMakeJoin(t *testing.T) {
	r := forked()
	p := Start(t, r)
	c := client(t, p)
	user := id.NewUserID("roomsync", ourName)
	resp, err := c.MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: r.ID, UserID: user, Via: p.ServerName(), SupportedVersions: []id.RoomVersion{"10", "11", "12"}})
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Type, StateKey, Sender, RoomID string
		Content                        map[string]any
		Depth                          int64
		Prev                           []id.EventID `json:"prev_events"`
		Auth                           []id.EventID `json:"auth_events"`
	}
	if err := json.Unmarshal(resp.Event, &tmpl); err != nil {
		t.Fatal(err)
	}
	heads := slices.Sorted(slices.Values(r.Heads()))
	if resp.RoomVersion != r.Version || !slices.Equal(slices.Sorted(slices.Values(tmpl.Prev)), heads) || len(heads) < 2 ||
		tmpl.Type != "m.room.member" || tmpl.Content["membership"] != "join" || len(tmpl.Auth) != 3 {
		t.Errorf("template %s %+v; heads %v", resp.RoomVersion, tmpl, heads)
	}
	// A peer holding a prefix: its own forward extremities.
	pre := Start(t, r, WithHold(HoldIndexes(0, 500)))
	held := pre.HeldIDs()
	var want []id.EventID
	for e := range held {
		referenced := false
		for _, x := range r.Events[:500] {
			referenced = referenced || slices.Contains(x.Prev, e)
		}
		if !referenced {
			want = append(want, e)
		}
	}
	resp, err = client(t, pre).MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: r.ID, UserID: user, Via: pre.ServerName(), SupportedVersions: []id.RoomVersion{r.Version}})
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(resp.Event, &tmpl)
	if !slices.Equal(slices.Sorted(slices.Values(tmpl.Prev)), slices.Sorted(slices.Values(want))) || !slices.Equal(slices.Sorted(slices.Values(pre.Heads())), slices.Sorted(slices.Values(want))) {
		t.Errorf("prefix: prev_events %v, want %v", tmpl.Prev, want)
	}
	// Errors.
	_, err = c.MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: r.ID, UserID: user, Via: p.ServerName(), SupportedVersions: []id.RoomVersion{"9"}})
	if code, status := respErr(t, err); status != 400 || code != "M_INCOMPATIBLE_ROOM_VERSION" {
		t.Errorf("unsupported version: %d %s", status, code)
	}
	_, err = c.MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: r.ID, UserID: "@x:elsewhere.invalid", Via: p.ServerName(), SupportedVersions: []id.RoomVersion{r.Version}})
	if code, status := respErr(t, err); status != 403 || code != "M_FORBIDDEN" {
		t.Errorf("other server's user: %d %s", status, code)
	}
	_, err = c.MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: "!nope:x.invalid", UserID: user, Via: p.ServerName(), SupportedVersions: []id.RoomVersion{r.Version}})
	if code, status := respErr(t, err); status != 404 || code != "M_NOT_FOUND" {
		t.Errorf("unknown room: %d %s", status, code)
	}
}

func TestFaults(t *testing.T) {
	r := linear()
	p := Start(t, r, WithHangLimit(3*time.Second))
	c := client(t, p)
	head := r.Heads()[0]
	ok := func(what string) {
		t.Helper()
		if _, err := backfill(t, c, p, r.ID, 5, head); err != nil {
			t.Errorf("%s: backfill: %v", what, err)
		}
	}

	p.SetFaults(Fault{Kind: FaultError})
	for _, err := range []error{
		errOf(c.Version(ctx(t), p.ServerName())),
		errOf(c.GetEvent(ctx(t), p.ServerName(), head)),
		errOf(backfill(t, c, p, r.ID, 5, head)),
	} {
		if code, status := respErr(t, err); status != 500 || code != "M_UNKNOWN" {
			t.Errorf("500 everywhere: %d %s", status, code)
		}
	}
	p.ClearFaults()
	ok("cleared")

	p.SetFaults(Fault{Kind: FaultError, Endpoint: EndpointBackfill, Status: 403, ErrCode: "M_FORBIDDEN"})
	if code, status := respErr(t, errOf(backfill(t, c, p, r.ID, 5, head))); status != 403 || code != "M_FORBIDDEN" {
		t.Errorf("403 on backfill: %d %s", status, code)
	}
	if _, err := c.GetEvent(ctx(t), p.ServerName(), head); err != nil {
		t.Errorf("event during a backfill fault: %v", err)
	}

	p.SetFaults(Fault{Kind: FaultRateLimit, Endpoint: EndpointBackfill, Times: 2, RetryAfter: 1500 * time.Millisecond})
	for i := range 2 {
		var he mautrix.HTTPError
		err := errOf(backfill(t, c, p, r.ID, 5, head))
		if !errors.As(err, &he) || he.RespError == nil || he.RespError.ErrCode != "M_LIMIT_EXCEEDED" ||
			he.RespError.ExtraData["retry_after_ms"] != float64(1500) || he.Response.Header.Get("Retry-After") != "2" {
			t.Errorf("429 #%d: %v", i, err)
		}
	}
	ok("after 2 rate-limited requests")

	p.SetFaults(Fault{Kind: FaultHang, Endpoint: EndpointBackfill})
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	_, err := c.Backfill(short, &federation.ReqBackfill{ServerName: p.ServerName(), RoomID: r.ID, Limit: 5, BackfillFrom: []id.EventID{head}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("hang: %v after %v", err, time.Since(start))
	}
	p.SetFaults(Fault{Kind: FaultHang, HangFor: 50 * time.Millisecond})
	if _, status := respErr(t, errOf(c.Version(ctx(t), p.ServerName()))); status != 504 {
		t.Errorf("bounded hang: %d", status)
	}

	p.SetFaults(Fault{Kind: FaultTruncate, Endpoint: EndpointBackfill})
	if err := errOf(backfill(t, c, p, r.ID, 5, head)); err == nil || !strings.Contains(err.Error(), "unmarshal") {
		t.Errorf("truncated: %v", err)
	}

	p.SetFaults(Fault{Kind: FaultHugeBody, Times: 1})
	if err := errOf(backfill(t, c, p, r.ID, 5, head)); !errors.Is(err, mautrix.ErrBodyReadReachedLimit) {
		t.Errorf("huge chunked body: %v", err)
	}
	p.SetFaults(Fault{Kind: FaultHugeBody, DeclareLength: true, Times: 1})
	if err := errOf(backfill(t, c, p, r.ID, 5, head)); !errors.Is(err, mautrix.ErrResponseTooLong) {
		t.Errorf("huge declared body: %v", err)
	}
	p.SetFaults(Fault{Kind: FaultHugeBody, Size: 3 << 20, Times: 1})
	if resp, err := backfill(t, c, p, r.ID, 5, head); err != nil || len(resp) != 0 {
		t.Errorf("3 MiB body under a 4 MiB limit: %d PDUs, %v", len(resp), err)
	}

	// (net/http retries a GET once on a reused connection that closes before answering.)
	p.SetFaults(Fault{Kind: FaultDisconnect})
	if err := errOf(backfill(t, c, p, r.ID, 5, head)); err == nil {
		t.Error("disconnect: no error")
	}
	p.ClearFaults()
	ok("after disconnects")

	// Faults change while requests are in flight.
	p.ClearFaults()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var statuses []int
	for range 4 {
		wg.Go(func() {
			for range 25 {
				_, err := backfill(t, c, p, r.ID, 5, head)
				status := 200
				if err != nil {
					_, status = respErr(t, err)
				}
				mu.Lock()
				statuses = append(statuses, status)
				mu.Unlock()
			}
		})
	}
	for i := range 20 {
		if i%2 == 0 {
			p.AddFault(Fault{Kind: FaultError, Endpoint: EndpointBackfill, Times: 3})
		} else {
			p.AddLie(Lie{Kind: LieStripped})
			p.ClearLies()
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	fails := 0
	for _, s := range statuses {
		if s == 500 {
			fails++
		}
	}
	for range 31 { // the faults not used up yet
		if _, err := backfill(t, c, p, r.ID, 5, head); err == nil {
			break
		}
		fails++
	}
	if len(statuses) != 100 || fails != 30 {
		t.Errorf("%d requests, %d failed; want 100 and 30 (10 faults × 3)", len(statuses), fails)
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestLies(t *testing.T) {
	r := forked()
	p := Start(t, r)
	c := client(t, p)
	var msg *Event
	for _, e := range r.Events[len(r.Events)/2:] {
		if e.Type == "m.room.message" {
			msg = e
			break
		}
	}
	get := func() checked {
		t.Helper()
		resp, err := c.GetEvent(ctx(t), p.ServerName(), msg.ID)
		if err != nil || len(resp.PDUs) != 1 {
			t.Fatalf("event: %v", err)
		}
		return check(r, resp.PDUs[0])
	}
	if got := get(); !got.valid() || got.id != msg.ID {
		t.Fatalf("truth: %+v", got)
	}

	p.SetLies(Lie{Kind: LieWrongEvent, Events: []id.EventID{msg.ID}})
	if got := get(); !got.valid() || got.id == msg.ID || !r.Has(got.id) || got.roomID != r.ID {
		t.Errorf("wrong event: %+v", got)
	}
	p.SetLies(Lie{Kind: LieForeignEvent})
	foreign, err := p.ForeignRoom()
	if err != nil {
		t.Fatal(err)
	}
	if got := get(); !got.valid() || got.roomID != foreign.ID || got.roomID == r.ID || !foreign.Has(got.id) {
		t.Errorf("foreign event: %+v", got)
	}
	p.SetLies(Lie{Kind: LieStripped, Events: []id.EventID{msg.ID}})
	if got := get(); got.id != msg.ID || got.hashOK || got.sigErr != nil || string(got.pdu.Content) != "{}" {
		t.Errorf("stripped: %+v", got)
	}
	p.SetLies(Lie{Kind: LieBadSignature})
	if got := get(); got.id != msg.ID || !got.hashOK || got.sigErr == nil {
		t.Errorf("bad signature: %+v", got)
	}
	p.SetLies(Lie{Kind: LieBadEventID})
	if got := get(); got.parseErr != nil || got.id == msg.ID || got.pdu.Depth != msg.Depth+1 {
		t.Errorf("bad event ID: %+v", got)
	}

	// Scoped to one endpoint and one event: backfill lies about msg only.
	p.SetLies(Lie{Kind: LieStripped, Endpoint: EndpointBackfill, Events: []id.EventID{msg.ID}})
	if got := get(); !got.valid() {
		t.Errorf("/event under a backfill-only lie: %+v", got)
	}
	pdus := must(backfill(t, c, p, r.ID, 3, msg.ID))
	for i, raw := range pdus {
		got := check(r, raw)
		if got.hashOK != (i != 0) || got.sigErr != nil {
			t.Errorf("backfill PDU %d: hash ok %v, sig %v", i, got.hashOK, got.sigErr)
		}
	}

	p.SetLies(Lie{Kind: LieExtraForeignEvent})
	pdus = must(backfill(t, c, p, r.ID, 5, msg.ID))
	gmePDUs := must(gme(t, c, p, r.ID, nil, []id.EventID{msg.ID}, 5, 0))
	for _, answer := range [][]json.RawMessage{pdus, gmePDUs} {
		if len(answer) != 6 {
			t.Fatalf("extra foreign: %d PDUs", len(answer))
		}
		ids(t, r, answer[:5])
		if got := check(r, answer[5]); !got.valid() || got.roomID != foreign.ID {
			t.Errorf("extra foreign: %+v", got)
		}
	}
	if got := get(); !got.valid() || got.id != msg.ID {
		t.Errorf("/event under extra-foreign: %+v", got)
	}
}

func TestCounts(t *testing.T) {
	r := linear()
	p := Start(t, r)
	c := client(t, p)
	head := r.Heads()[0]
	for range 3 {
		must(backfill(t, c, p, r.ID, 10, head))
	}
	must(gme(t, c, p, r.ID, nil, []id.EventID{head}, 5, 0))
	must(c.GetEvent(ctx(t), p.ServerName(), head))
	want := map[Endpoint]int64{EndpointBackfill: 3, EndpointMissingEvents: 1, EndpointEvent: 1}
	if got := p.Counts(); len(got) != len(want) || got[EndpointBackfill] != 3 || got[EndpointMissingEvents] != 1 || got[EndpointEvent] != 1 {
		t.Errorf("counts %v, want %v", got, want)
	}
	if p.TotalCount() != 5 || p.PDUsServed() != 36 || len(p.RequestLog()) != 5 {
		t.Errorf("total %d, PDUs %d, log %d", p.TotalCount(), p.PDUsServed(), len(p.RequestLog()))
	}
	p.ResetCounts()
	if p.TotalCount() != 0 || p.PDUsServed() != 0 || len(p.RequestLog()) != 0 {
		t.Error("not reset")
	}
}

func TestMultipleRoomsAndV12(t *testing.T) {
	v12 := MustGenerate(t, RoomOptions{Seed: 5, Events: 200, Version: id.RoomV12})
	v10 := MustGenerate(t, RoomOptions{Seed: 5, Events: 200, Version: id.RoomV10, Origins: []string{"origin-x.invalid", "origin-a.invalid"}})
	p := Start(t, v12, WithRoom(v10, HoldIndexes(0, 100)))
	c := client(t, p)
	got := ids(t, v12, must(backfill(t, c, p, v12.ID, 100, v12.Heads()...)))
	if len(got) != 100 {
		t.Errorf("v12 backfill: %d", len(got))
	}
	got = ids(t, v12, must(backfill(t, c, p, v12.ID, 100, v12.Events[5].ID)))
	if got[len(got)-1] != v12.Create().ID {
		t.Errorf("v12 backfill does not reach the create event")
	}
	got = ids(t, v10, must(backfill(t, c, p, v10.ID, 100, v10.Events[99].ID)))
	if len(got) != 100 || !p.Holds(v10.Events[99].ID) || p.Holds(v10.Events[100].ID) {
		t.Errorf("v10 backfill: %d", len(got))
	}
	if err := p.SetRoomHold(v10.ID, nil); err != nil || !p.Holds(v10.Events[199].ID) {
		t.Errorf("SetRoomHold: %v", err)
	}
	resp, err := c.QueryKeys(ctx(t), p.ServerName(), &federation.ReqQueryKeys{
		ServerKeys: map[string]map[id.KeyID]federation.QueryKeysCriteria{"origin-x.invalid": {}},
	})
	if err != nil || len(resp.ServerKeys) != 1 {
		t.Errorf("second room's origin key: %v", err)
	}
}

// TestSpreadOverThreePeers spreads a forked 5,000-event room over three peers that hold
// overlapping depth ranges, with a hole no peer fills, and syncs it with a naive loop of
// /backfill requests through mautrix's client: what it gets is exactly what Closure (and
// Reachable) say, and the backward extremities it is left with are the gaps.
func TestSpreadOverThreePeers(t *testing.T) {
	r := MustGenerate(t, RoomOptions{Seed: 99, Events: 5000, Heads: 2})
	maxDepth := r.Stats().MaxDepth
	var hole []id.EventID
	for _, e := range r.Events {
		if e.Depth == maxDepth/2 || e.Depth == maxDepth/2+1 {
			hole = append(hole, e.ID)
		}
	}
	noHole := HoldAllBut(hole...)
	a := Start(t, r, WithHold(HoldDepths(0, maxDepth/3).And(noHole)))
	b := Start(t, r, WithHold(HoldDepths(maxDepth/3-50, 2*maxDepth/3).And(noHole)))
	cPeer := Start(t, r, WithHold(HoldDepths(2*maxDepth/3-50, maxDepth).And(noHole)))
	peers := []*Peer{a, b, cPeer}
	c := client(t, peers...)
	if held := HeldBy(peers...); len(held) != len(r.Events)-len(hole) {
		t.Fatalf("peers hold %d of %d events, hole %d", len(held), len(r.Events), len(hole))
	}

	// From every peer's forward extremities (what make_join reveals), peer b's extremity just
	// below the hole included: everything but the hole.
	reached, gaps := Reachable(peers...)
	store, left := naiveSync(t, c, r, peers, append(append(a.Heads(), b.Heads()...), cPeer.Heads()...))
	compareSets(t, "from heads: stored", store, reached)
	compareSets(t, "from heads: backward extremities", left, gaps)
	if len(gaps) == 0 || len(reached) != len(r.Events)-len(hole) {
		t.Errorf("from heads: reached %d, gaps %d", len(reached), len(gaps))
	}

	// From the newest event only (what /timestamp_to_event reveals): the hole cuts the room.
	latest := []id.EventID{cPeer.Latest()}
	reached, gaps = Closure(r, latest, a, b, cPeer)
	store, left = naiveSync(t, c, r, peers, latest)
	compareSets(t, "from latest: stored", store, reached)
	compareSets(t, "from latest: backward extremities", left, gaps)
	if len(gaps) == 0 || len(reached) > len(r.Events)/2+100 || len(reached) < len(r.Events)/3 {
		t.Errorf("from latest: reached %d, gaps %d: the hole should cut the room", len(reached), len(gaps))
	}
	for g := range gaps {
		if !slices.Contains(hole, g) {
			t.Errorf("gap %s is not in the hole", g)
		}
	}
	var requests int64
	for _, p := range peers {
		requests += p.Count(EndpointBackfill)
	}
	t.Logf("%d events over 3 peers: from latest %d reachable, %d gaps; %d backfill requests in all", len(r.Events), len(reached), len(gaps), requests)
}

func compareSets(t *testing.T, what string, got, want EventSet) {
	t.Helper()
	if !slices.Equal(got.Sorted(), want.Sorted()) {
		t.Errorf("%s: %d events, want %d", what, len(got), len(want))
	}
}

// naiveSync fetches start with /event, then backfills every missing prev_event from every
// peer until nothing new comes. It returns what it stored and the prev_events still missing.
func naiveSync(t *testing.T, c *federation.Client, r *Room, peers []*Peer, start []id.EventID) (store, left EventSet) {
	store = EventSet{}
	add := func(pdus []json.RawMessage) int {
		n := 0
		for _, e := range ids(t, r, pdus) {
			if !store.Holds(e) {
				store[e] = struct{}{}
				n++
			}
		}
		return n
	}
	for _, e := range start {
		for _, p := range peers {
			if resp, err := c.GetEvent(ctx(t), p.ServerName(), e); err == nil {
				add(resp.PDUs)
				break
			}
		}
	}
	for round := 0; ; round++ {
		left = EventSet{}
		for e := range store {
			for _, prev := range r.Get(e).Prev {
				if !store.Holds(prev) {
					left[prev] = struct{}{}
				}
			}
		}
		progress := 0
		for _, p := range peers {
			for chunk := range slices.Chunk(left.Sorted(), 20) {
				progress += add(must(backfill(t, c, p, r.ID, 100, chunk...)))
			}
		}
		if progress == 0 {
			return store, left
		}
		if round > 500 {
			t.Fatal("no convergence")
		}
	}
}

// TestOriginNamesFailFast checks the premise of the origin naming scheme on this machine:
// discovery for an origin (127.0.0.1:1, a closed port) fails at once, so a resolver that asks an
// origin directly for its key moves on to the notaries without waiting for a timeout.
func TestOriginNamesFailFast(t *testing.T) {
	c := federation.NewClient(ourName, federation.GenerateSigningKey(), nil, exhttp.ClientSettings{DialTimeout: 5 * time.Second})
	c.AllowIP = func(net.IP) bool { return true }
	short, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.ServerKeys(short, DefaultOrigins[0])
	elapsed := time.Since(start)
	t.Logf("key request to %s: %v after %v", DefaultOrigins[0], err, elapsed)
	if err == nil || elapsed > 3*time.Second {
		t.Errorf("discovery of %s did not fail fast: %v after %v", DefaultOrigins[0], err, elapsed)
	}
}

func TestHostileFaults(t *testing.T) {
	r := linear()
	p := Start(t, r)
	c := client(t, p)
	head := r.Heads()[0]
	user := id.NewUserID("roomsync", ourName)
	makeJoin := func() (*federation.RespMakeJoin, error) {
		return c.MakeJoin(ctx(t), &federation.ReqMakeJoin{RoomID: r.ID, UserID: user, Via: p.ServerName(), SupportedVersions: []id.RoomVersion{r.Version}})
	}
	allEmpty := func(pdus []json.RawMessage) bool {
		return !slices.ContainsFunc(pdus, func(raw json.RawMessage) bool { return string(raw) != "{}" })
	}

	p.SetFaults(Fault{Kind: FaultManyPDUs, Count: 1000})
	if pdus, err := backfill(t, c, p, r.ID, 5, head); err != nil || len(pdus) != 1000 || !allEmpty(pdus) {
		t.Errorf("many PDUs at /backfill: %d PDUs, %v", len(pdus), err)
	}
	if pdus, err := gme(t, c, p, r.ID, nil, []id.EventID{head}, 5, 0); err != nil || len(pdus) != 1000 || !allEmpty(pdus) {
		t.Errorf("many PDUs at /get_missing_events: %d PDUs, %v", len(pdus), err)
	}
	if resp, err := c.GetEvent(ctx(t), p.ServerName(), head); err != nil || len(resp.PDUs) != 1000 {
		t.Errorf("many PDUs at /event: %v", err)
	}
	resp, err := makeJoin()
	if err != nil {
		t.Fatalf("many prev_events at /make_join: %v", err)
	}
	var tmpl struct {
		Prev []string `json:"prev_events"`
	}
	if err := json.Unmarshal(resp.Event, &tmpl); err != nil || resp.RoomVersion != r.Version || len(tmpl.Prev) != 1000 || tmpl.Prev[999] != "$e999" {
		t.Errorf("many prev_events at /make_join: version %s, %d prev_events, %v", resp.RoomVersion, len(tmpl.Prev), err)
	}

	p.SetFaults(Fault{Kind: FaultHugePDU})
	pdus, err := backfill(t, c, p, r.ID, 5, head)
	if err != nil || len(pdus) != 1 || len(pdus[0]) != MaxPDUBytes+1 || !json.Valid(pdus[0]) {
		t.Errorf("huge PDU at /backfill: %d PDUs, %v", len(pdus), err)
	}
	if resp, err := makeJoin(); err != nil || len(resp.Event) != MaxPDUBytes+1 {
		t.Errorf("huge template at /make_join: %v", err)
	}
	p.SetFaults(Fault{Kind: FaultHugePDU, Size: 200, Endpoint: EndpointMissingEvents})
	if pdus, err := gme(t, c, p, r.ID, nil, []id.EventID{head}, 5, 0); err != nil || len(pdus) != 1 || len(pdus[0]) != 200 {
		t.Errorf("200-byte PDU at /get_missing_events: %d PDUs, %v", len(pdus), err)
	}
}

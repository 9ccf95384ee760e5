package resolver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// The listener fuzzes send arbitrary request bodies, path parameters and queries to the
// routes of our federation listener, signed by servers whose keys it can fetch, so that they
// get past X-Matrix to the parsing behind it (FuzzXMatrixAuth in resolver/federation fuzzes
// the requests that do not). Nothing panics, every answer is a JSON object with a status the
// route may give, and what is served or stored is what the room holds.

// FuzzListenerSend pushes transactions (PUT /send/{txnId}) into the resolver as a member
// origin. The store stays consistent whatever arrives.
func FuzzListenerSend(f *testing.F) {
	lf := newListenerFuzz(f)
	evs := lf.room.Events
	pdus := func(from, to int) string {
		var parts []string
		for _, ev := range evs[from:to] {
			parts = append(parts, string(ev.JSON))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	txn := func(pdus, edus string) []byte {
		return []byte(fmt.Sprintf(`{"origin":%q,"origin_server_ts":1704067200000,"pdus":%s,"edus":%s}`, lf.origin(), pdus, edus))
	}
	typing := fmt.Sprintf(`[{"edu_type":"m.typing","content":{"room_id":%q,"user_id":"@a:127.0.0.1:1","typing":true}}]`, lf.room.ID)
	for _, seed := range []struct {
		txnID string
		body  []byte
	}{
		{"1", txn(pdus(listenerHeld, listenerHeld+2), typing)},
		{"2", txn(pdus(listenerRoomEvents-1, listenerRoomEvents), `[]`)},
		{"3", txn(pdus(0, 3), `[{"edu_type":"m.receipt","content":{}}]`)},
		{"4", txn(`[{"room_id":"!other:example.org","type":"m.room.message","sender":"@a:example.org"}]`, `[]`)},
		{"5", txn(`[{"type":"m.room.create","sender":"@a:127.0.0.1:1","content":{"room_version":"12"}}]`, `[]`)},
		{"6", txn(`[`+strings.Repeat(`{},`, 50)+`{}]`, `[]`)},
		{"7", txn(`[]`, `[`+strings.Repeat(`{},`, 100)+`{}]`)},
		{"8", []byte(`{"pdus":null,"edus":null}`)},
		{"9", []byte(`{"pdus":{"a":1}}`)},
		{"10", []byte(`not json`)},
		{"m.txn.%2F", []byte(`{}`)},
		{"", txn(`[]`, `[]`)},
	} {
		f.Add(seed.txnID, seed.body)
	}
	f.Fuzz(func(t *testing.T, txnID string, body []byte) {
		rec, also := lf.request(http.MethodPut, "/_matrix/federation/v1/send/"+url.PathEscape(txnID), body, lf.origin())
		if rec == nil {
			return
		}
		obj := checkAnswer(t, rec, append(also, http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge)...)
		if rec.Code != http.StatusOK {
			return
		}
		var results map[string]struct {
			Error *string `json:"error"`
		}
		if err := json.Unmarshal(obj["pdus"], &results); err != nil {
			t.Fatalf("/send answer's pdus: %v: %s", err, rec.Body.Bytes())
		}
		if err := lf.store.CheckConsistency(context.Background(), string(lf.room.ID)); err != nil {
			t.Fatalf("store inconsistent after a transaction: %v", err)
		}
	})
}

// FuzzListenerInvite sends invites (PUT /v2/invite/{roomId}/{eventId}) as the source peer,
// whose real invite of our user is a seed. An invite we take comes back with our signature.
func FuzzListenerInvite(f *testing.F) {
	lf := newListenerFuzz(f)
	ourUser := id.UserID("@roomsync:" + listenerServer)
	invite, inviteID, err := lf.source.Invite(ourUser)
	if err != nil {
		f.Fatal(err)
	}
	room, version := string(lf.room.ID), string(lf.room.Version)
	body := func(version string, event json.RawMessage) []byte {
		b, _ := json.Marshal(map[string]any{"room_version": version, "event": event, "invite_room_state": []any{}})
		return b
	}
	for _, seed := range []struct {
		roomID, eventID string
		body            []byte
	}{
		{room, string(inviteID), body(version, invite)},
		{room, "$other", body(version, invite)},
		{"!other:example.org", string(inviteID), body(version, invite)},
		{room, string(inviteID), body("1", invite)},
		{room, string(inviteID), body("org.example.custom", invite)},
		{room, string(inviteID), body(version, lf.room.Events[3].JSON)},
		{room, string(inviteID), []byte(`{"room_version":"11"}`)},
		{room, string(inviteID), []byte(`{"event":{},"room_version":""}`)},
		{room, string(inviteID), []byte(`{"event":[],"room_version":"11"}`)},
	} {
		f.Add(seed.roomID, seed.eventID, seed.body)
	}
	f.Fuzz(func(t *testing.T, roomID, eventID string, body []byte) {
		target := "/_matrix/federation/v2/invite/" + url.PathEscape(roomID) + "/" + url.PathEscape(eventID)
		rec, also := lf.request(http.MethodPut, target, body, lf.source.ServerName())
		if rec == nil {
			return
		}
		obj := checkAnswer(t, rec, append(also, http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusRequestEntityTooLarge)...)
		if rec.Code != http.StatusOK {
			return
		}
		var signed pdu.PDU
		if err := json.Unmarshal(obj["event"], &signed); err != nil {
			t.Fatalf("countersigned invite: %v", err)
		}
		for server, key := range map[string]*mfed.SigningKey{listenerServer: lf.ourKey, lf.source.ServerName(): lf.source.Key()} {
			getKey := func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
				return key.Pub, time.Now().Add(time.Hour), nil
			}
			if err := signed.VerifySignature(lf.room.Version, server, getKey); err != nil {
				t.Fatalf("taken invite: signature of %s: %v", server, err)
			}
		}
		if got, _ := signed.GetEventID(lf.room.Version); string(got) != eventID {
			t.Fatalf("took invite %s for the path's %s", got, eventID)
		}
	})
}

// historyRoutes are the history routes the fuzz asks, by the number it picks.
var historyRoutes = []struct {
	method, path string // path with {room} and {event}
	answer       func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage)
}{
	{http.MethodGet, "/_matrix/federation/v1/backfill/{room}", func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage) {
		lf.checkServedPDUs(t, obj["pdus"], 100)
	}},
	{http.MethodPost, "/_matrix/federation/v1/get_missing_events/{room}", func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage) {
		lf.checkServedPDUs(t, obj["events"], 20)
	}},
	{http.MethodGet, "/_matrix/federation/v1/event/{event}", func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage) {
		lf.checkServedPDUs(t, obj["pdus"], 1)
	}},
	{http.MethodGet, "/_matrix/federation/v1/state_ids/{room}", func(t *testing.T, _ *listenerFuzz, obj map[string]json.RawMessage) {
		for _, field := range []string{"pdu_ids", "auth_chain_ids"} {
			var ids []string
			if err := json.Unmarshal(obj[field], &ids); err != nil || ids == nil {
				t.Fatalf("/state_ids %s: %v", field, err)
			}
			for _, eventID := range ids {
				if !strings.HasPrefix(eventID, "$") {
					t.Fatalf("/state_ids names %q", eventID)
				}
			}
		}
	}},
	{http.MethodGet, "/_matrix/federation/v1/state/{room}", func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage) {
		lf.checkServedPDUs(t, obj["pdus"], listenerRoomEvents)
		lf.checkServedPDUs(t, obj["auth_chain"], listenerRoomEvents)
	}},
	{http.MethodGet, "/_matrix/federation/v1/event_auth/{room}/{event}", func(t *testing.T, lf *listenerFuzz, obj map[string]json.RawMessage) {
		lf.checkServedPDUs(t, obj["auth_chain"], listenerRoomEvents)
	}},
}

// FuzzListenerHistory asks the history routes with arbitrary path parameters, query strings
// and /get_missing_events bodies, as a member origin: the limits are capped, and what is
// served is the room's, and verifies.
func FuzzListenerHistory(f *testing.F) {
	lf := newListenerFuzz(f)
	room := string(lf.room.ID)
	evs := lf.room.Events
	head, mid := string(evs[listenerHeld-1].ID), string(evs[10].ID)
	gme := func(earliest, latest []string, limit any) []byte {
		b, _ := json.Marshal(map[string]any{"earliest_events": earliest, "latest_events": latest, "limit": limit, "min_depth": 0})
		return b
	}
	q := url.Values{"v": {head, mid}, "limit": {"10"}}.Encode()
	for _, seed := range []struct {
		route           uint8
		roomID, eventID string
		rawQuery        string
		body            []byte
	}{
		{0, room, "", q, nil},
		{0, room, "", "v=" + url.QueryEscape(head) + "&limit=1000", nil},
		{0, room, "", "limit=0&v=x", nil},
		{0, room, "", "limit=-1", nil},
		{0, "!other:example.org", "", q, nil},
		{1, room, "", "", gme([]string{mid}, []string{head}, 10)},
		{1, room, "", "", gme(nil, []string{head}, 1000)},
		{1, room, "", "", gme([]string{mid}, []string{head}, -1)},
		{1, room, "", "", []byte(`{"limit":"10"}`)},
		{1, room, "", "", []byte(`[]`)},
		{2, "", mid, "", nil},
		{2, "", "$nope", "", nil},
		{3, room, "", "event_id=" + url.QueryEscape(head), nil},
		{3, room, "", "", nil},
		{4, room, "", "event_id=" + url.QueryEscape(mid), nil},
		{5, room, head, "", nil},
		{5, room, "$nope", "", nil},
	} {
		f.Add(seed.route, seed.roomID, seed.eventID, seed.rawQuery, seed.body)
	}
	f.Fuzz(func(t *testing.T, route uint8, roomID, eventID, rawQuery string, body []byte) {
		r := historyRoutes[int(route)%len(historyRoutes)]
		target := strings.NewReplacer("{room}", url.PathEscape(roomID), "{event}", url.PathEscape(eventID)).Replace(r.path)
		if rawQuery != "" {
			target += "?" + rawQuery
		}
		rec, also := lf.request(r.method, target, body, lf.origin())
		if rec == nil {
			return
		}
		obj := checkAnswer(t, rec, append(also, http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusRequestEntityTooLarge)...)
		if rec.Code == http.StatusOK {
			r.answer(t, lf, obj)
		}
	})
}

// FuzzListenerKeyQuery asks our key routes, which anyone may: /_matrix/key/v2/query by GET
// (server and key ID in the path) and POST (the body), /_matrix/key/v2/server and the
// version. Every key response answered verifies: self-signed by its server, and signed by us
// when we vouch for another server's.
func FuzzListenerKeyQuery(f *testing.F) {
	lf := newListenerFuzz(f)
	origin := lf.origin()
	post := func(v any) []byte { b, _ := json.Marshal(v); return b }
	for _, seed := range []struct {
		kind          uint8
		server, keyID string
		rawQuery      string
		body          []byte
	}{
		{0, origin, "", "", nil},
		{0, listenerServer, "", "minimum_valid_until_ts=1704067200000", nil},
		{0, origin, "", "minimum_valid_until_ts=soon", nil},
		{0, "not a server name", "", "", nil},
		{1, origin, string(originKeyID(origin)), "", nil},
		{2, "", "", "", post(map[string]any{"server_keys": map[string]any{origin: map[string]any{}, listenerServer: map[string]any{}}})},
		{2, "", "", "", post(map[string]any{"server_keys": map[string]any{origin: map[string]any{string(originKeyID(origin)): map[string]any{"minimum_valid_until_ts": 1}}}})},
		{2, "", "", "", []byte(`{"server_keys":{"a.example":{"ed25519:x":{"minimum_valid_until_ts":"x"}}}}`)},
		{2, "", "", "", []byte(`{"server_keys":null}`)},
		{2, "", "", "", []byte(`{}`)},
		{2, "", "", "", []byte(`not json`)},
		{3, "", "", "", nil},
		{4, "", "", "", nil},
	} {
		f.Add(seed.kind, seed.server, seed.keyID, seed.rawQuery, seed.body)
	}
	f.Fuzz(func(t *testing.T, kind uint8, server, keyID, rawQuery string, body []byte) {
		method, target := http.MethodGet, ""
		switch kind % 5 {
		case 0:
			target = "/_matrix/key/v2/query/" + url.PathEscape(server)
		case 1:
			target = "/_matrix/key/v2/query/" + url.PathEscape(server) + "/" + url.PathEscape(keyID)
		case 2:
			method, target = http.MethodPost, "/_matrix/key/v2/query"
		case 3:
			target = "/_matrix/key/v2/server"
		case 4:
			target = "/_matrix/federation/v1/version"
		}
		if rawQuery != "" {
			target += "?" + rawQuery
		}
		rec, _ := lf.request(method, target, body, "")
		if rec == nil {
			return
		}
		obj := checkAnswer(t, rec, http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge)
		if rec.Code != http.StatusOK {
			return
		}
		switch kind % 5 {
		case 0, 1, 2:
			var resps []json.RawMessage
			if err := json.Unmarshal(obj["server_keys"], &resps); err != nil {
				t.Fatalf("server_keys: %v", err)
			}
			for _, raw := range resps {
				lf.checkKeyResponse(t, raw)
			}
		case 3:
			lf.checkKeyResponse(t, rec.Body.Bytes())
		}
	})
}

// originKeyID is the key ID of an origin's fixture key.
func originKeyID(origin string) id.KeyID { return fixturepeer.OriginKey(origin).ID }

// checkKeyResponse checks a key response we answered: self-signed by its server, and signed by
// us too when it is another server's.
func (lf *listenerFuzz) checkKeyResponse(t *testing.T, raw json.RawMessage) {
	t.Helper()
	var resp mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("key response: %v", err)
	}
	if err := resp.VerifySelfSignature(); err != nil {
		t.Fatalf("key response of %s: %v", resp.ServerName, err)
	}
	if resp.ServerName != listenerServer {
		if err := signutil.VerifyJSON(listenerServer, lf.ourKey.ID, lf.ourKey.Pub, raw); err != nil {
			t.Fatalf("key response of %s vouched for without our signature: %v", resp.ServerName, err)
		}
	}
}

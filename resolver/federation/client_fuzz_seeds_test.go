package federation

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

type clientAnswerSeed struct {
	endpoint   uint8
	status     uint16 // the HTTP status less 200
	retryAfter string
	body       []byte
}

// clientAnswerSeeds are answers in the shapes servers give them, for each endpoint: real
// signed events of a generated room, a key response signed with the fixture's key of
// fuzzPeer, and the error answers of rate limits, refusals and proxies.
func clientAnswerSeeds(tb testing.TB) []clientAnswerSeed {
	tb.Helper()
	room := fixturepeer.MustGenerate(tb, fixturepeer.RoomOptions{Seed: 3, Events: 10})
	events := make([]string, len(room.Events))
	ids := make([]string, len(room.Events))
	for i, ev := range room.Events {
		events[i], ids[i] = string(ev.JSON), string(ev.ID)
	}
	list := func(from, to int) string { return "[" + strings.Join(events[from:to], ",") + "]" }
	idList := func(from, to int) string { ids, _ := json.Marshal(ids[from:to]); return string(ids) }
	keys := string(signedFuzzKeyResponse(tb))

	endpoint := func(name string) uint8 {
		for i, e := range fuzzEndpoints {
			if e.name == name {
				return uint8(i)
			}
		}
		tb.Fatalf("no endpoint %s", name)
		return 0
	}
	ok := func(name, body string) clientAnswerSeed {
		return clientAnswerSeed{endpoint(name), 0, "", []byte(body)}
	}
	seeds := []clientAnswerSeed{
		ok("backfill", `{"origin":"peer.example","origin_server_ts":1704067200000,"pdus":`+list(0, 5)+`}`),
		ok("backfill", `{"origin":"peer.example","origin_server_ts":1704067200000,"pdus":`+list(0, 6)+`}`),
		ok("get_missing_events", `{"events":`+list(2, 6)+`}`),
		ok("get_missing_events", `{"events":[]}`),
		ok("event", `{"origin":"peer.example","origin_server_ts":1704067200000,"pdus":`+list(3, 4)+`}`),
		ok("event", `{"origin":"peer.example","origin_server_ts":1704067200000,"pdus":[]}`),
		ok("timestamp_to_event", fmt.Sprintf(`{"event_id":%q,"origin_server_ts":1704067200000}`, ids[9])),
		ok("timestamp_to_event", `{"event_id":null}`),
		ok("make_join", `{"room_version":"11","event":`+events[4]+`}`),
		ok("make_join", `{"room_version":"11","event":null}`),
		ok("make_leave", `{"room_version":"10","event":`+events[4]+`}`),
		ok("send_join", `{"origin":"peer.example","members_omitted":false,"servers_in_room":["peer.example"],"state":`+list(0, 5)+`,"auth_chain":`+list(0, 4)+`,"event":`+events[5]+`}`),
		ok("send_leave", `{}`),
		ok("state", `{"pdus":`+list(0, 5)+`,"auth_chain":`+list(0, 3)+`}`),
		ok("state_ids", `{"pdu_ids":`+idList(0, 5)+`,"auth_chain_ids":`+idList(0, 3)+`}`),
		ok("state_ids", `{"pdu_ids":["not an event ID"],"auth_chain_ids":[]}`),
		ok("key/v2/server", keys),
		ok("key/v2/query", `{"server_keys":[`+keys+`]}`),
		ok("key/v2/query", `{"server_keys":{"peer.example":`+keys+`}}`),
		ok("key ring", keys),
		ok("key ring", `{"server_keys":[`+keys+`]}`),
	}
	for _, e := range fuzzEndpoints {
		seeds = append(seeds,
			clientAnswerSeed{endpoint(e.name), http.StatusTooManyRequests - 200, "", []byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2000}`)},
			clientAnswerSeed{endpoint(e.name), http.StatusTooManyRequests - 200, "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`{}`)},
			clientAnswerSeed{endpoint(e.name), http.StatusServiceUnavailable - 200, "120", []byte(`<html>busy</html>`)},
			clientAnswerSeed{endpoint(e.name), http.StatusForbidden - 200, "", []byte(`{"errcode":"M_FORBIDDEN","error":"Host not in room."}`)},
			clientAnswerSeed{endpoint(e.name), http.StatusNotFound - 200, "", []byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)},
			clientAnswerSeed{endpoint(e.name), 0, "", nil},
		)
	}
	return seeds
}

// signedFuzzKeyResponse is fuzzPeer's key response, signed with the fixture's key for it and
// valid for long (the ring caps it at a week from now).
func signedFuzzKeyResponse(tb testing.TB) []byte {
	tb.Helper()
	key := fixturepeer.OriginKey(fuzzPeer)
	resp := &mfed.ServerKeyResponse{
		ServerName:   fuzzPeer,
		ValidUntilTS: jsontime.UM(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)),
		VerifyKeys:   map[id.KeyID]mfed.ServerVerifyKey{key.ID: {Key: key.Pub}},
		OldVerifyKeys: map[id.KeyID]mfed.OldVerifyKey{
			"ed25519:old": {Key: key.Pub, ExpiredTS: jsontime.UM(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))},
		},
	}
	sig, err := key.SignJSON(resp)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Signatures = map[string]map[id.KeyID]string{fuzzPeer: {key.ID: sig}}
	raw, err := json.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

package federation

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"testing"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// The answer decoders read straight from bytes here, far faster than through the client
// (FuzzClientAnswers): what they accept is what a strict decoder reads, within the caps, and
// any refusal of a body that arrived whole is a bad response.

// FuzzDecodeJoinTemplate decodes make_join (and make_leave) answers.
func FuzzDecodeJoinTemplate(f *testing.F) {
	room := fixturepeer.MustGenerate(f, fixturepeer.RoomOptions{Seed: 5, Events: 8})
	for _, seed := range []string{
		`{"room_version":"11","event":` + string(room.Events[4].JSON) + `}`,
		`{"event":{"type":"m.room.member","prev_events":["$a","$b"]},"room_version":"10"}`,
		`{"room_version":"11","event":null}`,
		`{"room_version":11,"event":{}}`,
		`{"room_version":"11","room_version":"12","event":{}}`,
		`{"room_version":"11","event":{},"event":{"x":1}}`,
		`{"room_version":"1","event":{"prev_events":[["$a:x",{"sha256":"aGFzaA"}]]}}`,
		`[]`, `null`, ``, `{"event":{"a":`, "{\"room_version\":\"\xff\",\"event\":{}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		version, event, err := decodeJoinTemplate(bytes.NewReader(body), 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error not classed as a bad response: %v", err)
			}
			return
		}
		if event != nil {
			checkPDUs(t, []json.RawMessage{event}, 1)
		}
		var ref struct {
			RoomVersion string         `json:"room_version"`
			Event       jsontext.Value `json:"event"`
		}
		if jsonv2.Unmarshal(body, &ref, jsonv2.RejectUnknownMembers(false)) == nil && ref.RoomVersion != version {
			t.Fatalf("room version %q, encoding/json/v2 reads %q", version, ref.RoomVersion)
		}
		_ = ReferencedIDs(event, "prev_events")
	})
}

// fuzzStateCap is the cap on state and auth chain lists in the fuzz, low enough to reach.
const fuzzStateCap = 4

// FuzzDecodeStateAnswer decodes send_join and /state answers.
func FuzzDecodeStateAnswer(f *testing.F) {
	room := fixturepeer.MustGenerate(f, fixturepeer.RoomOptions{Seed: 5, Events: 8})
	evs := room.Events
	for _, seed := range []string{
		`{"origin":"peer.example","state":[` + string(evs[0].JSON) + `,` + string(evs[1].JSON) + `],"auth_chain":[` + string(evs[0].JSON) + `],"event":` + string(evs[5].JSON) + `}`,
		`{"pdus":[{"a":1}],"auth_chain":[{"b":2},{"c":3}]}`,
		`{"state":[],"auth_chain":[],"event":null,"members_omitted":true,"servers_in_room":["a"]}`,
		`{"state":[{}],"state":[]}`,
		`{"auth_chain":[{},{},{},{},{}]}`,
		`{"event":{"e":1},"event":{"e":2}}`,
		`[]`, `null`, ``, `{"state":[{"a":`,
	} {
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, sendJoin bool) {
		what, field := "/state", "pdus"
		if sendJoin {
			what, field = "/send_join", "state"
		}
		ans, err := decodeStateAnswer(bytes.NewReader(body), 1<<20, what, field, fuzzStateCap)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error not classed as a bad response: %v", err)
			}
			return
		}
		checkPDUs(t, ans.State, fuzzStateCap)
		checkPDUs(t, ans.AuthChain, fuzzStateCap)
		if ans.Event != nil {
			checkPDUs(t, []json.RawMessage{ans.Event}, 1)
		}
		var ref map[string]jsontext.Value
		if jsonv2.Unmarshal(body, &ref) == nil {
			var state, chain []jsontext.Value
			if jsonv2.Unmarshal(ref[field], &state) == nil && len(state) != len(ans.State) ||
				jsonv2.Unmarshal(ref["auth_chain"], &chain) == nil && len(chain) != len(ans.AuthChain) {
				t.Fatalf("%d state and %d auth chain events, encoding/json/v2 reads %d and %d", len(ans.State), len(ans.AuthChain), len(state), len(chain))
			}
		}
	})
}

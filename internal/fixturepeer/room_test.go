package fixturepeer

import (
	"bytes"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// checked is what verifying a served PDU finds.
type checked struct {
	pdu      *pdu.PDU
	id       id.EventID // recomputed from the JSON
	roomID   id.RoomID  // room_id, or for a v12 create event the ID derived from it
	hashOK   bool
	sigErr   error
	parseErr error
}

func (c checked) valid() bool { return c.parseErr == nil && c.hashOK && c.sigErr == nil }

// check verifies raw as a resolver would, with pdu: event ID, content hash, origin signature.
func check(r *Room, raw []byte) checked {
	var c checked
	c.pdu = new(pdu.PDU)
	if c.parseErr = jsonv2.Unmarshal(raw, c.pdu); c.parseErr != nil {
		return c
	}
	if c.id, c.parseErr = c.pdu.GetEventID(r.Version); c.parseErr != nil {
		return c
	}
	c.roomID = c.pdu.RoomID
	if c.pdu.Type == "m.room.create" && r.Version.RoomIDIsCreateEventID() {
		c.roomID, c.parseErr = c.pdu.GetRoomID()
	}
	c.hashOK = c.pdu.VerifyContentHash()
	c.sigErr = c.pdu.VerifySignature(r.Version, c.pdu.Sender.Homeserver(), r.KeyFunc())
	return c
}

func TestGenerateVerifies(t *testing.T) {
	for _, tc := range []struct {
		v       id.RoomVersion
		renames float64
	}{{id.RoomV10, 0}, {id.RoomV11, 0}, {id.RoomV12, 0}, {id.RoomV11, 0.03}, {id.RoomV12, 0.03}} {
		v := tc.v
		name := "v" + string(v)
		if tc.renames > 0 {
			name += "-renames"
		}
		t.Run(name, func(t *testing.T) {
			r := MustGenerate(t, RoomOptions{Seed: 42, Events: 600, Version: v, Heads: 2, RenameRate: tc.renames})
			if r.Version != v || len(r.Events) != 600 || len(r.IDSet()) != 600 {
				t.Fatalf("version %s, %d events, %d IDs", r.Version, len(r.Events), len(r.IDSet()))
			}
			if v.RoomIDIsCreateEventID() {
				if want := id.RoomID("!" + string(r.Create().ID)[1:]); r.ID != want {
					t.Errorf("v12 room ID %s, want %s", r.ID, want)
				}
			}
			ancestors := make([]map[int]bool, len(r.Events)) // inclusive
			origins := map[string]bool{}
			member := make(map[string]id.EventID) // each user's newest member event so far
			renames := 0
			for i, e := range r.Events {
				c := check(r, e.JSON)
				if !c.valid() || c.id != e.ID || c.roomID != r.ID {
					t.Fatalf("event %d %s: %+v", i, e.ID, c)
				}
				if len(c.pdu.Signatures) != 1 || c.pdu.Signatures[e.Origin] == nil {
					t.Errorf("event %s signed by %v, want only %s", e.ID, c.pdu.Signatures, e.Origin)
				}
				if (c.pdu.RoomID == "") != (v.RoomIDIsCreateEventID() && i == 0) {
					t.Errorf("event %d room_id %q", i, c.pdu.RoomID)
				}
				if e.Index != i || r.Get(e.ID) != e || !r.Has(e.ID) {
					t.Errorf("event %d: index %d, lookup broken", i, e.Index)
				}
				if i > 0 && e.TS <= r.Events[i-1].TS {
					t.Errorf("event %d: ts %d not after %d", i, e.TS, r.Events[i-1].TS)
				}
				origins[e.Origin] = true
				ancestors[i] = map[int]bool{i: true}
				var depth int64
				for _, p := range e.Prev {
					pe := r.Get(p)
					if pe == nil || pe.Index >= i {
						t.Fatalf("event %d: prev %s not an earlier event", i, p)
					}
					depth = max(depth, pe.Depth)
					for a := range ancestors[pe.Index] {
						ancestors[i][a] = true
					}
				}
				if e.Depth != depth+1 {
					t.Errorf("event %d: depth %d, prevs' max %d", i, e.Depth, depth)
				}
				for _, a := range e.Auth {
					ae := r.Get(a)
					if ae == nil || !ancestors[i][ae.Index] || ae.StateKey == nil {
						t.Errorf("event %d (%s): auth event %s is not an ancestor state event", i, e.Type, a)
					}
					if v.RoomIDIsCreateEventID() && ae != nil && ae.Type == "m.room.create" {
						t.Errorf("v12 event %d lists the create event in auth_events", i)
					}
				}
				if e.Type == "m.room.message" && e.Auth[len(e.Auth)-1] != member[string(e.Sender)] {
					t.Errorf("message %d: last auth event is not the sender's newest member event", i)
				}
				if e.Type == "m.room.member" {
					if prev, ok := member[*e.StateKey]; ok {
						renames++
						if e.Auth[len(e.Auth)-1] != prev {
							t.Errorf("rename %d: last auth event is not the member event it replaces", i)
						}
					}
					member[*e.StateKey] = e.ID
				}
			}
			if (renames > 0) != (tc.renames > 0) {
				t.Errorf("%d renames at rate %v", renames, tc.renames)
			}
			if len(origins) != len(DefaultOrigins) {
				t.Errorf("events signed by %v, want all of %v", origins, DefaultOrigins)
			}
			if s := r.Stats(); s.Forks == 0 || s.Merges == 0 || s.Heads < 2 {
				t.Errorf("shape %+v: want forks, merges and 2 heads", s)
			}
		})
	}
}

func TestGenerateInitialState(t *testing.T) {
	for _, v := range []id.RoomVersion{id.RoomV10, id.RoomV11, id.RoomV12} {
		r := MustGenerate(t, RoomOptions{Seed: 1, Events: 5, Version: v})
		want := []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"}
		var content []map[string]any
		for i, e := range r.Events {
			if e.Type != want[i] || e.StateKey == nil {
				t.Fatalf("v%s event %d: %s", v, i, e.Type)
			}
			var p struct{ Content map[string]any }
			if err := json.Unmarshal(e.JSON, &p); err != nil {
				t.Fatal(err)
			}
			content = append(content, p.Content)
		}
		creator := "@user0:" + DefaultOrigins[0]
		if content[0]["room_version"] != string(v) || (content[0]["creator"] == creator) != (v == id.RoomV10) {
			t.Errorf("v%s create content %v", v, content[0])
		}
		if content[1]["membership"] != "join" || *r.Events[1].StateKey != creator {
			t.Errorf("v%s creator join %v", v, content[1])
		}
		users := content[2]["users"].(map[string]any)
		if _, listed := users[creator]; listed == (v == id.RoomV12) {
			t.Errorf("v%s power levels users %v", v, users)
		}
		if content[3]["join_rule"] != "public" || content[4]["history_visibility"] != "world_readable" {
			t.Errorf("v%s join rules %v, history visibility %v", v, content[3], content[4])
		}
		wantAuth := [][]int{{}, {0}, {0, 1}, {0, 2, 1}, {0, 2, 1}}
		for i, e := range r.Events {
			var want []id.EventID
			for _, a := range wantAuth[i] {
				if a == 0 && v == id.RoomV12 {
					continue
				}
				want = append(want, r.Events[a].ID)
			}
			if !slices.Equal(e.Auth, want) && len(e.Auth)+len(want) > 0 {
				t.Errorf("v%s event %d auth %v, want %v", v, i, e.Auth, want)
			}
		}
		if got := r.Heads(); len(got) != 1 || got[0] != r.Events[4].ID {
			t.Errorf("v%s heads %v", v, got)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	for _, v := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		a := MustGenerate(t, RoomOptions{Seed: 7, Events: 800, Version: v})
		b := MustGenerate(t, RoomOptions{Seed: 7, Events: 800, Version: v})
		c := MustGenerate(t, RoomOptions{Seed: 8, Events: 800, Version: v})
		if a.ID != b.ID || a.ID == c.ID {
			t.Errorf("v%s room IDs %s %s %s", v, a.ID, b.ID, c.ID)
		}
		for i := range a.Events {
			if !bytes.Equal(a.Events[i].JSON, b.Events[i].JSON) {
				t.Fatalf("v%s seed 7 event %d differs between runs", v, i)
			}
		}
		if a.Events[len(a.Events)-1].ID == c.Events[len(c.Events)-1].ID {
			t.Errorf("v%s seeds 7 and 8 give the same last event", v)
		}
		if !slices.Equal(a.SortedIDs(), b.SortedIDs()) || !slices.Equal(a.Heads(), b.Heads()) {
			t.Errorf("v%s sorted IDs or heads differ", v)
		}
	}
	if OriginKey("origin-a.invalid").Pub == OriginKey("origin-b.invalid").Pub {
		t.Error("origins share a key")
	}
}

func TestGenerateShape(t *testing.T) {
	start := time.Now()
	r := MustGenerate(t, RoomOptions{Seed: 3, Events: 5000})
	elapsed := time.Since(start)
	t.Logf("5000 events in %v (%.0f events/s): %+v", elapsed, 5000/elapsed.Seconds(), r.Stats())
	if elapsed > 10*time.Second {
		t.Errorf("generating 5000 events took %v", elapsed)
	}
	s := r.Stats()
	if s.Events != 5000 || s.Forks < 50 || s.Merges < 50 || s.LongestRun < 100 || s.Senders < 10 {
		t.Errorf("shape %+v", s)
	}
	threeWay, siblings := 0, 0
	children := map[string]int{}
	for _, e := range r.Events {
		if len(e.Prev) == 3 {
			threeWay++
		}
		key := fmt.Sprint(e.Prev)
		if children[key]++; children[key] == 2 {
			siblings++
		}
	}
	if threeWay == 0 || siblings == 0 {
		t.Errorf("%d 3-way merges, %d sibling pairs", threeWay, siblings)
	}
	sorted := r.SortedIDs()
	for i := 1; i < len(sorted); i++ {
		a, b := r.Get(sorted[i-1]), r.Get(sorted[i])
		if a.Depth > b.Depth || (a.Depth == b.Depth && a.ID >= b.ID) {
			t.Fatalf("SortedIDs out of order at %d", i)
		}
	}

	lin := MustGenerate(t, RoomOptions{Seed: 3, Events: 300, Linear: true})
	if s := lin.Stats(); s.Forks != 0 || s.Merges != 0 || s.Heads != 1 || s.MaxDepth != 300 || s.LongestRun != 300 {
		t.Errorf("linear shape %+v", s)
	}
	heads := MustGenerate(t, RoomOptions{Seed: 3, Events: 300, Heads: 3})
	if n := len(heads.Heads()); n < 3 {
		t.Errorf("%d heads, want 3", n)
	}
	big := MustGenerate(t, RoomOptions{Seed: 3, Events: 20, BodySize: 1024})
	var m struct{ Content struct{ Body string } }
	if err := json.Unmarshal(big.Events[len(big.Events)-1].JSON, &m); err != nil || len(m.Content.Body) != 1024 {
		t.Errorf("body of %d bytes (%v), want 1024", len(m.Content.Body), err)
	}
	if _, err := Generate(RoomOptions{Version: "9"}); err == nil {
		t.Error("room version 9 accepted")
	}
}

func BenchmarkGenerate5k(b *testing.B) {
	for b.Loop() {
		MustGenerate(b, RoomOptions{Seed: 1, Events: 5000})
	}
	b.ReportMetric(float64(5000*b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkGenerate100k(b *testing.B) {
	for b.Loop() {
		MustGenerate(b, RoomOptions{Seed: 1, Events: 100000})
	}
	b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "events/s")
}

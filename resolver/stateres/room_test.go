package stateres_test

import (
	"context"
	"encoding/json/jsontext"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
)

const (
	alice = id.UserID("@alice:example.org")
	bob   = id.UserID("@bob:example.org")
	carol = id.UserID("@carol:example.org")
	dave  = id.UserID("@dave:example.org")
	eve   = id.UserID("@eve:example.org")
	frank = id.UserID("@frank:example.org")
)

// room builds the events of a test room, unsigned (Authorize only checks signatures of
// restricted joins), with their real event IDs. Alice creates it.
type room struct {
	t       *testing.T
	version id.RoomVersion
	id      id.RoomID
	create  id.EventID
	events  map[id.EventID]*pdu.PDU
	names   map[id.EventID]string
	// clock is the origin_server_ts of the next event; tests set it where it matters.
	clock int64
	last  id.EventID
	loads int
}

func newRoom(t *testing.T, version id.RoomVersion) *room {
	t.Helper()
	r := &room{t: t, version: version, events: map[id.EventID]*pdu.PDU{}, names: map[id.EventID]string{}, clock: 1}
	content := fmt.Sprintf(`{"room_version":%q}`, version)
	if version.RoomIDIsCreateEventID() {
		r.create = r.add("create", &pdu.PDU{Type: "m.room.create", StateKey: new(""), Sender: alice, Content: jsontext.Value(content)})
		r.id = id.RoomID("!" + r.create[1:])
	} else {
		r.id = "!room:example.org"
		r.create = r.add("create", &pdu.PDU{Type: "m.room.create", StateKey: new(""), Sender: alice, Content: jsontext.Value(content), RoomID: r.id})
	}
	return r
}

// send adds a state event authorized by auth, which may name the create event whatever the
// version: room version 12 events do not cite it, so it is dropped there.
func (r *room) send(name string, sender id.UserID, evType, stateKey, content string, auth ...id.EventID) id.EventID {
	r.t.Helper()
	if r.version.RoomIDIsCreateEventID() {
		auth = slices.DeleteFunc(slices.Clone(auth), func(evID id.EventID) bool { return evID == r.create })
	}
	return r.add(name, &pdu.PDU{
		Type: evType, StateKey: &stateKey, Sender: sender, Content: jsontext.Value(content),
		RoomID: r.id, AuthEvents: append([]id.EventID{}, auth...), PrevEvents: []id.EventID{r.last},
	})
}

func (r *room) add(name string, evt *pdu.PDU) id.EventID {
	r.t.Helper()
	if evt.AuthEvents == nil {
		evt.AuthEvents, evt.PrevEvents = []id.EventID{}, []id.EventID{}
	}
	evt.Depth = int64(len(r.events) + 1)
	evt.OriginServerTS = r.clock
	r.clock += 10
	if err := evt.FillContentHash(); err != nil {
		r.t.Fatal(err)
	}
	evID, err := evt.GetEventID(r.version)
	if err != nil {
		r.t.Fatal(err)
	}
	evt.InternalMeta.EventID = evID
	r.events[evID] = evt
	r.names[evID] = name
	r.last = evID
	return evID
}

// powerLevels is power levels content giving users their levels, and Alice 100 where she is
// not a creator with infinite power already.
func (r *room) powerLevels(users ...any) string {
	levels := map[id.UserID]any{}
	if !r.version.PrivilegedRoomCreators() {
		levels[alice] = 100
	}
	for i := 0; i < len(users); i += 2 {
		levels[users[i].(id.UserID)] = users[i+1]
	}
	var parts []string
	for _, user := range slices.Sorted(maps.Keys(levels)) {
		parts = append(parts, fmt.Sprintf("%q:%d", user, levels[user]))
	}
	return `{"users":{` + strings.Join(parts, ",") + `}}`
}

// state is the room state holding the given events, a later one replacing an earlier one of
// the same key.
func (r *room) state(ids ...id.EventID) stateres.StateMap {
	s := stateres.StateMap{}
	for _, evID := range ids {
		evt := r.events[evID]
		s[pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}] = evID
	}
	return s
}

// load is the Loader. It fails the test if an event is asked for twice in one resolution, as
// the resolver is meant to remember what it loaded.
func (r *room) loader() stateres.Loader {
	asked := map[id.EventID]bool{}
	return func(ctx context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
		r.loads++
		var out []*pdu.PDU
		for _, evID := range ids {
			if asked[evID] {
				r.t.Errorf("%s loaded twice", r.name(evID))
			}
			asked[evID] = true
			if evt, ok := r.events[evID]; ok {
				out = append(out, evt)
			}
		}
		return out, nil
	}
}

func (r *room) resolve(states ...stateres.StateMap) (stateres.StateMap, error) {
	return stateres.Resolve(context.Background(), r.version, states, r.loader())
}

// expect resolves states and fails unless the result is exactly want.
func (r *room) expect(want stateres.StateMap, states ...stateres.StateMap) {
	r.t.Helper()
	got, err := r.resolve(states...)
	if err != nil {
		r.t.Fatalf("Resolve: %v", err)
	}
	if !maps.Equal(got, want) {
		r.t.Errorf("resolved state:\n%s\nwant:\n%s", r.describe(got), r.describe(want))
	}
}

func (r *room) name(evID id.EventID) string {
	if name, ok := r.names[evID]; ok {
		return name
	}
	return string(evID)
}

func (r *room) describe(s stateres.StateMap) string {
	var lines []string
	for key, evID := range s {
		lines = append(lines, fmt.Sprintf("  %s|%s = %s", key.Type, key.StateKey, r.name(evID)))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// publicRoom is a public room that Alice and Bob joined, with the power levels given.
type publicRoom struct {
	*room
	aliceJoin, pl, joinRules, bobJoin id.EventID
}

func newPublicRoom(t *testing.T, version id.RoomVersion, users ...any) *publicRoom {
	r := &publicRoom{room: newRoom(t, version)}
	c := r.create
	r.aliceJoin = r.send("alice joins", alice, "m.room.member", alice.String(), `{"membership":"join"}`, c)
	r.pl = r.send("PL0", alice, "m.room.power_levels", "", r.powerLevels(users...), c, r.aliceJoin)
	r.joinRules = r.send("public", alice, "m.room.join_rules", "", `{"join_rule":"public"}`, c, r.pl, r.aliceJoin)
	r.bobJoin = r.send("bob joins", bob, "m.room.member", bob.String(), `{"membership":"join"}`, c, r.pl, r.joinRules)
	return r
}

// base is the state both branches start from, plus extra.
func (r *publicRoom) base(extra ...id.EventID) stateres.StateMap {
	return r.state(append([]id.EventID{r.create, r.aliceJoin, r.pl, r.joinRules, r.bobJoin}, extra...)...)
}

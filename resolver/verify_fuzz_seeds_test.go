package resolver

import (
	"encoding/json/jsontext"
	"fmt"
	"testing"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

type verifySeed struct {
	version, roomID string
	raw             []byte
}

// verifySeeds are real PDUs of every supported room version: the fixture's generated rooms
// (versions 1, 2, 10, 11 and 12) and events made here for every version from 3 on (the
// fixture generates no others): a create event, a message, a restricted join signed by the
// authorising server too where the version has them, a message whose content was changed
// after signing (kept redacted), one signed with a key ID the origin does not have, and one
// from a server outside the key set.
func verifySeeds(tb testing.TB) []verifySeed {
	tb.Helper()
	var seeds []verifySeed
	for _, v := range []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV10, id.RoomV11, id.RoomV12} {
		room := fixturepeer.MustGenerate(tb, fixturepeer.RoomOptions{Seed: 1, Events: 12, Version: v})
		for _, ev := range room.Events {
			seeds = append(seeds, verifySeed{string(v), string(room.ID), ev.JSON})
		}
		last := room.Events[len(room.Events)-1].JSON
		seeds = append(seeds, verifySeed{string(v), string(room.ID), mustSet(tb, last, "content.fuzz", "changed after signing")})
	}
	for _, version := range supportedRoomVersions {
		v := id.RoomVersion(version)
		if v.EventIDFormat() == id.EventIDFormatCustom {
			continue
		}
		seeds = append(seeds, madeSeeds(tb, v)...)
	}
	return seeds
}

func madeSeeds(tb testing.TB, v id.RoomVersion) []verifySeed {
	tb.Helper()
	const origin, via, stranger = "127.0.0.1:1", "127.0.0.1:2", "stranger.example"
	alice := id.NewUserID("alice", origin)
	bob := id.NewUserID("bob", via)
	carol := id.NewUserID("carol", origin)
	ts := fixturepeer.DefaultBaseTS
	empty := ""

	create := pdu.PDU{Type: "m.room.create", StateKey: &empty, Sender: alice, Depth: 1, OriginServerTS: ts,
		AuthEvents: []id.EventID{}, PrevEvents: []id.EventID{},
		Content: jsontext.Value(fmt.Sprintf(`{"creator":%q,"room_version":%q}`, alice, v))}
	roomID := id.RoomID("!fuzz" + string(v) + ":" + origin)
	createRaw := signMade(tb, v, roomID, &create, origin)
	if v.RoomIDIsCreateEventID() {
		derived, err := create.GetRoomID()
		if err != nil {
			tb.Fatal(err)
		}
		roomID = derived
	}
	createID, err := create.GetEventID(v)
	if err != nil {
		tb.Fatal(err)
	}
	var auth []id.EventID
	if !v.RoomIDIsCreateEventID() {
		auth = []id.EventID{createID}
	}
	message := func(sender id.UserID, body string) *pdu.PDU {
		return &pdu.PDU{Type: "m.room.message", Sender: sender, Depth: 2, OriginServerTS: ts + 1,
			AuthEvents: auth, PrevEvents: []id.EventID{createID},
			Content: jsontext.Value(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))}
	}
	seeds := []verifySeed{
		{string(v), string(roomID), createRaw},
		{string(v), string(roomID), signMade(tb, v, roomID, message(alice, "hello <&> \u00e9"), origin)},
	}
	changed := signMade(tb, v, roomID, message(alice, "before"), origin)
	seeds = append(seeds, verifySeed{string(v), string(roomID), mustSet(tb, changed, "content.body", "after")})
	withUnsigned := mustSet(tb, signMade(tb, v, roomID, message(alice, "unsigned"), origin), "unsigned.age", 5)
	seeds = append(seeds, verifySeed{string(v), string(roomID), withUnsigned})

	// A key ID the origin does not have: the signature cannot verify.
	other := message(alice, "other key")
	other.RoomID = roomID
	otherKey := fixturepeer.OriginKey(stranger)
	if err := other.Sign(v, origin, otherKey.ID, otherKey.Priv); err != nil {
		tb.Fatal(err)
	}
	seeds = append(seeds, verifySeed{string(v), string(roomID), mustMarshal(tb, other)})
	// A server outside the key set: its key cannot be fetched.
	seeds = append(seeds, verifySeed{string(v), string(roomID), signMade(tb, v, roomID, message(id.NewUserID("eve", stranger), "who"), stranger)})

	if v.RestrictedJoins() {
		stateKey := string(carol)
		join := &pdu.PDU{Type: "m.room.member", StateKey: &stateKey, Sender: carol, Depth: 2, OriginServerTS: ts + 2,
			AuthEvents: auth, PrevEvents: []id.EventID{createID},
			Content: jsontext.Value(fmt.Sprintf(`{"membership":"join","join_authorised_via_users_server":%q}`, bob))}
		seeds = append(seeds, verifySeed{string(v), string(roomID), signMade(tb, v, roomID, join, origin, via)})
	}
	return seeds
}

// signMade completes ev as an event of roomID and signs it as each of servers, with the
// fixture's keys.
func signMade(tb testing.TB, v id.RoomVersion, roomID id.RoomID, ev *pdu.PDU, servers ...string) []byte {
	tb.Helper()
	if ev.Type != "m.room.create" || !v.RoomIDIsCreateEventID() {
		ev.RoomID = roomID
	}
	for _, server := range servers {
		key := fixturepeer.OriginKey(server)
		if err := ev.Sign(v, server, key.ID, key.Priv); err != nil {
			tb.Fatal(err)
		}
	}
	return mustMarshal(tb, ev)
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	raw, err := canonicaljson.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

func mustSet(tb testing.TB, raw []byte, path string, value any) []byte {
	tb.Helper()
	out, err := sjson.SetBytes(raw, path, value)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

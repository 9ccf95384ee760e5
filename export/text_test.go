package export_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestTextGolden: the transcript of a fixture room synced through the resolver (joins,
// display name changes, rejected events, events held redacted) is the golden file's.
// go test ./export/ -run TestTextGolden -update rewrites it.
func TestTextGolden(t *testing.T) {
	room, _, st := strippedRoom(t, 49, 160)
	out, _ := runExport(t, st, export.Options{RoomID: string(room.ID), Format: export.FormatText})
	golden := filepath.Join("testdata", "fixture-room.txt")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(out) != string(want) {
		t.Errorf("the transcript differs from %s (run with -update after checking why):\n%s", golden, firstDifference(string(out), string(want)))
	}
	for _, kind := range []string{"[redacted] ", "[rejected: ", " joined as ", " changed their display name from ", "> "} {
		if !strings.Contains(string(out), kind) {
			t.Errorf("the transcript has no %q line", kind)
		}
	}
}

func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got %s\nwant %s", i+1, gl, wl)
		}
	}
	return ""
}

// TestTextWording: how each kind of event reads, on events written straight into a store
// (the transcript reads the store; it verifies nothing).
func TestTextWording(t *testing.T) {
	const roomID = "!words:example.org"
	b := &pduBuilder{roomID: roomID}
	alice, bob, carol := "@alice:example.org", "@bob:example.org", "@carol:example.org"
	member := func(sender, target, content string) store.Event {
		return b.state("m.room.member", sender, target, content)
	}
	cases := []struct {
		ev   store.Event
		want string
	}{
		{b.state("m.room.create", alice, "", `{"room_version":"11"}`), "@alice:example.org created the room (room version 11)"},
		{member(alice, alice, `{"membership":"join","displayname":"Alice"}`), `@alice:example.org joined as "Alice"`},
		{b.state("m.room.power_levels", alice, "", `{"users":{"@alice:example.org":100},"state_default":50}`), "@alice:example.org set the power levels"},
		{b.state("m.room.power_levels", alice, "", `{"users":{"@alice:example.org":100,"@bob:example.org":50},"state_default":0,"events":{"m.room.name":75}}`),
			"@alice:example.org changed the power levels: state_default 50 → 0, @bob:example.org unset → 50, events m.room.name unset → 75"},
		{b.state("m.room.join_rules", alice, "", `{"join_rule":"invite"}`), "@alice:example.org set the join rule to invite"},
		{b.state("m.room.history_visibility", alice, "", `{"history_visibility":"joined"}`), "@alice:example.org set the history visibility to joined"},
		{b.state("m.room.topic", alice, "", `{"topic":"Rules:\nbe kind"}`), `@alice:example.org changed the topic to "Rules:\nbe kind"`},
		{b.state("m.room.topic", alice, "", `{"topic":""}`), "@alice:example.org removed the topic"},
		{b.redacted(b.state("m.room.topic", alice, "", `{}`)), "[redacted] @alice:example.org changed the topic"},
		{b.state("m.room.name", alice, "", `{"name":"Lobby"}`), `@alice:example.org changed the room name to "Lobby"`},
		{b.state("m.room.server_acl", alice, "", `{"allow":["*"],"allow_ip_literals":false,"deny":["evil.example"]}`),
			"@alice:example.org changed the server ACL: allow [*], deny [evil.example], IP literals denied"},
		{b.state("m.room.encryption", alice, "", `{"algorithm":"m.megolm.v1.aes-sha2"}`), "@alice:example.org turned on end-to-end encryption with m.megolm.v1.aes-sha2"},
		{b.state("m.room.tombstone", alice, "", `{"body":"moved","replacement_room":"!new:example.org"}`), "@alice:example.org replaced the room with !new:example.org: moved"},
		{b.state("org.example.custom", alice, "k", `{}`), `@alice:example.org set the state org.example.custom for "k"`},
		{member(alice, bob, `{"membership":"invite"}`), "@alice:example.org invited @bob:example.org"},
		{member(bob, bob, `{"membership":"leave"}`), "@bob:example.org rejected the invitation"},
		{member(bob, bob, `{"displayname":"Bob","membership":"join"}`), `@bob:example.org joined as "Bob"`},
		{member(bob, bob, `{"displayname":"Bobby","membership":"join"}`), `@bob:example.org changed their display name from "Bob" to "Bobby"`},
		{member(bob, bob, `{"avatar_url":"mxc://x/y","membership":"join"}`), `@bob:example.org removed their display name "Bobby"`},
		{member(bob, bob, `{"avatar_url":"mxc://x/z","membership":"join"}`), "@bob:example.org changed their avatar"},
		{b.redacted(member(bob, bob, `{"membership":"join"}`)), "[redacted] @bob:example.org changed their profile"},
		{member(bob, bob, `{"membership":"leave","reason":"bye"}`), "@bob:example.org left: bye"},
		{member(carol, carol, `{"membership":"join"}`), "@carol:example.org joined"},
		{member(alice, carol, `{"membership":"leave","reason":"spam"}`), "@carol:example.org was kicked by @alice:example.org: spam"},
		{member(alice, carol, `{"membership":"ban"}`), "@carol:example.org was banned by @alice:example.org"},
		{member(alice, carol, `{"membership":"leave"}`), "@carol:example.org was unbanned by @alice:example.org"},
		{member(alice, carol, `{"membership":"invite","reason":"come back"}`), "@alice:example.org invited @carol:example.org: come back"},
		{member(alice, carol, `{"membership":"leave"}`), "@alice:example.org withdrew the invitation of @carol:example.org"},
		{member(carol, carol, `{"membership":"knock"}`), "@carol:example.org knocked"},
		{b.event("m.room.message", bob, `{"body":"hello <b>world</b> & co","msgtype":"m.text"}`), "<@bob:example.org> hello <b>world</b> & co"},
		{b.event("m.room.message", bob, `{"body":"waves","msgtype":"m.emote"}`), "* @bob:example.org waves"},
		{b.event("m.room.message", bob, `{"body":"cat.png","msgtype":"m.image","url":"mxc://x/cat"}`), "<@bob:example.org> [m.image] cat.png"},
		{b.event("m.room.message", bob, `{"body":"two\nlines\r\nand a \u001b[31mred\u202e trick\tend","msgtype":"m.text"}`),
			"<@bob:example.org> two\n    lines\n    and a \ufffd[31mred\ufffd trick end"},
		{b.redacted(b.event("m.room.message", bob, `{}`)), "[redacted] <@bob:example.org> (no body)"},
		{b.rejected(b.event("m.room.message", carol, `{"body":"let me in","msgtype":"m.text"}`), "sender not in room"),
			"[rejected: sender not in room] <@carol:example.org> let me in"},
		{b.event("m.room.redaction", alice, `{"reason":"off topic","redacts":"$x"}`), "@alice:example.org redacted $x: off topic"},
		{b.event("m.reaction", bob, `{"m.relates_to":{"event_id":"$x","key":"👍","rel_type":"m.annotation"}}`), `@bob:example.org reacted with "👍" to $x`},
		{b.event("m.room.encrypted", bob, `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"..."}`), "@bob:example.org sent an encrypted message"},
		{b.event("org.example.ping", bob, `{}`), "@bob:example.org sent an event of type org.example.ping"},
	}

	st := newStore(t)
	ctx := context.Background()
	if _, err := st.InsertEvents(ctx, roomID, b.events); err != nil {
		t.Fatal(err)
	}
	for _, r := range b.rejections {
		if err := st.SaveState(ctx, roomID, []store.StateGroup{{No: 1, Entries: map[store.StateKey]string{}}}, []store.EventState{r}); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := runExport(t, st, export.Options{RoomID: roomID, Format: export.FormatText})
	got := map[string]string{} // text by time stamp: one event a second
	var stamp string
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "    "); ok {
			got[stamp] += "\n    " + rest
			continue
		}
		var text string
		stamp, text, _ = strings.Cut(line, "  ")
		got[stamp] = text
	}
	for _, c := range cases {
		at := time.UnixMilli(c.ev.OriginServerTS).UTC().Format("2006-01-02 15:04:05 UTC")
		if got[at] != c.want {
			t.Errorf("%s %s:\n got %q\nwant %q", c.ev.Type, c.ev.ID, got[at], c.want)
		}
	}
}

// pduBuilder writes PDU-shaped events of one room, a second apart, each state event naming
// the state entries it replaces (its own key, and the power levels) among its auth events.
type pduBuilder struct {
	roomID     string
	events     []store.Event
	rejections []store.EventState
	latest     map[string]string // state key → event ID
}

func (b *pduBuilder) add(typ, sender string, stateKey *string, content string) store.Event {
	if b.latest == nil {
		b.latest = map[string]string{}
	}
	n := len(b.events) + 1
	var auth, prev []string
	if stateKey != nil {
		for _, k := range []string{typ + "|" + *stateKey, "m.room.power_levels|"} {
			if id, ok := b.latest[k]; ok && !slices.Contains(auth, id) {
				auth = append(auth, id)
			}
		}
	}
	if n > 1 {
		prev = []string{b.events[n-2].ID}
	}
	ev := store.Event{ID: fmt.Sprintf("$%03d", n), RoomID: b.roomID, Depth: int64(n),
		OriginServerTS: 1_704_067_200_000 + int64(n)*1000, Type: typ, StateKey: stateKey,
		Sender: sender, Origin: "example.org", PrevEvents: prev}
	fields := map[string]any{"auth_events": append([]string{}, auth...), "content": json.RawMessage(content),
		"depth": ev.Depth, "origin_server_ts": ev.OriginServerTS, "prev_events": append([]string{}, prev...),
		"room_id": b.roomID, "sender": sender, "type": typ}
	if stateKey != nil {
		fields["state_key"] = *stateKey
		b.latest[typ+"|"+*stateKey] = ev.ID
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	ev.Raw = raw
	b.events = append(b.events, ev)
	return ev
}

func (b *pduBuilder) state(typ, sender, stateKey, content string) store.Event {
	return b.add(typ, sender, &stateKey, content)
}

func (b *pduBuilder) event(typ, sender, content string) store.Event {
	return b.add(typ, sender, nil, content)
}

// redacted marks ev (the last event added) as held redacted.
func (b *pduBuilder) redacted(ev store.Event) store.Event {
	b.events[len(b.events)-1].Redacted = true
	return ev
}

// rejected has ev rejected by the state computation, for the rule given.
func (b *pduBuilder) rejected(ev store.Event, rule string) store.Event {
	b.rejections = append(b.rejections, store.EventState{EventID: ev.ID, Before: 1, After: 1, Rejected: rule})
	return ev
}

package stateres_test

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
)

var versions = []id.RoomVersion{id.RoomV11, id.RoomV12}

func TestNothingToResolve(t *testing.T) {
	r := newPublicRoom(t, id.RoomV11)
	topic := r.send("topic", alice, "m.room.topic", "", `{"topic":"hi"}`, r.create, r.pl, r.aliceJoin)
	for _, tc := range []struct {
		name   string
		states []stateres.StateMap
		want   stateres.StateMap
	}{
		{"no states", nil, stateres.StateMap{}},
		{"one state", []stateres.StateMap{r.base(topic)}, r.base(topic)},
		{"equal states", []stateres.StateMap{r.base(topic), r.base(topic), r.base(topic)}, r.base(topic)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.t, r.loads = t, 0
			r.expect(tc.want, tc.states...)
			if r.loads != 0 {
				t.Errorf("the loader was called %d times", r.loads)
			}
		})
	}
}

func TestNoConflictIsUnion(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version), func(t *testing.T) {
			r := newPublicRoom(t, version)
			topic := r.send("topic", alice, "m.room.topic", "", `{"topic":"hi"}`, r.create, r.pl, r.aliceJoin)
			name := r.send("name", alice, "m.room.name", "", `{"name":"Room"}`, r.create, r.pl, r.aliceJoin)
			// A key one branch lacks is conflicted too, but each event passes its replay.
			r.expect(r.base(topic, name), r.base(topic), r.base(name))
			if r.loads == 0 || r.loads > 5 {
				t.Errorf("%d loader calls: auth chains should be loaded a generation at a time", r.loads)
			}
		})
	}
}

func TestPowerLevelWar(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version)+"/admin against moderator", func(t *testing.T) {
			// Two admins of the same level cannot demote each other at all (rule 10.9 refuses
			// changing a level >= your own), so the war is Alice (100, or creator in v12)
			// against Bob (50, enough for m.room.power_levels at the default state_default).
			r := newPublicRoom(t, version, bob, 50, carol, 25)
			c := r.create
			t0 := r.send("T0", alice, "m.room.topic", "", `{"topic":"old"}`, c, r.pl, r.aliceJoin)
			// Branch A: Alice demotes Bob.
			demoteBob := r.send("alice demotes bob", alice, "m.room.power_levels", "", r.powerLevels(bob, 0, carol, 25), c, r.pl, r.aliceJoin)
			// Branch B, later by the clock: Bob demotes Carol, then sets the topic.
			demoteCarol := r.send("bob demotes carol", bob, "m.room.power_levels", "", r.powerLevels(bob, 50, carol, 0), c, r.pl, r.bobJoin)
			bobTopic := r.send("bob's topic", bob, "m.room.topic", "", `{"topic":"bob was here"}`, c, demoteCarol, r.bobJoin)
			// Both power levels events are power events; Alice's sorts first as her level (per
			// PL0, their common auth event) is higher, whatever the clock says. It applies; Bob's
			// is then checked with Bob at 0 and fails. The topics are replayed after, against
			// Alice's power levels: T0 passes, Bob's fails, so T0 stays although it is older.
			r.expect(r.base(demoteBob, t0), r.base(demoteBob, t0), r.base(demoteCarol, bobTopic))
		})
	}
}

func TestPowerOrder(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version)+"/the lower level goes last", func(t *testing.T) {
			r := newPublicRoom(t, version, bob, 50)
			c := r.create
			r.clock = 1000
			byBob := r.send("bob adds dave", bob, "m.room.power_levels", "", r.powerLevels(bob, 50, dave, 10), c, r.pl, r.bobJoin)
			r.clock = 2000
			byAlice := r.send("alice adds carol", alice, "m.room.power_levels", "", r.powerLevels(bob, 50, carol, 10), c, r.pl, r.aliceJoin)
			// Each change is allowed after the other, so the one replayed last wins. Higher
			// power sorts first: Alice's, then Bob's, which wins although it is older. Sorting
			// by the clock alone would give Alice's.
			r.expect(r.base(byBob), r.base(byAlice), r.base(byBob))
		})

		t.Run(string(version)+"/auth order before the clock", func(t *testing.T) {
			r := newPublicRoom(t, version, bob, 50)
			c := r.create
			r.clock = 2000
			pl1 := r.send("PL1", alice, "m.room.power_levels", "", r.powerLevels(bob, 50, carol, 10), c, r.pl, r.aliceJoin)
			r.clock = 1000 // a skewed clock
			pl2 := r.send("PL2", alice, "m.room.power_levels", "", r.powerLevels(bob, 50, carol, 20), c, pl1, r.aliceJoin)
			// PL0 and PL2 conflict, PL1 is in the auth difference. PL2 cites PL1, so PL1 is
			// replayed first although its clock is later, and PL2 stays.
			r.expect(r.base(pl2), r.base(), r.base(pl2))
		})
	}
}

// Power levels changed on one branch only: the change stays. Seen against Dendrite (the
// state oracle e2e test), whose resolver, gomatrixserverlib, checks conflicted power levels
// against no power levels at all (it falls back to an event's own auth events for member
// keys only, where the spec says every key), rejects both and leaves the room without any.
func TestPowerLevelsChangedOnOneBranch(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version), func(t *testing.T) {
			r := newPublicRoom(t, version, bob, 100)
			pl1 := r.send("bob: new power levels", bob, "m.room.power_levels", "", r.powerLevels(bob, 100, frank, 10), r.create, r.pl, r.bobJoin)
			want := r.base()
			want[pdu.StateKey{Type: "m.room.power_levels"}] = pl1
			r.expect(want, r.base(), want)
		})
	}
}

func TestBanAgainstJoin(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version)+"/ban wins", func(t *testing.T) {
			r := newPublicRoom(t, version)
			c := r.create
			r.clock = 1000
			join := r.send("eve joins", eve, "m.room.member", eve.String(), `{"membership":"join"}`, c, r.pl, r.joinRules)
			r.clock = 2000
			ban := r.send("alice bans eve", alice, "m.room.member", eve.String(), `{"membership":"ban"}`, c, r.pl, r.aliceJoin)
			// The ban is a power event, replayed in step 2; the join is not, and is replayed in
			// step 4 against a state where Eve is banned (rule 5.3.3). The earlier clock of the
			// join does not matter.
			r.expect(r.base(ban), r.base(join), r.base(ban))
		})

		t.Run(string(version)+"/unban after the ban of a join", func(t *testing.T) {
			// Seen against Dendrite (the state oracle e2e test): one branch holds Eve's join,
			// the other the join, Alice's ban of it and her unban. The join is in the ban's
			// auth chain and in the full conflicted set, so step 1 takes it along with the
			// power events, and it is replayed there, before the ban, not again in step 4:
			// the unban (a leave) stays. gomatrixserverlib, which Dendrite v0.13.8 uses,
			// answers the join instead: the ban is only in the auth difference, which it
			// leaves out (see the next case), so it checks the unban of a user not banned.
			r := newPublicRoom(t, version)
			c := r.create
			join := r.send("eve joins", eve, "m.room.member", eve.String(), `{"membership":"join"}`, c, r.pl, r.joinRules)
			ban := r.send("alice bans eve", alice, "m.room.member", eve.String(), `{"membership":"ban"}`, c, r.pl, r.aliceJoin, join)
			unban := r.send("alice unbans eve", alice, "m.room.member", eve.String(), `{"membership":"leave"}`, c, r.pl, r.aliceJoin, ban)
			r.expect(r.base(unban), r.base(join), r.base(unban))
		})

		t.Run(string(version)+"/leave, invite and join on one branch", func(t *testing.T) {
			// Also seen against Dendrite: one branch holds Eve's leave, the other the leave,
			// Alice's invite and Eve's join, in a room that is invite-only. No power event;
			// the invite is in the auth difference (in the join's auth chain, not in the other
			// state's), so step 4 replays leave, invite, join, and the join stays.
			// gomatrixserverlib leaves the invite out of the auth difference (its
			// isInAllAuthLists looks up the auth set of the event itself, which only a
			// conflicted event has) and so rejects the join.
			r := newPublicRoom(t, version)
			c := r.create
			r.clock = 1000
			invOnly := r.send("invite only", alice, "m.room.join_rules", "", `{"join_rule":"invite"}`, c, r.pl, r.aliceJoin)
			r.clock = 2000
			join0 := r.send("eve invited", alice, "m.room.member", eve.String(), `{"membership":"invite"}`, c, r.pl, r.aliceJoin, invOnly)
			r.clock = 3000
			joined := r.send("eve joins", eve, "m.room.member", eve.String(), `{"membership":"join"}`, c, r.pl, invOnly, join0)
			r.clock = 4000
			leave := r.send("eve leaves", eve, "m.room.member", eve.String(), `{"membership":"leave"}`, c, r.pl, joined)
			r.clock = 5000
			invite := r.send("alice invites eve again", alice, "m.room.member", eve.String(), `{"membership":"invite"}`, c, r.pl, r.aliceJoin, invOnly, leave)
			r.clock = 6000
			rejoin := r.send("eve joins again", eve, "m.room.member", eve.String(), `{"membership":"join"}`, c, r.pl, invOnly, invite)
			state := func(membership id.EventID) stateres.StateMap {
				s := r.base(membership)
				s[pdu.StateKey{Type: "m.room.join_rules"}] = invOnly
				return s
			}
			r.expect(state(rejoin), state(leave), state(rejoin))
		})

		t.Run(string(version)+"/ban by a demoted moderator", func(t *testing.T) {
			r := newPublicRoom(t, version, bob, 50)
			c := r.create
			ban := r.send("bob bans eve", bob, "m.room.member", eve.String(), `{"membership":"ban"}`, c, r.pl, r.bobJoin)
			demote := r.send("alice demotes bob", alice, "m.room.power_levels", "", r.powerLevels(bob, 0), c, r.pl, r.aliceJoin)
			join := r.send("eve joins", eve, "m.room.member", eve.String(), `{"membership":"join"}`, c, demote, r.joinRules)
			// Alice's demotion sorts before Bob's ban (100 or creator against 50), so the ban
			// is checked with Bob at 0 < ban level 50 and fails; Eve's join then passes.
			r.expect(r.base(demote, join), r.base(ban), r.base(demote, join))
		})
	}
}

func TestConflictedJoinRules(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		publicAt, inviteAt    int64
		wantPublic, wantJoins bool
	}{
		// Alice and Bob have the same level, so the clock orders the two join rules: the
		// later one is replayed last and stays. Frank's join, replayed afterwards, passes only
		// against "public".
		{name: "invite set later", publicAt: 1000, inviteAt: 2000},
		{name: "public set later", publicAt: 2000, inviteAt: 1000, wantPublic: true, wantJoins: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newPublicRoom(t, id.RoomV11, bob, 100)
			c := r.create
			invite0 := r.send("invite only", alice, "m.room.join_rules", "", `{"join_rule":"invite"}`, c, r.pl, r.aliceJoin)
			r.clock = tc.publicAt
			public := r.send("alice: public", alice, "m.room.join_rules", "", `{"join_rule":"public"}`, c, r.pl, r.aliceJoin)
			frank := r.send("frank joins", frank, "m.room.member", frank.String(), `{"membership":"join"}`, c, r.pl, public)
			r.clock = tc.inviteAt
			invite := r.send("bob: invite", bob, "m.room.join_rules", "", `{"join_rule":"invite"}`, c, r.pl, r.bobJoin)

			want := r.base(invite)
			if tc.wantPublic {
				want = r.base(public)
			}
			if tc.wantJoins {
				want = r.state(append(mapValues(want), frank)...)
			}
			r.expect(want, r.base(invite0, public, frank), r.base(invite0, invite))
		})
	}
}

func TestConcurrentTopics(t *testing.T) {
	t.Run("different times", func(t *testing.T) {
		r := newPublicRoom(t, id.RoomV11, bob, 100)
		r.clock = 2000
		byBob := r.send("bob's topic", bob, "m.room.topic", "", `{"topic":"b"}`, r.create, r.pl, r.bobJoin)
		r.clock = 1000
		byAlice := r.send("alice's topic", alice, "m.room.topic", "", `{"topic":"a"}`, r.create, r.pl, r.aliceJoin)
		// Same mainline position (both cite PL0), so the earlier is replayed first and the
		// later one stays.
		r.expect(r.base(byBob), r.base(byAlice), r.base(byBob))
	})

	t.Run("same time", func(t *testing.T) {
		r := newPublicRoom(t, id.RoomV11, bob, 100)
		r.clock = 1000
		byBob := r.send("bob's topic", bob, "m.room.topic", "", `{"topic":"b"}`, r.create, r.pl, r.bobJoin)
		r.clock = 1000
		byAlice := r.send("alice's topic", alice, "m.room.topic", "", `{"topic":"a"}`, r.create, r.pl, r.aliceJoin)
		// Same position and time: the smaller event ID is replayed first, the greater stays.
		want := max(byBob, byAlice)
		r.expect(r.base(want), r.base(byAlice), r.base(byBob))
	})

	t.Run("mainline before the clock", func(t *testing.T) {
		r := newPublicRoom(t, id.RoomV11, bob, 100)
		c := r.create
		r.clock = 1000
		pl1 := r.send("PL1", alice, "m.room.power_levels", "", r.powerLevels(bob, 100, carol, 10), c, r.pl, r.aliceJoin)
		byAlice := r.send("alice's topic", alice, "m.room.topic", "", `{"topic":"a"}`, c, pl1, r.aliceJoin)
		r.clock = 2000
		byBob := r.send("bob's topic", bob, "m.room.topic", "", `{"topic":"b"}`, c, r.pl, r.bobJoin)
		// Step 2 settles on PL1 (PL0 is its auth event, so it is replayed first). The mainline
		// is PL1, PL0: Bob's topic hangs off PL0 (position 1), Alice's off PL1 (position 0).
		// The older position goes first, so Alice's topic stays although it is older.
		r.expect(r.base(pl1, byAlice), r.base(pl1, byAlice), r.base(byBob))
	})
}

func TestRejectedEvents(t *testing.T) {
	r := newPublicRoom(t, id.RoomV11, bob, 100)
	c := r.create
	r.clock = 1000
	ok := r.send("topic", alice, "m.room.topic", "", `{"topic":"ok"}`, c, r.pl, r.aliceJoin)
	r.clock = 2000
	rejected := r.send("rejected topic", bob, "m.room.topic", "", `{"topic":"no"}`, c, r.pl, r.bobJoin)
	r.events[rejected].InternalMeta.Rejected = true
	rejectedName := r.send("rejected name", bob, "m.room.name", "", `{"name":"no"}`, c, r.pl, r.bobJoin)
	r.events[rejectedName].InternalMeta.Rejected = true

	t.Run("conflicted", func(t *testing.T) {
		r.t = t
		// By the clock the rejected topic would be replayed last and stay.
		r.expect(r.base(ok), r.base(ok), r.base(rejected))
	})
	t.Run("unconflicted", func(t *testing.T) {
		r.t = t
		// Both branches hold the rejected name; it is still left out.
		r.expect(r.base(ok), r.base(ok, rejectedName), r.base(rejected, rejectedName))
	})
}

func TestErrors(t *testing.T) {
	r := newPublicRoom(t, id.RoomV11)
	topic := r.send("topic", alice, "m.room.topic", "", `{"topic":"a"}`, r.create, r.pl, r.aliceJoin)
	// The loader knows neither dangling nor the event it cites.
	dangling := r.send("dangling", alice, "m.room.topic", "", `{"topic":"b"}`, r.create, r.pl, r.aliceJoin, "$unknown")
	badAuth := r.send("bad auth", alice, "m.room.topic", "", `{"topic":"c"}`, r.create, r.pl, r.aliceJoin, dangling)
	withDangling, withBadAuth := r.base(dangling), r.base(badAuth)
	delete(r.events, dangling)
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		version id.RoomVersion
		states  []stateres.StateMap
		load    stateres.Loader
		want    error
	}{
		{"room version 1", id.RoomV1, []stateres.StateMap{r.base()}, r.loader(), stateres.ErrUnsupportedVersion},
		{"no room version", "", []stateres.StateMap{r.base()}, r.loader(), stateres.ErrUnsupportedVersion},
		{"unknown room version", "org.example.99", []stateres.StateMap{r.base()}, r.loader(), stateres.ErrUnsupportedVersion},
		{"missing state event", id.RoomV11, []stateres.StateMap{r.base(topic), withDangling}, r.loader(), stateres.ErrMissingEvent},
		{"missing auth event", id.RoomV11, []stateres.StateMap{r.base(topic), withBadAuth}, r.loader(), stateres.ErrMissingEvent},
		{"loader failure", id.RoomV11, []stateres.StateMap{r.base(topic), r.base()},
			func(context.Context, []id.EventID) ([]*pdu.PDU, error) { return nil, errBroken }, errBroken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stateres.Resolve(ctx, tc.version, tc.states, tc.load)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, %v; want error %v", got, err, tc.want)
			}
		})
	}
}

var errBroken = errors.New("broken database")

func mapValues(s stateres.StateMap) []id.EventID {
	var ids []id.EventID
	for _, evID := range s {
		ids = append(ids, evID)
	}
	return ids
}

func TestRestrictedJoin(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version), func(t *testing.T) {
			r := newPublicRoom(t, version)
			c := r.create
			restricted := r.send("restricted", alice, "m.room.join_rules", "",
				`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!space:example.org"}]}`, c, r.pl, r.aliceJoin)
			// Authorize checks the join is signed by Alice's server (rule 5.2.1); the test
			// events are unsigned, so this also shows the resolver does not need real keys.
			join := r.send("frank joins via alice", frank, "m.room.member", frank.String(),
				`{"membership":"join","join_authorised_via_users_server":"@alice:example.org"}`, c, r.pl, restricted, r.aliceJoin)
			topic := r.send("topic", alice, "m.room.topic", "", `{"topic":"hi"}`, c, r.pl, r.aliceJoin)
			r.expect(r.base(restricted, join, topic), r.base(restricted, join), r.base(restricted, topic))
		})
	}
}

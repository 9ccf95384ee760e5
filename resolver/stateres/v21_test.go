package stateres_test

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

// The two problems MSC4297 (state resolution v2.1, room version 12) describes, built here
// from its prose, each resolved under room version 11 (the "state reset" the MSC fixes) and
// room version 12.

// Problem A: Alice set the join rules twice and then left. Bob's branch got an outdated state
// holding the first join rules; Carol's holds the second. Both agree Alice left.
func TestMSC4297ProblemA(t *testing.T) {
	for _, version := range versions {
		t.Run(string(version), func(t *testing.T) {
			r := newRoom(t, version)
			c := r.create
			aliceJoin := r.send("alice joins", alice, "m.room.member", alice.String(), `{"membership":"join"}`, c)
			pl := r.send("PL", alice, "m.room.power_levels", "", r.powerLevels(), c, aliceJoin)
			public := r.send("public", alice, "m.room.join_rules", "", `{"join_rule":"public"}`, c, pl, aliceJoin)
			bobJoin := r.send("bob joins", bob, "m.room.member", bob.String(), `{"membership":"join"}`, c, pl, public)
			carolJoin := r.send("carol joins", carol, "m.room.member", carol.String(), `{"membership":"join"}`, c, pl, public)
			invite := r.send("invite only", alice, "m.room.join_rules", "", `{"join_rule":"invite"}`, c, pl, aliceJoin)
			aliceLeaves := r.send("alice leaves", alice, "m.room.member", alice.String(), `{"membership":"leave"}`, c, pl, aliceJoin)

			common := []id.EventID{c, pl, bobJoin, carolJoin, aliceLeaves}
			bobs := r.state(append(common, public)...)
			carols := r.state(append(common, invite)...)
			// Only the join rules conflict, and both are power events. Version 2 replays them
			// on the unconflicted state, where Alice has left: both fail (rule 6), and the room
			// loses its join rules. Version 2.1 starts from nothing, so each is checked against
			// its own auth events (Alice joined): both pass, the later one stays.
			want := r.state(common...)
			if version == id.RoomV12 {
				want = carols
			}
			r.expect(want, bobs, carols)
		})
	}
}

// Problem B: Alice promoted Bob, who then promoted Carol. Eve's branch got an outdated state
// holding the first power levels, though a later event of it (Dave's join) cites Carol's
// promotion; Zara's state holds Carol's promotion.
func TestMSC4297ProblemB(t *testing.T) {
	for _, version := range versions {
		for _, daveCitesPL3 := range []bool{true, false} {
			name := string(version) + "/as in the MSC"
			if !daveCitesPL3 {
				name = string(version) + "/without Dave's join"
			}
			t.Run(name, func(t *testing.T) {
				r := newRoom(t, version)
				c := r.create
				aliceJoin := r.send("alice joins", alice, "m.room.member", alice.String(), `{"membership":"join"}`, c)
				pl1 := r.send("PL1", alice, "m.room.power_levels", "", r.powerLevels(), c, aliceJoin)
				public := r.send("public", alice, "m.room.join_rules", "", `{"join_rule":"public"}`, c, pl1, aliceJoin)
				bobJoin := r.send("bob joins", bob, "m.room.member", bob.String(), `{"membership":"join"}`, c, pl1, public)
				carolJoin := r.send("carol joins", carol, "m.room.member", carol.String(), `{"membership":"join"}`, c, pl1, public)
				pl2 := r.send("PL2: bob 50", alice, "m.room.power_levels", "", r.powerLevels(bob, 50), c, pl1, aliceJoin)
				pl3 := r.send("PL3: carol 50", bob, "m.room.power_levels", "", r.powerLevels(bob, 50, carol, 50), c, pl2, bobJoin)
				daveJoin := r.send("dave joins", dave, "m.room.member", dave.String(), `{"membership":"join"}`, c, pl3, public)

				common := []id.EventID{c, aliceJoin, public, bobJoin, carolJoin}
				if daveCitesPL3 {
					common = append(common, daveJoin)
				}
				eves := r.state(append(common, pl1)...)
				zaras := r.state(append(common, pl3)...)
				want := zaras
				if daveCitesPL3 && version == id.RoomV11 {
					// PL1 and PL3 conflict. Dave's join puts PL2 and PL3 in both auth chains, so
					// the auth difference is empty and version 2 replays PL1 then PL3 only: PL3
					// is checked against PL1, where Bob has 0, and fails. Version 2.1 adds the
					// conflicted state subgraph (PL3 → PL2 → PL1, and PL3 → Bob's join → PL1),
					// replays PL2 before PL3, and PL3 passes.
					want = eves
				}
				// Without Dave's join, PL2 is only in Zara's auth chain: the auth difference
				// brings it in, in both versions.
				r.expect(want, eves, zaras)
			})
		}
	}
}

package e2e

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
)

// TestForkedRoomScenario builds, on two Dendrites, a room whose DAG forks and merges and whose
// state both sides change at once, and checks that both servers end up with the same history,
// that it is big enough to matter, and that its membership and state changes are in it.
func TestForkedRoomScenario(t *testing.T) {
	a, b := startDendrite(t), startDendrite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	t0 := time.Now()
	fr, err := dendritepeer.BuildForkedRoom(ctx, a.peer, b.peer, dendritepeer.ForkedRoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(t0)
	t.Logf("built %s in %v: %d events; made %v; refused %v; state resolution undid %d kicks or bans, %d users mended",
		fr.RoomID, built.Round(time.Millisecond), fr.Events, fr.Made, fr.Refused, fr.Undone, fr.Mended)
	if fr.Events < 1000 {
		t.Errorf("%d events, want at least 1000", fr.Events)
	}
	if len(fr.Users[a.serverName]) == 0 || len(fr.Users[b.serverName]) == 0 {
		t.Errorf("users by server: %v", fr.Users)
	}

	// Both servers, each read by its own admin (joined throughout, so history visibility hides
	// nothing from them), show the same events.
	ids := func(d *dendrite) []string {
		got, err := d.peer.EventIDs(ctx, fr.RoomID, fr.Admins[d.serverName])
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	idsA, idsB := ids(a), ids(b)
	if len(idsA) != fr.Events || !slices.Equal(idsA, idsB) {
		t.Errorf("A shows %d events, B %d (build said %d); same set: %t", len(idsA), len(idsB), fr.Events, slices.Equal(idsA, idsB))
	}

	// The history holds what the rounds did, as B (which took part through federation) shows it.
	timeline, err := b.peer.Timeline(ctx, fr.RoomID, fr.Admins[b.serverName])
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range timeline {
		switch {
		case e.Type != "m.room.member":
			counts[e.Type]++
		case e.Membership == "leave" && e.StateKey != nil && *e.StateKey != e.Sender:
			counts["kick or unban"]++
		default:
			counts[e.Membership]++
		}
	}
	t.Logf("B's timeline: %d events: %v", len(timeline), counts)
	// Every event a server accepted is in the history, once: the room's creation adds its own
	// join, power levels, join rule and history visibility.
	m := fr.Made
	for kind, want := range map[string]int{
		"m.room.message":            m["message"],
		"m.room.topic":              m["topic"],
		"m.room.power_levels":       m["power_levels"] + 1,
		"m.room.join_rules":         m["join_rules"] + 1,
		"m.room.history_visibility": m["history_visibility"] + 1,
		"join":                      m["join"] + 1,
		"leave":                     m["leave"],
		"invite":                    m["invite"],
		"ban":                       m["ban"],
		"kick or unban":             m["kick"] + m["unban"],
	} {
		if counts[kind] != want {
			t.Errorf("%d %s in the history, want %d", counts[kind], kind, want)
		}
	}
	// Each kind of change happened, the kicks and bans included, and both servers' topics and
	// power levels.
	for _, kind := range []string{"message", "topic", "power_levels", "join_rules", "history_visibility",
		"join", "leave", "invite", "kick", "ban", "unban"} {
		if m[kind] == 0 {
			t.Errorf("no %s made", kind)
		}
	}
	if m["topic"] < 2 || m["power_levels"] < 3 {
		t.Errorf("topics %d, power levels %d: the concurrent changes are not all there", m["topic"], m["power_levels"])
	}

	// Both servers' current state is the same: the forks' state resolved alike.
	var states [2]map[string]string
	for i, d := range []*dendrite{a, b} {
		state, err := d.peer.StateEvents(ctx, fr.RoomID, fr.Admins[d.serverName])
		if err != nil {
			t.Fatal(err)
		}
		states[i] = map[string]string{}
		for _, e := range state {
			if e.StateKey != nil {
				states[i][e.Type+" "+*e.StateKey] = e.EventID
			}
		}
	}
	if !maps.Equal(states[0], states[1]) {
		t.Errorf("current state differs:\nA: %v\nB: %v", states[0], states[1])
	}
	t.Logf("current state: %d events on both servers", len(states[0]))
}

package resolver_test

import (
	"context"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// Each gap keeps what every peer answered the last time it was asked for it: the peer that
// holds the early history is down (its error is named), the other answered without the
// event. The answers go with the gaps once the peer is back and fills them.
func TestGapKeepsEachPeersAnswer(t *testing.T) {
	room, full, late := lateJoinRoom(t, 31)
	full.SetFaults(fullDown)
	h := newHarness(t, room, []*fixturepeer.Peer{full, late})
	h.syncUntilDone(5)

	ctx := context.Background()
	gaps, err := h.store.BackwardExtremities(ctx, string(room.ID), store.BackwardFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) == 0 {
		t.Fatal("no gap left with full.test down")
	}
	answers, err := h.store.GapAttempts(ctx, string(room.ID), gapIDs(gaps))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gaps {
		got := map[string]store.PeerAttempt{}
		for _, a := range answers[g.EventID] {
			got[a.Peer] = a
		}
		down, ok := got["full.test"]
		switch {
		case !ok:
			t.Errorf("gap %s: no answer of full.test in %+v", g.EventID, answers[g.EventID])
		case down.Outcome != "unreachable" && down.Outcome != "backed_off":
			t.Errorf("gap %s: full.test %+v; want unreachable or backed off", g.EventID, down)
		case down.Error == "" || down.At.IsZero():
			t.Errorf("gap %s: full.test's answer has no error or time: %+v", g.EventID, down)
		}
		if other, ok := got["late.test"]; !ok || other.Outcome == "unreachable" || other.Outcome == "backed_off" || other.Endpoint == "" {
			t.Errorf("gap %s: late.test %+v; want the answer of a peer that was asked and answered", g.EventID, other)
		}
	}

	full.ClearFaults()
	waitUntilReachable(t, h.res.Peers(), "full.test")
	r, err := h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
	if err != nil || !r.Converged {
		t.Fatalf("after full.test returned: %+v, %v", r, err)
	}
	answers, err = h.store.GapAttempts(ctx, string(room.ID), gapIDs(gaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 0 {
		t.Errorf("answers kept on filled gaps: %v", answers)
	}
	if err := h.store.CheckConsistency(ctx, string(room.ID)); err != nil {
		t.Error(err)
	}
}

// A gap no peer holds keeps each peer's refusal, by endpoint.
func TestUnfillableGapKeepsTheRefusals(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 32, Events: 80, Linear: true})
	withheld := room.Events[40].ID
	a := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldAllBut(withheld)))
	h := newHarness(t, room, []*fixturepeer.Peer{a})
	last := h.syncUntilDone(5)
	if r := last[len(last)-1]; r.Unfillable != 1 {
		t.Fatalf("%+v; want the withheld event unfillable", r)
	}
	answers, err := h.store.GapAttempts(context.Background(), string(room.ID), []string{string(withheld)})
	if err != nil {
		t.Fatal(err)
	}
	got := answers[string(withheld)]
	if len(got) != 1 || got[0].Peer != a.ServerName() || got[0].Endpoint != "event" || got[0].Outcome != "not_found" ||
		!strings.Contains(got[0].Error, "404") {
		t.Errorf("answers on the withheld event: %+v; want %s's /event 404", got, a.ServerName())
	}
}

func gapIDs(gaps []store.BackwardExtremity) []string {
	ids := make([]string, len(gaps))
	for i, g := range gaps {
		ids[i] = g.EventID
	}
	return ids
}

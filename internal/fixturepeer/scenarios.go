package fixturepeer

import "testing"

// PartialPeers is the partial-peer scenario: the room's users are on full.test and late.test;
// full.test holds the whole history, late.test joined late and holds only the events from
// index 300 on, up to its own user's last message. Each peer serves its own key, and
// late.test, like Dendrite, vouches for nobody else's: with full.test down, full.test's events
// cannot be verified, and only full.test can fill the early history.
type PartialPeers struct {
	Room       *Room
	Full, Late *Peer
}

// StartPartialPeers generates the scenario's linear 600-event room for seed and starts both
// peers; they close when tb ends.
func StartPartialPeers(tb testing.TB, seed uint64) PartialPeers {
	tb.Helper()
	room := MustGenerate(tb, RoomOptions{Seed: seed, Events: 600, Linear: true, Origins: []string{"full.test", "late.test"}})
	lastOfLate := len(room.Events) - 1
	for room.Events[lastOfLate].Origin != "late.test" {
		lastOfLate--
	}
	if lastOfLate < 400 {
		tb.Fatalf("seed %d: late.test's last event is at %d; want a room where it sends late", seed, lastOfLate)
	}
	full := Start(tb, room, WithServerName("full.test"), WithSigningKey(OriginKey("full.test")))
	late := Start(tb, room, WithServerName("late.test"), WithSigningKey(OriginKey("late.test")),
		WithHold(HoldIndexes(300, lastOfLate+1)),
		WithFaults(Fault{Kind: FaultError, Endpoint: EndpointQueryKeys, Status: 404, ErrCode: "M_NOT_FOUND"}))
	return PartialPeers{Room: room, Full: full, Late: late}
}

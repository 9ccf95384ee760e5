package resolver

import (
	"fmt"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/stateres"
)

// TestStateCachesShareABudget: past the budget, the rooms used longest ago forget their
// cached states and events, down to half the budget; a room being computed keeps its own.
func TestStateCachesShareABudget(t *testing.T) {
	defer func(b int64) { stateCacheBudget = b }(stateCacheBudget)
	stateCacheBudget = 1000

	r := &Resolver{}
	fill := func(room string, entries int) *roomStates {
		rs := r.roomStates(room)
		c := &stateComputation{rs: rs}
		state := stateres.StateMap{}
		for i := range entries {
			state[pdu.StateKey{Type: "m.room.member", StateKey: fmt.Sprint(i)}] = id.EventID(fmt.Sprint("$", i))
		}
		c.cache(1, state, 0)
		rs.pdus["$create"] = &pdu.PDU{}
		rs.pduCount.add(1)
		return rs
	}
	oldest, busy, older, newest := fill("!a:x", 400), fill("!b:x", 100), fill("!c:x", 400), fill("!d:x", 100)
	if got := r.cachedEntries.Load(); got != 1004 {
		t.Fatalf("cached %d entries, want 1,004", got)
	}
	busy.mu.Lock() // in a computation
	r.trimStateCaches()
	busy.mu.Unlock()

	for name, c := range map[string]struct {
		rs   *roomStates
		kept bool
	}{"oldest": {oldest, false}, "busy": {busy, true}, "older": {older, false}, "newest": {newest, true}} {
		if kept := len(c.rs.groups) > 0 && len(c.rs.pdus) > 0; kept != c.kept {
			t.Errorf("%s room kept its caches: %t, want %t", name, kept, c.kept)
		}
	}
	if got := r.cachedEntries.Load(); got != 202 {
		t.Errorf("cached %d entries after the trim, want 202 (the busy and newest rooms')", got)
	}
	r.trimStateCaches() // under the budget: nothing more
	if len(newest.groups) == 0 {
		t.Error("a room under the budget forgot its caches")
	}
}

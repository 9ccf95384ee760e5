package dendrite

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// NetsplitOptions shape the room SeedNetsplit makes.
type NetsplitOptions struct {
	// Count m.room.message events each server sends while it cannot reach the other: the
	// length of each branch.
	Count int
	// Parallel messages are sent at a time (default 8).
	Parallel int
	// User is the localpart used on both servers (DefaultUser when empty).
	User string
	// Wait bounds the wait, once both servers are up again, until each shows both branches
	// (default 5 minutes, and 60 ms more an event of a branch).
	Wait time.Duration
}

// NetsplitRoom is what SeedNetsplit made.
type NetsplitRoom struct {
	RoomID string
	// Events are the room's event IDs, as both servers' client APIs show them in the end.
	Events []string
	// BranchA and BranchB are the messages each server sent while split, in sending order.
	BranchA, BranchB []string
}

// netsplitStall is how long the wait for both branches goes without either server showing
// more before it restarts the servers, and netsplitNudges how many times at most.
const (
	netsplitStall  = 45 * time.Second
	netsplitNudges = 3
	netsplitPoll   = 2 * time.Second
)

// SeedNetsplit makes a room with two long concurrent branches that both a and b hold whole,
// the way a netsplit does: a creates a public, world-readable room of version 11, b joins
// it and reads its history (so that b holds it all); then b is stopped and a sends Count
// messages, a is stopped and b, started again, sends Count messages; then both start again
// and each delivers its branch to the other, until both client APIs show every event of both
// branches. Both servers must be running at the start, started from their Dir with their
// ports (Start needs them again); they are running at the end.
//
// Dendrite v0.13.8 quirks this works around (federationapi/queue/destinationqueue.go):
// events sent while the destination is down are kept in the database; but a queue whose
// memory (128 PDUs) is full when it starts sending reads the database once, finds no room,
// marks itself not overflowed and never reads the rest, so only the first 128 events would
// arrive. A restarted server rehydrates its queues from the database (federationapi/queue/
// queue.go, NewOutgoingQueues, 5 s after start), which reads it page by page; so both servers
// are restarted before they meet again, and whenever the wait stalls. A restarted queue sends
// the events in no particular order within a page (GetPendingPDUs returns a map); the
// receiver fills what comes out of order with /get_missing_events or /state_ids and the later
// transactions, so it takes a while but ends whole. Our polling reuses one login a server: a
// login adds a device, whose device-list EDU would keep a queue busy.
func SeedNetsplit(ctx context.Context, a, b *Peer, o NetsplitOptions) (NetsplitRoom, error) {
	var r NetsplitRoom
	if o.Count < 1 {
		return r, fmt.Errorf("seed netsplit: count must be at least 1, not %d", o.Count)
	}
	if o.Parallel < 1 {
		o.Parallel = 8
	}
	if o.Wait <= 0 {
		o.Wait = 5*time.Minute + time.Duration(o.Count)*60*time.Millisecond
	}
	fail := func(format string, args ...any) (NetsplitRoom, error) {
		return r, fmt.Errorf("seed netsplit: "+format, args...)
	}
	ca, err := a.Login(ctx, o.User)
	if err != nil {
		return fail("%w", err)
	}
	cb, err := b.Login(ctx, o.User)
	if err != nil {
		return fail("%w", err)
	}

	// The room, joined by b, whose history b reads through /messages (backfilling it from a)
	// so that it never needs a for it while a is down.
	room, err := ca.createRoom(ctx, "11", "", "")
	if err != nil {
		return fail("%w", err)
	}
	r.RoomID = room
	if err := cb.Join(ctx, room, a.ServerName()); err != nil {
		return fail("%w", err)
	}
	base, err := cb.listEvents(ctx, room)
	if err != nil {
		return fail("b reading the room's history: %w", err)
	}
	baseIDs := eventIDs(base)
	if len(base) == 0 || base[0].Type != "m.room.create" {
		return fail("b shows %d events before the split, not from m.room.create", len(base))
	}
	if err := ca.waitVisible(ctx, room, baseIDs, 2*time.Minute); err != nil {
		return fail("a before the split: %w", err)
	}
	a.logf("netsplit: room %s, %d events before the split", room, len(base))

	// Branch A, b down.
	if err := b.Stop(); err != nil {
		return fail("%w", err)
	}
	if r.BranchA, err = ca.Send(ctx, room, o.Count, o.Parallel); err != nil {
		return fail("a sending its branch: %w", err)
	}
	if err := ca.waitVisible(ctx, room, r.BranchA, 2*time.Minute); err != nil {
		return fail("a's branch: %w", err)
	}
	if err := a.Stop(); err != nil {
		return fail("%w", err)
	}
	// Branch B, a down.
	if err := b.Start(ctx); err != nil {
		return fail("%w", err)
	}
	if r.BranchB, err = cb.Send(ctx, room, o.Count, o.Parallel); err != nil {
		return fail("b sending its branch: %w", err)
	}
	if err := cb.waitVisible(ctx, room, r.BranchB, 2*time.Minute); err != nil {
		return fail("b's branch: %w", err)
	}
	// b restarts too, so that its queue to a starts from the database (see above).
	if err := b.Stop(); err != nil {
		return fail("%w", err)
	}
	if err := startBoth(ctx, a, b); err != nil {
		return fail("%w", err)
	}

	want := slices.Concat(baseIDs, r.BranchA, r.BranchB)
	events, err := waitUnion(ctx, a, b, ca, cb, room, want, o.Wait)
	if err != nil {
		return fail("%w", err)
	}
	r.Events = events
	return r, nil
}

func startBoth(ctx context.Context, a, b *Peer) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	return b.Start(ctx)
}

func eventIDs(events []event) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.EventID
	}
	return ids
}

// missingOf counts the IDs of want that events lacks.
func missingOf(events []event, want []string) int {
	have := make(map[string]bool, len(events))
	for _, e := range events {
		have[e.EventID] = true
	}
	n := 0
	for _, id := range want {
		if !have[id] {
			n++
		}
	}
	return n
}

// waitUnion waits until both servers' /messages show every event of want and the same
// events, restarting both (at most netsplitNudges times) when neither shows more for
// netsplitStall; it returns the events, oldest first as a shows them.
func waitUnion(ctx context.Context, a, b *Peer, ca, cb *Client, room string, want []string, wait time.Duration) ([]string, error) {
	t0 := time.Now()
	deadline := t0.Add(wait)
	lastProgress, lastLog := t0, t0
	best := [2]int{-1, -1}
	nudges := 0
	// shown are the events of a server once it shows all of want; it is not listed again.
	var shown [2][]event
	maxPolls := int(wait/netsplitPoll) + 1
	for poll := 0; poll <= maxPolls; poll++ {
		var missing [2]int
		for i, c := range []*Client{ca, cb} {
			if shown[i] != nil {
				continue // it showed every event already
			}
			events, err := c.listEvents(ctx, room)
			if err != nil {
				// A server still filling a gap may fail a page; the next poll asks again.
				missing[i] = len(want)
				c.logf("netsplit: listing the room: %v", err)
				continue
			}
			if missing[i] = missingOf(events, want); missing[i] == 0 {
				shown[i] = events
			}
		}
		if missing == [2]int{} {
			idsA, idsB := eventIDs(shown[0]), eventIDs(shown[1])
			sa, sb := slices.Sorted(slices.Values(idsA)), slices.Sorted(slices.Values(idsB))
			if !slices.Equal(sa, sb) {
				return nil, fmt.Errorf("both servers show every sent event, but not the same events: a %d, b %d", len(sa), len(sb))
			}
			a.logf("netsplit: both servers show all %d events (%d sent) after %v, %d restarts",
				len(idsA), len(want), time.Since(t0).Round(time.Millisecond), nudges)
			return idsA, nil
		}
		now := time.Now()
		for i := range missing {
			if best[i] < 0 || missing[i] < best[i] {
				best[i] = missing[i]
				lastProgress = now
			}
		}
		if now.Sub(lastLog) >= 10*time.Second {
			a.logf("netsplit: a lacks %d, b lacks %d of the %d events, after %v", missing[0], missing[1], len(want), now.Sub(t0).Round(time.Second))
			lastLog = now
		}
		if now.After(deadline) {
			return nil, fmt.Errorf("after %v, a still lacks %d and b %d of the %d events", wait, missing[0], missing[1], len(want))
		}
		if now.Sub(lastProgress) >= netsplitStall {
			if nudges >= netsplitNudges {
				return nil, fmt.Errorf("no progress in %v after %d restarts: a lacks %d, b lacks %d of the %d events",
					netsplitStall, nudges, missing[0], missing[1], len(want))
			}
			nudges++
			a.logf("netsplit: no progress in %v (a lacks %d, b %d): restarting both, so that their queues read the database again",
				netsplitStall, missing[0], missing[1])
			if err := a.Stop(); err != nil {
				return nil, err
			}
			if err := b.Stop(); err != nil {
				return nil, err
			}
			if err := startBoth(ctx, a, b); err != nil {
				return nil, err
			}
			lastProgress, shown = time.Now(), [2][]event{}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(netsplitPoll):
		}
	}
	return nil, fmt.Errorf("both branches not shown on both servers after %d polls", maxPolls)
}

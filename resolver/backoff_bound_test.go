package resolver

import (
	"errors"
	"testing"
	"time"

	"github.com/roomsync/roomsync/resolver/federation"
)

// TestFailuresWithin: the bound against a caller that asks as often as it may (every 25 ms
// of a fake clock, a hot loop) a peer that never answers, for windows from a second to an
// hour: what gets through never exceeds FailuresWithin, and comes close to it (the jitter
// makes waits at most 1.5× the shortest); the bound grows with the logarithm of the window
// until the back-off reaches its 5-minute cap, then linearly, one request in 4 to 6 minutes.
func TestFailuresWithin(t *testing.T) {
	for _, c := range []struct {
		window time.Duration
		want   int // FailuresWithin, worked out by hand from 1.6 s, 3.2 s, 6.4 s, … (80% of 2 s doubling)
	}{
		{0, 1},
		{time.Second, 1},
		{1600 * time.Millisecond, 2},
		{5 * time.Second, 3},
		{30 * time.Second, 5}, // 1.6+3.2+6.4+12.8 = 24 s
		{time.Minute, 6},      // +25.6 = 49.6 s
		{10 * time.Minute, 9}, // +51.2+102.4+204.8 (= 408 s), then 240 s each (the 5-minute cap)
		{time.Hour, 22},       // 408 s + 13×240 s = 3528 s
	} {
		if got := FailuresWithin(c.window); got != c.want {
			t.Errorf("FailuresWithin(%v) = %d, want %d", c.window, got, c.want)
		}
		for _, outcome := range []federation.Outcome{federation.OutcomeUnreachable, federation.OutcomeServerError} {
			// backoff draws its jitter from the global source: each run differs.
			for range 5 {
				// The longest waits are 1.5× the shortest (±20% jitter): at least what the
				// shortest ones let through in two thirds of the window gets through.
				got, least := hotLoopFailures(c.window, outcome), FailuresWithin(c.window*2/3)
				if got > FailuresWithin(c.window) || got < least {
					t.Fatalf("%v %s: %d requests got through, want %d to %d", c.window, outcome, got, least, FailuresWithin(c.window))
				}
			}
		}
	}
}

// hotLoopFailures is how many requests to one endpoint of a peer failing with outcome a
// caller makes within window when it asks every 25 ms and sends whenever the peer set lets
// it, other endpoints answering in between (they reset no back-off of this one).
func hotLoopFailures(window time.Duration, outcome federation.Outcome) int {
	clock := time.Unix(1_000_000, 0)
	s := NewPeerSet([]string{"b"})
	s.now = func() time.Time { return clock }
	end, sent := clock.Add(window), 0
	for ; !clock.After(end); clock = clock.Add(25 * time.Millisecond) {
		if len(s.Available("make_join")) == 0 {
			continue
		}
		s.Record("b", "make_join", outcome, 0, errors.New("down"))
		sent++
		if outcome != federation.OutcomeUnreachable {
			s.Record("b", "event", federation.OutcomeOK, 0, nil)
		}
	}
	return sent
}

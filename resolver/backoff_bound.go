package resolver

import "time"

// FailuresWithin is the most requests that can fail in a row within d against a peer that
// does not answer, however often passes come: the first goes at once, and each next one no
// sooner than the shortest back-off the failures before it earned (peerBackoffBase doubling
// up to peerBackoffMax, less the 20% jitter). A peer that cannot be reached is backed off
// whole, so this bounds its requests to every endpoint of every room together; a peer that
// answers one endpoint badly is backed off for that endpoint of that room, so it bounds each
// such endpoint of each room. Tests
// compare what the manager's metrics count with it: more would be a retry storm.
func FailuresWithin(d time.Duration) int {
	n, elapsed := 1, time.Duration(0)
	// Bounded: every wait is at least 80% of peerBackoffBase.
	for elapsed <= d {
		elapsed += shortestBackoff(peerBackoffBase, peerBackoffMax, n)
		if elapsed > d {
			break
		}
		n++
	}
	return n
}

// shortestBackoff is the least that backoff returns for attempt: its jitter taken off.
func shortestBackoff(base, maxDelay time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d - d/5
}

package resolver

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/roomsync/roomsync/resolver/federation"
)

func TestPeerSetOrderAndBackoff(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	s := NewPeerSet([]string{"a", "b", "c"})
	s.now = func() time.Time { return clock }
	boom := errors.New("boom")

	steps := []struct {
		name    string
		record  func()
		advance time.Duration
		want    []string
	}{
		{"user order at first", func() {}, 0, []string{"a", "b", "c"}},
		{"a failing is backed off", func() { s.Record("a", federation.OutcomeUnreachable, 0, boom) }, 0, []string{"b", "c"}},
		{"not found is an answer, not a failure", func() { s.Record("b", federation.OutcomeNotFound, 0, boom) }, 0, []string{"b", "c"}},
		{"a returns after its back-off, behind the peers without failures", func() {}, 3 * time.Second, []string{"b", "c", "a"}},
		{"a success clears the failures", func() { s.Record("a", federation.OutcomeOK, 0, nil) }, 0, []string{"a", "b", "c"}},
		{"rate limit honours retry_after", func() { s.Record("c", federation.OutcomeRateLimited, 20*time.Second, boom) }, 10 * time.Second, []string{"a", "b"}},
		{"and ends after it", func() {}, 11 * time.Second, []string{"a", "b", "c"}},
		{"cancellation says nothing of the peer", func() { s.Record("a", federation.OutcomeCanceled, 0, boom) }, 0, []string{"a", "b", "c"}},
		{"unknown peers are ignored", func() { s.Record("zzz", federation.OutcomeServerError, 0, boom) }, 0, []string{"a", "b", "c"}},
	}
	for _, st := range steps {
		st.record()
		clock = clock.Add(st.advance)
		if got := s.Available(); !slices.Equal(got, st.want) {
			t.Fatalf("%s: Available() = %v, want %v", st.name, got, st.want)
		}
	}
}

func TestPeerBackoffGrowsAndCaps(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	s := NewPeerSet([]string{"a"})
	s.now = func() time.Time { return clock }
	var last time.Duration
	for i := 1; i <= 12; i++ {
		s.Record("a", federation.OutcomeServerError, 0, errors.New("500"))
		st := s.Status()[0]
		wait := st.BackoffUntil.Sub(clock)
		if st.Healthy || st.ConsecutiveFailures != i || st.LastError != "500" {
			t.Fatalf("after %d failures: %+v", i, st)
		}
		if wait > peerBackoffMax+peerBackoffMax/5 {
			t.Fatalf("back-off %v passes the cap", wait)
		}
		if i <= 5 && wait < last {
			t.Fatalf("back-off shrank: %v after %v", wait, last)
		}
		last = wait
	}
	if next := s.NextAvailable(); !next.After(clock) {
		t.Errorf("NextAvailable = %v, want after now", next)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for attempt := 1; attempt <= 20; attempt++ {
		for range 50 {
			d := backoff(time.Second, time.Minute, attempt)
			nominal := min(time.Second<<min(attempt-1, 30), time.Minute)
			if d < nominal-nominal/5 || d > nominal+nominal/5 {
				t.Fatalf("backoff(attempt %d) = %v, want %v ±20%%", attempt, d, nominal)
			}
		}
	}
}

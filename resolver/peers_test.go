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
		name     string
		record   func()
		advance  time.Duration
		endpoint string
		want     []string
	}{
		{"user order at first", func() {}, 0, "backfill", []string{"a", "b", "c"}},
		{"a unreachable is backed off whole", func() { s.Record("a", "backfill", federation.OutcomeUnreachable, 0, boom) }, 0, "event", []string{"b", "c"}},
		{"not found is an answer, not a failure", func() { s.Record("b", "event", federation.OutcomeNotFound, 0, boom) }, 0, "event", []string{"b", "c"}},
		{"a returns after its back-off, behind the peers without failures", func() {}, 3 * time.Second, "event", []string{"b", "c", "a"}},
		{"a success clears the peer's failures", func() { s.Record("a", "event", federation.OutcomeOK, 0, nil) }, 0, "event", []string{"a", "b", "c"}},
		{"but not its backfill endpoint's", func() {}, 0, "backfill", []string{"b", "c", "a"}},
		{"a server error backs off the endpoint only", func() { s.Record("b", "event", federation.OutcomeServerError, 0, boom) }, 0, "event", []string{"a", "c"}},
		{"other endpoints of b still go", func() {}, 0, "make_join", []string{"a", "b", "c"}},
		{"rate limit honours retry_after, for every endpoint", func() { s.Record("c", "event", federation.OutcomeRateLimited, 20*time.Second, boom) }, 10 * time.Second, "make_join", []string{"a", "b"}},
		{"and ends after it", func() {}, 11 * time.Second, "make_join", []string{"a", "b", "c"}},
		{"cancellation says nothing of the peer", func() { s.Record("a", "event", federation.OutcomeCanceled, 0, boom) }, 0, "make_join", []string{"a", "b", "c"}},
		{"unknown peers are ignored", func() { s.Record("zzz", "event", federation.OutcomeServerError, 0, boom) }, 0, "make_join", []string{"a", "b", "c"}},
	}
	for _, st := range steps {
		st.record()
		clock = clock.Add(st.advance)
		if got := s.Available(st.endpoint); !slices.Equal(got, st.want) {
			t.Fatalf("%s: Available(%s) = %v, want %v", st.name, st.endpoint, got, st.want)
		}
	}
}

// An endpoint that keeps failing is backed off longer each time, even while the peer's other
// endpoints answer in between (a peer that serves make_join and fails every /event).
func TestEndpointBackoffSurvivesOtherAnswers(t *testing.T) {
	for _, outcome := range []federation.Outcome{federation.OutcomeServerError, federation.OutcomeBadResponse, federation.OutcomeUnreachable} {
		t.Run(string(outcome), func(t *testing.T) {
			clock := time.Unix(1_000_000, 0)
			s := NewPeerSet([]string{"a"})
			s.now = func() time.Time { return clock }
			var last time.Duration
			for i := 1; i <= 6; i++ {
				s.Record("a", "make_join", federation.OutcomeOK, 0, nil)
				s.Record("a", "event", outcome, 0, errors.New("event failed"))
				s.Record("a", "make_join", federation.OutcomeOK, 0, nil)
				if got := s.Available("event"); len(got) != 0 {
					t.Fatalf("round %d: /event available at once after a failure: %v", i, got)
				}
				if got := s.Available("make_join"); !slices.Equal(got, []string{"a"}) {
					t.Fatalf("round %d: make_join = %v, want [a]", i, got)
				}
				wait := s.NextAvailable().Sub(clock)
				if i > 1 && wait <= last*6/5 {
					t.Fatalf("round %d: /event back-off %v did not grow from %v", i, wait, last)
				}
				st := s.Status()[0]
				if st.Healthy || st.LastError != "event failed" {
					t.Fatalf("round %d: status %+v, want unhealthy with the /event error", i, st)
				}
				last = wait
				clock = clock.Add(wait)
			}
		})
	}
}

// A peer that answers after failing to marks a recovery: RetrySince moves to it, so what
// waited for the peer is due again; a new peer set starts from its own creation.
func TestPeerRecovery(t *testing.T) {
	s := NewPeerSet([]string{"a", "b"})
	start := s.RetrySince()
	clock := start.Add(time.Second)
	s.now = func() time.Time { return clock }
	s.Record("b", "backfill", federation.OutcomeOK, 0, nil)
	if got := s.RetrySince(); !got.Equal(start) {
		t.Fatalf("an answer from a healthy peer moved RetrySince to %v", got)
	}
	s.Record("a", "make_join", federation.OutcomeUnreachable, 0, errors.New("refused"))
	clock = clock.Add(10 * time.Second)
	s.Record("b", "backfill", federation.OutcomeServerError, 0, errors.New("500"))
	if got := s.RetrySince(); !got.Equal(start) {
		t.Fatalf("an endpoint failure of a reachable peer moved RetrySince to %v", got)
	}
	s.Record("a", "make_join", federation.OutcomeOK, 0, nil)
	if got := s.RetrySince(); !got.Equal(clock) {
		t.Fatalf("RetrySince = %v, want the recovery at %v", got, clock)
	}
}

func TestPeerBackoffGrowsAndCaps(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	s := NewPeerSet([]string{"a"})
	s.now = func() time.Time { return clock }
	var last time.Duration
	for i := 1; i <= 12; i++ {
		s.Record("a", "backfill", federation.OutcomeServerError, 0, errors.New("500"))
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

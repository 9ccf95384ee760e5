package store

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The peers' answers on a gap: the latest per peer, written with the attempt, read back per
// gap, and gone with the gap when the event arrives (the room then checks consistent).
func TestGapAttempts(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			chain := linearChain(room, 30, 100)
			mustInsert(t, s, chain[10:20])
			mustInsert(t, s, chain[25:30])
			low, high := chain[9].ID, chain[24].ID
			at := time.UnixMilli(1_700_000_000_000)
			down := PeerAttempt{Peer: "a.example", Endpoint: "backfill", Outcome: "unreachable", Error: "dial tcp: connection refused", At: at}
			none := PeerAttempt{Peer: "b.example", Endpoint: "backfill", Outcome: "not_found", Error: "M_NOT_FOUND"}
			if err := s.RecordAttemptFailure(ctx, room, high, "waiting for peer a.example (unreachable)", at.Add(time.Hour), down, none); err != nil {
				t.Fatal(err)
			}
			// The next attempt replaces a.example's answer and keeps b.example's.
			later := PeerAttempt{Peer: "a.example", Endpoint: "event", Outcome: "server_error", Error: "500", At: at.Add(time.Minute)}
			if err := s.MarkUnfillable(ctx, room, high, "no peer holds it", at.Add(2*time.Hour), later); err != nil {
				t.Fatal(err)
			}
			if err := s.RecordAttemptFailure(ctx, room, low, "x", at, PeerAttempt{Peer: "c.example", Outcome: "backed_off"}); err != nil {
				t.Fatal(err)
			}
			got, err := s.GapAttempts(ctx, room, []string{high, low, "$not-a-gap"})
			if err != nil {
				t.Fatal(err)
			}
			none.At = got[high][1].At // recorded as now
			if none.At.IsZero() || time.Since(none.At) > time.Minute {
				t.Errorf("an answer without a time was recorded at %v, want now", none.At)
			}
			want := map[string][]PeerAttempt{
				high: {later, none},
				low:  {{Peer: "c.example", Outcome: "backed_off", At: got[low][0].At}},
			}
			if !maps.EqualFunc(got, want, slices.Equal) {
				t.Fatalf("GapAttempts:\n got %+v\nwant %+v", got, want)
			}

			// An answer on an event that is no gap is not kept.
			if err := s.RecordAttemptFailure(ctx, room, "$nope", "x", at, down); !errors.Is(err, ErrNotFound) {
				t.Fatalf("an answer on a non-gap: %v", err)
			}
			// A long error is cut, on a rune boundary, and bytes a backend refuses go.
			long := PeerAttempt{Peer: "d.example", Outcome: "bad_response", Error: "\x00\xff" + strings.Repeat("é", 3000)}
			if err := s.RecordAttemptFailure(ctx, room, low, "x", at, long); err != nil {
				t.Fatal(err)
			}
			got, _ = s.GapAttempts(ctx, room, []string{low})
			if e := got[low][1].Error; len(e) > MaxPeerAttemptError || !utf8.ValidString(e) || strings.Contains(e, "\x00") {
				t.Errorf("an error of 6002 bytes kept as %d bytes, valid UTF-8 %t", len(e), utf8.ValidString(e))
			}

			// Filling a gap removes its answers with it; the other gap keeps its own.
			mustInsert(t, s, chain[20:25])
			got, err = s.GapAttempts(ctx, room, []string{high, low})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := got[high]; ok || len(got[low]) != 2 {
				t.Fatalf("after filling %s: %+v", high, got)
			}
			if err := s.CheckConsistency(ctx, room); err != nil {
				t.Fatal(err)
			}
			// An answer left behind (written around the store) is what the check reports.
			if _, err := s.wdb.ExecContext(ctx, s.d.rebind(`INSERT INTO gap_attempts
				(room_id, event_id, peer, endpoint, outcome, error, attempted_at) VALUES (?, ?, 'x', '', 'ok', '', 0)`),
				room, high); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckConsistency(ctx, room); err == nil {
				t.Error("an answer on a filled gap passed the consistency check")
			}
		})
	}
}

// Who points at a gap: the held events listing it as a prev, sorted and limited.
func TestReferencingEvents(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			// $b, $c and $d all name the missing $a; $e names $b.
			mustInsert(t, s, []Event{
				makeEvent(room, "$d", 5, []string{"$a"}, 50),
				makeEvent(room, "$b", 5, []string{"$a"}, 50),
				makeEvent(room, "$c", 5, []string{"$a", "$x"}, 50),
				makeEvent(room, "$e", 6, []string{"$b"}, 50),
			})
			for _, c := range []struct {
				limit int
				want  map[string][]string
			}{
				{10, map[string][]string{"$a": {"$b", "$c", "$d"}, "$x": {"$c"}}},
				{2, map[string][]string{"$a": {"$b", "$c"}, "$x": {"$c"}}},
			} {
				got, err := s.ReferencingEvents(ctx, room, []string{"$a", "$x", "$e"}, c.limit)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.EqualFunc(got, c.want, slices.Equal) {
					t.Errorf("limit %d: %v, want %v", c.limit, got, c.want)
				}
			}
			if _, err := s.ReferencingEvents(ctx, room, []string{"$a"}, 0); err == nil {
				t.Error("limit 0 accepted")
			}
		})
	}
}

// StreamDAG gives every event in topological order with its child count, within the depth
// bounds, across pages.
func TestStreamDAG(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			ctx := t.Context()
			events := forkyDAG(room, dagPageSize+700, 20, 5)
			for _, batch := range batches(events, 500, 6) {
				mustInsert(t, s, batch)
			}
			children := map[string]int{}
			for _, e := range events {
				for _, p := range e.PrevEvents {
					children[p]++
				}
			}
			for _, c := range []struct {
				name     string
				min, max int64
			}{
				{"all", 0, 0},
				{"window", 40, 90},
				{"from a depth", 100, 0},
			} {
				var want []DAGEvent
				for _, e := range topological(events) {
					if e.Depth >= c.min && (c.max == 0 || e.Depth <= c.max) {
						want = append(want, DAGEvent{ID: e.ID, Depth: e.Depth, OriginServerTS: e.OriginServerTS, Type: e.Type,
							StateKey: e.StateKey, PrevEvents: e.PrevEvents, Children: children[e.ID]})
					}
				}
				var got []DAGEvent
				if err := s.StreamDAG(ctx, room, c.min, c.max, func(e DAGEvent) error {
					got = append(got, e)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("%s: %d events, want %d", c.name, len(got), len(want))
				}
				for i := range want {
					g, w := got[i], want[i]
					if g.ID != w.ID || g.Depth != w.Depth || g.Children != w.Children || !slices.Equal(g.PrevEvents, w.PrevEvents) ||
						g.Type != w.Type || (g.StateKey == nil) != (w.StateKey == nil) || g.OriginServerTS != w.OriginServerTS {
						t.Fatalf("%s: event %d is %+v, want %+v", c.name, i, g, w)
					}
				}
			}
			stop := errors.New("stop")
			n := 0
			if err := s.StreamDAG(ctx, room, 0, 0, func(DAGEvent) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
				t.Errorf("fn's error: %v after %d calls", err, n)
			}
		})
	}
}

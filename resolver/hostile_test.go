package resolver_test

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
)

// outcomeRecorder is an Observer that keeps the outcome of every request, by peer and
// endpoint.
type outcomeRecorder struct {
	mu       sync.Mutex
	outcomes map[string]map[string][]federation.Outcome
}

func (o *outcomeRecorder) Request(peer, endpoint string, outcome federation.Outcome, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.outcomes == nil {
		o.outcomes = map[string]map[string][]federation.Outcome{}
	}
	if o.outcomes[peer] == nil {
		o.outcomes[peer] = map[string][]federation.Outcome{}
	}
	o.outcomes[peer][endpoint] = append(o.outcomes[peer][endpoint], outcome)
}

func (*outcomeRecorder) Stored(string, int)                          {}
func (*outcomeRecorder) Rejected(string, resolver.RejectReason, int) {}

func (o *outcomeRecorder) of(peer string) map[string][]federation.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]federation.Outcome{}
	for ep, outcomes := range o.outcomes[peer] {
		out[ep] = append([]federation.Outcome(nil), outcomes...)
	}
	return out
}

func withObserver(o resolver.Observer) harnessOption {
	return func(c *resolver.Config, _ *federation.Options) { c.Observer = o }
}

// hostileHeapBound is the most the heap may grow during a pass against a peer that floods
// its answers. Decoded whole, one flooded /backfill answer took gigabytes.
const hostileHeapBound = 64 << 20

// A peer that answers with millions of PDUs, or PDUs past the spec's size, costs a pass no
// more memory than what it asked for: the answers are refused as bad responses.
func TestFloodingPeerIsRefusedInBoundedMemory(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 31, Events: 200})
	flood := func(ep fixturepeer.Endpoint, n int) fixturepeer.Fault {
		return fixturepeer.Fault{Kind: fixturepeer.FaultManyPDUs, Endpoint: ep, Count: n}
	}

	// Alone: the peer's heads and /event are honest, so a pass learns of the room from it
	// and asks it for the events before what it holds, and that answer is 20 million PDUs
	// (60 MiB): /get_missing_events when the store holds the room's first half (the events
	// between), /backfill when it holds nothing (the events before the head).
	for _, tc := range []struct {
		endpoint fixturepeer.Endpoint
		prefix   bool
	}{
		{fixturepeer.EndpointMissingEvents, true},
		{fixturepeer.EndpointBackfill, false},
	} {
		t.Run("alone, "+string(tc.endpoint), func(t *testing.T) {
			var h *harness
			hostile := fixturepeer.Start(t, room, fixturepeer.WithFaults(flood(tc.endpoint, 20_000_000)))
			rec := &outcomeRecorder{}
			if tc.prefix {
				prefix := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, 100)))
				first := newHarness(t, room, []*fixturepeer.Peer{prefix})
				first.syncUntilDone(10)
				h = newHarnessOnStore(t, room, []*fixturepeer.Peer{hostile}, first.store, withObserver(rec))
			} else {
				h = newHarness(t, room, []*fixturepeer.Peer{hostile}, withObserver(rec))
			}
			var res resolver.RoomResult
			var err error
			growth := fixturepeer.PeakHeapGrowth(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				res, err = h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
			})
			got := rec.of(hostile.ServerName())
			t.Logf("peak heap growth %d KiB; pass stored %d with %d requests, %v; outcomes %v", growth>>10, res.Stored, res.Requests, err, got)
			if growth > hostileHeapBound {
				t.Errorf("heap grew by %d MiB in a pass against a flooding peer, want under %d MiB", growth>>20, hostileHeapBound>>20)
			}
			outcomes := got[string(tc.endpoint)]
			if len(outcomes) == 0 {
				t.Errorf("the flooding peer was never asked for %s", tc.endpoint)
			}
			for _, outcome := range outcomes {
				if outcome != federation.OutcomeBadResponse {
					t.Errorf("%s answered %s, want %s", tc.endpoint, outcome, federation.OutcomeBadResponse)
				}
			}
		})
	}

	t.Run("beside an honest peer", func(t *testing.T) {
		// Every answer of the hostile peer is a flood, make_join's template included (2.5
		// million prev_events): the honest peer fills the room.
		hostile := fixturepeer.Start(t, room, fixturepeer.WithFaults(
			flood(fixturepeer.EndpointMakeJoin, 2_500_000),
			flood("", 20_000_000),
		))
		honest := fixturepeer.Start(t, room)
		rec := &outcomeRecorder{}
		h := newHarness(t, room, []*fixturepeer.Peer{hostile, honest}, withObserver(rec))
		var results []resolver.RoomResult
		growth := fixturepeer.PeakHeapGrowth(func() { results = h.syncUntilDone(10) })
		t.Logf("peak heap growth %d KiB over %d passes", growth>>10, len(results))
		if growth > hostileHeapBound {
			t.Errorf("heap grew by %d MiB syncing beside a flooding peer, want under %d MiB", growth>>20, hostileHeapBound>>20)
		}
		h.assertHolds(room.IDSet(), nil)
		got := rec.of(hostile.ServerName())
		if len(got["make_join"]) == 0 {
			t.Errorf("the flooding peer's heads were never asked for: %v", got)
		}
		for ep, outcomes := range got {
			for _, outcome := range outcomes {
				if outcome != federation.OutcomeBadResponse {
					t.Errorf("%s answered %s, want %s", ep, outcome, federation.OutcomeBadResponse)
				}
			}
		}
	})
}

// TestMalformedVerifyKeyRejectsTheEvent: a key of another length than ed25519's, as a key
// source could hold from a store written before keys were checked, refuses the event it
// should verify (no key verifies it) rather than make crypto/ed25519 panic.
func TestMalformedVerifyKeyRejectsTheEvent(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 15, Events: 5, Linear: true})
	bad := id.SigningKey(base64.RawStdEncoding.EncodeToString(make([]byte, 38)))
	keys := func(context.Context, string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return bad, time.Now().Add(time.Hour), nil
	}
	for _, ev := range room.Events {
		if _, rej := resolver.VerifyPDU(context.Background(), string(room.ID), string(room.Version), ev.JSON, keys); rej == nil ||
			!strings.Contains(rej.Error(), "38 bytes") {
			t.Errorf("event %s with a 38-byte key: rejection %v, want one naming the malformed key", ev.ID, rej)
		}
	}
}

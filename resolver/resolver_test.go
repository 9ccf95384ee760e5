package resolver_test

import (
	"context"
	"crypto/x509"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

func TestConvergesFromOnePeer(t *testing.T) {
	for _, version := range []string{"1", "2", "10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 1, Events: 600, Version: id.RoomVersion(version)})
			peer := fixturepeer.Start(t, room)
			h := newHarness(t, room, []*fixturepeer.Peer{peer})
			results := h.syncUntilDone(10)
			last := results[len(results)-1]
			if !last.Converged || last.RoomVersion != version {
				t.Fatalf("last pass %+v: want converged, version %s", last, version)
			}
			h.assertHolds(room.IDSet(), nil)
		})
	}
}

// TestSpreadOverThreePeers: a 5,000-event forked DAG whose parts are held by three peers, with
// a hole no peer holds, converges to exactly the union the peers can give.
func TestSpreadOverThreePeers(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 7, Events: 5000, Heads: 2})
	if st := room.Stats(); st.Forks == 0 || st.Merges == 0 {
		t.Fatalf("room is not forked: %+v", st)
	}
	maxDepth := room.Stats().MaxDepth
	hole := []id.EventID{room.Events[2500].ID}
	noHole := fixturepeer.HoldAllBut(hole...)
	a := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(0, maxDepth/3).And(noHole)))
	b := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(maxDepth/3-40, 2*maxDepth/3).And(noHole)))
	c := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldDepths(2*maxDepth/3-40, maxDepth).And(noHole)))
	h := newHarness(t, room, []*fixturepeer.Peer{a, b, c})
	results := h.syncUntilDone(20)

	reached, gaps := fixturepeer.Reachable(a, b, c)
	if len(gaps) == 0 {
		t.Fatal("the hole left no gap: the test proves nothing")
	}
	h.assertHolds(reached, gaps)
	last := results[len(results)-1]
	if last.Converged || last.Unfillable != len(gaps) {
		t.Errorf("last pass: converged=%t unfillable=%d; want not converged, %d unfillable", last.Converged, last.Unfillable, len(gaps))
	}
}

func TestLyingPeerIsRejectedAndHonestPeerFills(t *testing.T) {
	lies := []fixturepeer.LieKind{
		fixturepeer.LieWrongEvent, fixturepeer.LieForeignEvent, fixturepeer.LieExtraForeignEvent,
		fixturepeer.LieBadSignature, fixturepeer.LieBadEventID,
	}
	for _, lie := range lies {
		t.Run(lie.String(), func(t *testing.T) {
			room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 3, Events: 800})
			liar := fixturepeer.Start(t, room, fixturepeer.WithLies(fixturepeer.Lie{Kind: lie}))
			honest := fixturepeer.Start(t, room)
			// The liar comes first: its answers must be refused, not stored.
			h := newHarness(t, room, []*fixturepeer.Peer{liar, honest})
			results := h.syncUntilDone(20)
			h.assertHolds(room.IDSet(), nil)
			rejected := 0
			for _, r := range results {
				for _, n := range r.Rejected {
					rejected += n
				}
			}
			if rejected == 0 {
				t.Errorf("no rejection counted for a peer that lies with %s", lie)
			}
			if honest.Count(fixturepeer.EndpointBackfill)+honest.Count(fixturepeer.EndpointEvent) == 0 {
				t.Error("the honest peer was never asked")
			}
		})
	}
}

func TestStrippedContentIsStoredRedacted(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 5, Events: 300})
	// Message events: a create event's content survives redaction in v11, so stripping it
	// changes nothing.
	stripped := []id.EventID{room.Events[100].ID, room.Events[200].ID}
	peer := fixturepeer.Start(t, room, fixturepeer.WithLies(fixturepeer.Lie{Kind: fixturepeer.LieStripped, Events: stripped}))
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	h.syncUntilDone(10)
	h.assertHolds(room.IDSet(), nil)
	redacted := map[id.EventID]bool{}
	if err := h.store.StreamEvents(context.Background(), string(room.ID), func(ev store.Event) error {
		redacted[id.EventID(ev.ID)] = ev.Redacted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, e := range stripped {
		if r, held := redacted[e]; !held || !r {
			t.Errorf("%s: held %t, redacted %t; want held redacted", e, held, r)
		}
	}
	if r, err := h.store.Room(context.Background(), string(room.ID)); err != nil || r.Redacted != int64(len(stripped)) {
		t.Errorf("room counts %d redacted (%v), want %d", r.Redacted, err, len(stripped))
	}
}

func TestDeadPeerIsSkipped(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 4, Events: 700})
	dead := fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Status: 502}))
	slow := fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultHang, HangFor: 20 * time.Second}))
	good := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{dead, slow, good})
	start := time.Now()
	results := h.syncUntilDone(10)
	h.assertHolds(room.IDSet(), nil)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("sync took %v: the hanging peer was waited on too long", took)
	}
	// Each failing peer is backed off after its first failures, not asked for every gap.
	if n := dead.TotalCount(); n > 5 {
		t.Errorf("dead peer asked %d times", n)
	}
	if !results[len(results)-1].Converged {
		t.Error("did not converge past a dead and a hanging peer")
	}
	for _, p := range h.res.Peers().Status() {
		if p.ServerName == dead.ServerName() && (p.ConsecutiveFailures == 0 || p.LastError == "") {
			t.Errorf("dead peer status %+v", p)
		}
	}
}

func TestRateLimitIsHonoured(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 8, Events: 400})
	limited := fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{
		Kind: fixturepeer.FaultRateLimit, Endpoint: fixturepeer.EndpointBackfill, RetryAfter: time.Hour, Times: 1,
	}))
	other := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{limited, other})
	h.syncUntilDone(10)
	h.assertHolds(room.IDSet(), nil)
	// After the 429 the limited peer is left alone for the hour it asked for.
	if n := limited.Count(fixturepeer.EndpointBackfill); n != 1 {
		t.Errorf("rate-limited peer got %d backfills, want exactly the one that was refused", n)
	}
	for _, p := range h.res.Peers().Status() {
		if p.ServerName == limited.ServerName() && p.BackoffUntil.Before(time.Now().Add(50*time.Minute)) {
			t.Errorf("retry_after_ms not honoured: back-off until %v", p.BackoffUntil)
		}
	}
}

func TestUnfillableGapIsReportedNotSpunOn(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 9, Events: 500, Linear: true})
	hole := room.Events[250].ID
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldAllBut(hole)))
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	results := h.syncUntilDone(5)
	last := results[len(results)-1]
	if last.Converged || last.Unfillable != 1 || last.Gaps != 1 {
		t.Fatalf("last pass: %+v; want 1 unfillable gap", last)
	}
	reached, gaps := fixturepeer.Reachable(peer)
	h.assertHolds(reached, gaps)

	// The next pass does not ask again: the gap waits for its back-off.
	peer.ResetCounts()
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if n := peer.Count(fixturepeer.EndpointBackfill) + peer.Count(fixturepeer.EndpointEvent); n != 0 {
		t.Errorf("a pass right after asked %d times for a gap that waits for its back-off", n)
	}
	if r.Unfillable != 1 {
		t.Errorf("unfillable = %d after a second pass", r.Unfillable)
	}
}

// TestRefusingPeerMakesGapsUnfillable: a peer that answers 403 (Synapse, to non-members) has
// answered; its gaps back off as unfillable instead of being asked for every second.
func TestRefusingPeerMakesGapsUnfillable(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 15, Events: 300, Linear: true})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withLimits(resolver.Limits{MaxEventsPerPass: 100}))
	if r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{}); err != nil || r.Gaps == 0 {
		t.Fatalf("first pass: %+v, %v; want gaps left", r, err)
	}
	peer.SetFaults(
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointBackfill, Status: 403, ErrCode: "M_FORBIDDEN"},
		fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointEvent, Status: 403, ErrCode: "M_FORBIDDEN"},
	)
	r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Converged || r.Unfillable != r.Gaps || r.Gaps == 0 {
		t.Fatalf("pass: %+v; want every gap unfillable", r)
	}
	gaps, _ := h.store.BackwardExtremities(context.Background(), string(room.ID), store.BackwardFilter{})
	for _, g := range gaps {
		if !strings.Contains(g.UnfillableReason, "forbidden") || !g.NextAttemptAt.After(time.Now().Add(20*time.Second)) {
			t.Errorf("gap %+v: want unfillable, forbidden, retried in 30 s or more", g)
		}
	}
	peer.ResetCounts()
	if _, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{}); err != nil {
		t.Fatal(err)
	}
	if n := peer.Count(fixturepeer.EndpointBackfill) + peer.Count(fixturepeer.EndpointEvent); n != 0 {
		t.Errorf("the next pass asked %d times for gaps that wait for their back-off", n)
	}
}

func TestHistoryBoundStopsBackfill(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 10, Events: 600, Linear: true})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	var last resolver.RoomResult
	for range 5 {
		r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{MinDepth: 400})
		if err != nil {
			t.Fatal(err)
		}
		last = r
		if r.Converged {
			break
		}
	}
	if !last.Converged {
		t.Fatalf("bounded sync did not converge: %+v", last)
	}
	if earliest := h.earliestNonState(); earliest > 400 || earliest < 300 {
		t.Errorf("earliest depth %d: want the bound (400) reached without going far past it", earliest)
	}
}

// earliestNonState is the depth of the oldest held event that is not a state event: how far
// the history went. Older state events are the state where a bounded history begins.
func (h *harness) earliestNonState() int64 {
	h.t.Helper()
	stored := h.storedIDs()
	earliest := int64(-1)
	for _, e := range h.room.Events {
		if stored[e.ID] && e.StateKey == nil && (earliest < 0 || e.Depth < earliest) {
			earliest = e.Depth
		}
	}
	return earliest
}

func TestHistoryBoundBySince(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 12, Events: 600, Linear: true})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer})
	bound := room.Events[400]
	since := time.UnixMilli(bound.TS)
	var last resolver.RoomResult
	for range 5 {
		r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{Since: since})
		if err != nil {
			t.Fatal(err)
		}
		last = r
		if r.Converged {
			break
		}
	}
	if !last.Converged {
		t.Fatalf("bounded sync did not converge: %+v", last)
	}
	// Everything sent at or after the bound is held; backfill stopped within a page below it.
	stored := h.storedIDs()
	for _, ev := range room.Events[400:] {
		if !stored[ev.ID] {
			t.Fatalf("event %s (sent after the bound) missing", ev.ID)
		}
	}
	if earliest := h.earliestNonState(); earliest > bound.Depth || earliest < bound.Depth-100 {
		t.Errorf("earliest depth %d: want the bound's depth (%d) reached, at most a page past it", earliest, bound.Depth)
	}
}

// TestKeysSurviveARestart: keys an origin gave itself over verified TLS are kept in the store,
// so a restarted resolver verifies its events even once nobody can give the keys any more.
func TestKeysSurviveARestart(t *testing.T) {
	const origin = "origin.test"
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 13, Events: 400, Linear: true, Origins: []string{origin}})
	originSrv := httptest.NewTLSServer(federation.NewKeyServer(origin, fixturepeer.OriginKey(origin), "test"))
	defer originSrv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(originSrv.Certificate())

	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, 200)))
	first := newHarness(t, room, []*fixturepeer.Peer{peer}, withOrigin(origin, originSrv.URL, roots))
	if r := first.syncUntilDone(5); !r[len(r)-1].Converged {
		t.Fatal("first sync did not converge")
	}
	// The origin goes away, the peer grows and stops vouching for anyone's keys.
	originSrv.Close()
	peer.SetHold(fixturepeer.HoldAll())
	peer.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointQueryKeys, Status: 500})

	restarted := newHarnessOnStore(t, room, []*fixturepeer.Peer{peer}, first.store, withOrigin(origin, originSrv.URL, roots))
	if r := restarted.syncUntilDone(5); !r[len(r)-1].Converged {
		t.Fatalf("restarted resolver did not converge: %+v", r[len(r)-1])
	}
	restarted.assertHolds(room.IDSet(), nil)
}

// TestVouchedKeysAreNotKept: keys a peer vouched for as a notary serve the session only. The
// store is shared by every RoomSync, and one peer's word must not outlive it.
func TestVouchedKeysAreNotKept(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 14, Events: 300, Linear: true})
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, 150)))
	first := newHarness(t, room, []*fixturepeer.Peer{peer})
	if r := first.syncUntilDone(5); !r[len(r)-1].Converged {
		t.Fatal("first sync did not converge")
	}
	for _, o := range room.Origins() {
		if keys, err := first.store.ServerKeys(context.Background(), o); err != nil || len(keys) != 0 {
			t.Errorf("keys of %s vouched for by a peer were kept: %+v, %v", o, keys, err)
		}
	}
	peer.SetHold(fixturepeer.HoldAll())
	peer.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointQueryKeys, Status: 500})
	restarted := newHarnessOnStore(t, room, []*fixturepeer.Peer{peer}, first.store)
	r := restarted.syncUntilDone(3)
	if last := r[len(r)-1]; last.Converged || last.Rejected[resolver.RejectKeyUnavailable] == 0 {
		t.Errorf("after a restart with no key source: %+v; want key_unavailable rejections", last)
	}
}

func TestBudgetBoundsAPass(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 11, Events: 1500})
	peer := fixturepeer.Start(t, room)
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withLimits(resolver.Limits{MaxEventsPerPass: 400}))
	results := h.syncUntilDone(20)
	if len(results) < 4 {
		t.Fatalf("1,500 events in %d passes of at most 400", len(results))
	}
	for i, r := range results {
		if r.Stored > 400+100 {
			t.Errorf("pass %d stored %d events, budget 400 (+ one page)", i+1, r.Stored)
		}
	}
	h.assertHolds(room.IDSet(), nil)
}

// TestRandomizedPeers is a seeded, bounded property test: for random rooms spread over random
// holds, with random liars and faults, the store only ever holds valid events and converges to
// exactly what the honest peers can give.
func TestRandomizedPeers(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: seed, Events: 200 + rng.IntN(800), Heads: 1 + rng.IntN(3)})
		maxDepth := room.Stats().MaxDepth
		var honest, all []*fixturepeer.Peer
		for i := range 1 + rng.IntN(3) {
			lo := rng.Int64N(maxDepth/2 + 1)
			hold := fixturepeer.HoldDepths(lo, maxDepth)
			if i == 0 {
				hold = fixturepeer.HoldAll()
			}
			if rng.IntN(3) == 0 {
				hold = hold.And(fixturepeer.HoldAllBut(room.Events[1+rng.IntN(len(room.Events)-1)].ID))
			}
			p := fixturepeer.Start(t, room, fixturepeer.WithHold(hold))
			honest = append(honest, p)
			all = append(all, p)
		}
		if rng.IntN(2) == 0 {
			lie := []fixturepeer.LieKind{fixturepeer.LieWrongEvent, fixturepeer.LieBadSignature, fixturepeer.LieForeignEvent, fixturepeer.LieBadEventID}[rng.IntN(4)]
			all = append([]*fixturepeer.Peer{fixturepeer.Start(t, room, fixturepeer.WithLies(fixturepeer.Lie{Kind: lie}))}, all...)
		}
		if rng.IntN(2) == 0 {
			all = append(all, fixturepeer.Start(t, room, fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultTruncate})))
		}
		h := newHarness(t, room, all)
		h.syncUntilDone(30)
		reached, gaps := fixturepeer.Reachable(honest...)
		t.Logf("seed %d: %d events, %d peers, reach %d, %d gaps", seed, len(room.Events), len(all), len(reached), len(gaps))
		h.assertHolds(reached, gaps)
	}
}

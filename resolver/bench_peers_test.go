package resolver_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// BenchmarkForkedFromTwoPeers converges a room that forked into two long branches from one
// peer, then from two peers that each hold all of it (fixture peers 10 ms away, as servers
// on a network are): events/s of each and their ratio (goal: two peers faster than one, a
// ratio above 1).
func BenchmarkForkedFromTwoPeers(b *testing.B) {
	room := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 13, Events: 10000, ForkRate: 0.2, MergeRate: -1,
		MaxBranches: 2, JoinRate: -1, LinearRunRate: -1, Heads: 2, BodySize: 200})
	a := fixturepeer.Start(b, room, fixturepeer.WithLatency(10*time.Millisecond))
	c := fixturepeer.Start(b, room, fixturepeer.WithLatency(10*time.Millisecond))
	rate := map[int]float64{}
	for _, peers := range [][]*fixturepeer.Peer{{a}, {a, c}} {
		var events int
		var took time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			st, res := benchResolverWith(b, peers, benchSQLite(b, fmt.Sprintf("%d-%d", len(peers), i)), false)
			b.StartTimer()
			start := time.Now()
			stored, _ := benchSync(b, res, room)
			took += time.Since(start)
			events += stored
			b.StopTimer()
			_ = st.Close()
			b.StartTimer()
		}
		if events != b.N*len(room.Events) {
			b.Fatalf("stored %d events in %d runs from %d peers, want %d a run", events, b.N, len(peers), len(room.Events))
		}
		rate[len(peers)] = float64(events) / took.Seconds()
	}
	b.ReportMetric(rate[1], "events/s-one-peer")
	b.ReportMetric(rate[2], "events/s-two-peers")
	b.ReportMetric(rate[2]/rate[1], "x-two-over-one")
	b.Logf("forked room of %d events: one peer %.0f events/s, two peers %.0f events/s, %.2f× (goal > 1)",
		len(room.Events), rate[1], rate[2], rate[2]/rate[1])
}

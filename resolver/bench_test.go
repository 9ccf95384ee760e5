package resolver_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// BenchmarkConverge measures a full sync of a room from a local fixture peer with full
// verification (event IDs, content hashes, signatures) into a fresh SQLite store: events/s,
// and federation requests against the least possible (events / the server's backfill cap).
func BenchmarkConverge(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts fixturepeer.RoomOptions
	}{
		{"linear-20k", fixturepeer.RoomOptions{Seed: 1, Events: 20000, Linear: true, BodySize: 200}},
		{"forked-20k", fixturepeer.RoomOptions{Seed: 2, Events: 20000, BodySize: 200}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			room := fixturepeer.MustGenerate(b, tc.opts)
			peer := fixturepeer.Start(b, room)
			var requests, events int
			var took time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				st, res := benchResolver(b, peer, i)
				b.StartTimer()
				start := time.Now()
				for pass := 0; pass < 100; pass++ {
					r, err := res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
					if err != nil {
						b.Fatal(err)
					}
					requests += r.Requests
					events += r.Stored
					if r.Converged {
						break
					}
				}
				took += time.Since(start)
				b.StopTimer()
				_ = st.Close()
				b.StartTimer()
			}
			perRun := float64(events) / float64(b.N)
			if int(perRun) != len(room.Events) {
				b.Fatalf("stored %.0f events per run, want %d", perRun, len(room.Events))
			}
			minimum := float64(len(room.Events)) / 100
			b.ReportMetric(float64(events)/took.Seconds(), "events/s")
			b.ReportMetric(float64(requests)/float64(b.N)/perRun*1000, "requests/1000events")
			b.ReportMetric(float64(requests)/float64(b.N)/minimum, "x-min-requests")
		})
	}
}

func benchResolver(b *testing.B, peer *fixturepeer.Peer, i int) (store.Store, *resolver.Resolver) {
	b.Helper()
	return benchResolverWith(b, peer, fmt.Sprint(i), false)
}

func benchResolverWith(b *testing.B, peer *fixturepeer.Peer, name string, noState bool) (store.Store, *resolver.Resolver) {
	b.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "bench-"+name+".db"))
	if err != nil {
		b.Fatal(err)
	}
	ep, _ := federation.ParseEndpoint(peer.URL(), true)
	client, err := federation.NewClient(federation.Options{ServerName: ourServer, Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]federation.Endpoint{peer.ServerName(): ep}})
	if err != nil {
		b.Fatal(err)
	}
	peers := resolver.NewPeerSet([]string{peer.ServerName()})
	res, err := resolver.New(resolver.Config{
		Store: st, Client: client, Keys: federation.NewKeyRing(client, peers.Reachable).Key, Peers: peers,
		JoinUserID: "@roomsync:" + ourServer, Log: logr.Discard(),
		Limits: resolver.Limits{MaxEventsPerPass: 100000}, NoState: noState,
	})
	if err != nil {
		b.Fatal(err)
	}
	return st, res
}

// BenchmarkStateCost converges a 100,000-event room with 2,000 members and a merge about
// every 50 events twice, into fresh SQLite stores: with the room state and the authorization
// rules off, then on. It reports both ingest rates, their ratio (goal: at least 60%), and the
// size of the state tables against the events table (goal: under 5×).
func BenchmarkStateCost(b *testing.B) {
	room := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 3, Events: 100000, JoinRate: 0.0205,
		ForkRate: 0.06, MergeRate: 0.15, BodySize: 200})
	stats := room.Stats()
	b.Logf("room: %d events, %d merges (one every %d events), %d senders", stats.Events, stats.Merges,
		stats.Events/max(stats.Merges, 1), stats.Senders)
	peer := fixturepeer.Start(b, room, fixturepeer.WithBackfillCap(1000))
	rate := map[bool]float64{}
	var stateBytes, eventBytes int64
	for i := 0; i < b.N; i++ {
		for _, withState := range []bool{false, true} {
			b.StopTimer()
			st, res := benchResolverWith(b, peer, fmt.Sprintf("%d-%t", i, withState), !withState)
			b.StartTimer()
			start := time.Now()
			stored := 0
			for pass := 0; pass < 100; pass++ {
				r, err := res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
				if err != nil {
					b.Fatal(err)
				}
				stored += r.Stored
				if r.Converged {
					break
				}
			}
			took := time.Since(start)
			b.StopTimer()
			if stored != len(room.Events) {
				b.Fatalf("stored %d events, want %d", stored, len(room.Events))
			}
			rate[withState] = float64(stored) / took.Seconds()
			if withState {
				stateBytes, eventBytes = tableBytes(b, st, "state_groups", "state_entries"), tableBytes(b, st, "events")
			}
			_ = st.Close()
			b.StartTimer()
		}
	}
	ratio := rate[true] / rate[false]
	sizes := float64(stateBytes) / float64(eventBytes)
	b.ReportMetric(rate[false], "events/s-without-state")
	b.ReportMetric(rate[true], "events/s-with-state")
	b.ReportMetric(ratio*100, "%-of-rate")
	b.ReportMetric(sizes, "state/events-size")
	b.Logf("ingest with state and auth: %.0f events/s, %.0f%% of %.0f without (goal ≥ 60%%); state tables %.2f MiB, %.2f× the events table's %.2f MiB (goal < 5×)",
		rate[true], ratio*100, rate[false], float64(stateBytes)/(1<<20), sizes, float64(eventBytes)/(1<<20))
}

// tableBytes is the space SQLite gives the tables and their indexes.
func tableBytes(b *testing.B, st store.Store, tables ...string) int64 {
	b.Helper()
	var total int64
	for _, t := range tables {
		n, err := store.TableBytes(context.Background(), st, t)
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	return total
}

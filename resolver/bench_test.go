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
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), fmt.Sprintf("bench-%d.db", i)))
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
		Limits: resolver.Limits{MaxEventsPerPass: 100000},
	})
	if err != nil {
		b.Fatal(err)
	}
	return st, res
}

package resolver_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	jsonv2 "encoding/json/v2"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/storetest"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// BenchmarkConverge measures a full sync of a room from a local fixture peer with full
// verification (event IDs, content hashes, signatures) into a fresh SQLite store: events/s,
// and federation requests against the least possible (events / the server's backfill cap).
func BenchmarkConverge(b *testing.B) {
	linear := fixturepeer.RoomOptions{Seed: 1, Events: 20000, Linear: true, BodySize: 200}
	for _, tc := range []struct {
		name     string
		opts     fixturepeer.RoomOptions
		postgres bool
	}{
		{"linear-20k", linear, false},
		{"forked-20k", fixturepeer.RoomOptions{Seed: 2, Events: 20000, BodySize: 200}, false},
		// Into PostgreSQL (ROOMSYNC_TEST_POSTGRES_URL, skipped without it): the same room.
		{"linear-20k-postgres", linear, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			storeURL := func(i int) string { return benchSQLite(b, fmt.Sprint(i)) }
			if tc.postgres {
				storeURL = func(int) string { return storetest.PostgresURL(b) }
			}
			room := fixturepeer.MustGenerate(b, tc.opts)
			peer := fixturepeer.Start(b, room)
			c := converge(b, room, peer, storeURL)
			minimum := float64(len(room.Events)) / 100
			b.ReportMetric(c.eventsPerSecond(), "events/s")
			b.ReportMetric(float64(c.requests)/float64(b.N)/float64(len(room.Events))*1000, "requests/1000events")
			b.ReportMetric(float64(c.requests)/float64(b.N)/minimum, "x-min-requests")
		})
	}
}

// convergence is what b.N syncs of a room from scratch took.
type convergence struct {
	events, requests int
	took             time.Duration
	mallocs          uint64 // heap allocations while syncing, the fixture peer's included
}

func (c convergence) eventsPerSecond() float64 { return float64(c.events) / c.took.Seconds() }

// converge syncs room from peer into a fresh store (storeURL of the run) b.N times, timing the
// syncs only.
func converge(b *testing.B, room *fixturepeer.Room, peer *fixturepeer.Peer, storeURL func(i int) string) convergence {
	b.Helper()
	var c convergence
	var before, after runtime.MemStats
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, res := benchResolverWith(b, []*fixturepeer.Peer{peer}, storeURL(i), false)
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := time.Now()
		stored, requests := benchSync(b, res, room)
		c.took += time.Since(start)
		c.events += stored
		c.requests += requests
		b.StopTimer()
		runtime.ReadMemStats(&after)
		c.mallocs += after.Mallocs - before.Mallocs
		_ = st.Close()
		b.StartTimer()
	}
	if perRun := c.events / b.N; perRun != len(room.Events) || c.events%b.N != 0 {
		b.Fatalf("stored %d events in %d runs, want %d a run", c.events, b.N, len(room.Events))
	}
	return c
}

// BenchmarkVerifiedIngest sets verified ingest against what signature checks alone allow.
// ed25519-bound is crypto/ed25519's Verify of one real signature, that of a message of the
// room below (a ~1 KiB event: the bytes signed are its redacted form, ~0.5 KiB), on every
// core (b.RunParallel): verifies/s, the most events/s any verification can reach, one
// signature each. linear-20k is BenchmarkConverge's linear room synced from the fixture peer
// (events, content hashes and signatures checked, stored in SQLite, state computed): events/s,
// ns and heap allocations an event (the fixture peer's own included), and that rate as a
// fraction of the bound measured just before in the same run (goal: at least 0.4). Run both
// together: -bench 'VerifiedIngest$'.
func BenchmarkVerifiedIngest(b *testing.B) {
	room := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 1, Events: 20000, Linear: true, BodySize: 200})
	var bound float64
	b.Run("ed25519-bound", func(b *testing.B) {
		pub, msg, sig := realSignature(b, room)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !ed25519.Verify(pub, msg, sig) {
					b.Error("the signature does not verify")
					return
				}
			}
		})
		bound = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(bound, "verifies/s")
		b.ReportMetric(float64(len(msg)), "signed-bytes")
	})
	b.Run("linear-20k", func(b *testing.B) {
		peer := fixturepeer.Start(b, room)
		c := converge(b, room, peer, func(i int) string { return benchSQLite(b, fmt.Sprint(i)) })
		rate := c.eventsPerSecond()
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(float64(c.took.Nanoseconds())/float64(c.events), "ns/event")
		b.ReportMetric(float64(c.mallocs)/float64(c.events), "allocs/event")
		if bound > 0 {
			b.ReportMetric(rate/bound, "x-ed25519-bound")
			b.Logf("verified ingest %.0f events/s, %.2f× the ed25519 bound of %.0f verifies/s on %d cores (goal ≥ 0.4×)",
				rate, rate/bound, bound, runtime.GOMAXPROCS(0))
		}
	})
}

// BenchmarkVerifyPDU is the verification of one event on one core: ed25519 is Verify of a
// real signature alone, pdu is VerifyPDU of the events of a linear room in turn, keys at hand
// (event ID, room, content hash and signature: everything VerifyPDU checks); ns, bytes and
// allocations an event, and pdu's time as a multiple of ed25519's (1 would be the signature
// check and nothing else).
func BenchmarkVerifyPDU(b *testing.B) {
	room := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 1, Events: 2000, Linear: true, BodySize: 200})
	getKey := room.KeyFunc()
	keys := func(_ context.Context, server string, keyID id.KeyID, ts time.Time) (id.SigningKey, time.Time, error) {
		return getKey(server, keyID, ts)
	}
	var single time.Duration
	b.Run("ed25519", func(b *testing.B) {
		pub, msg, sig := realSignature(b, room)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("the signature does not verify")
			}
		}
		single = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("pdu", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ev := room.Events[i%len(room.Events)]
			if _, rej := resolver.VerifyPDU(ctx, string(room.ID), string(room.Version), ev.JSON, keys); rej != nil {
				b.Fatal(rej)
			}
		}
		if single > 0 {
			b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(single), "x-ed25519")
		}
	})
}

// realSignature is the origin's key, the bytes it signed and its signature for a message of
// room, taken from the event as the peer serves it and checked once here.
func realSignature(b *testing.B, room *fixturepeer.Room) (ed25519.PublicKey, []byte, []byte) {
	b.Helper()
	for _, ev := range room.Events {
		if ev.Type != "m.room.message" {
			continue
		}
		var p pdu.PDU
		if err := jsonv2.Unmarshal(ev.JSON, &p); err != nil {
			b.Fatal(err)
		}
		key := fixturepeer.OriginKey(ev.Origin)
		pub, err := base64.RawStdEncoding.DecodeString(string(key.Pub))
		if err != nil {
			b.Fatal(err)
		}
		sig, err := base64.RawStdEncoding.DecodeString(p.Signatures[ev.Origin][key.ID])
		if err != nil {
			b.Fatal(err)
		}
		msg, err := canonicaljson.Marshal(p.Clone().RedactForSignature(room.Version))
		if err != nil {
			b.Fatal(err)
		}
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatalf("the signature of %s does not verify", ev.ID)
		}
		b.Logf("event %s: %d bytes, %d signed", ev.ID, len(ev.JSON), len(msg))
		return pub, msg, sig
	}
	b.Fatal("no message in the room")
	return nil, nil, nil
}

// benchSync runs passes over room until it converges, 100 at most, and returns the events
// they stored and the requests they made.
func benchSync(b *testing.B, res *resolver.Resolver, room *fixturepeer.Room) (stored, requests int) {
	b.Helper()
	for range 100 {
		r, err := res.SyncRoom(context.Background(), string(room.ID), resolver.History{})
		if err != nil {
			b.Fatal(err)
		}
		stored, requests = stored+r.Stored, requests+r.Requests
		if r.Converged {
			break
		}
	}
	return stored, requests
}

// benchSQLite is the URL of a new SQLite store of the benchmark, named name.
func benchSQLite(b *testing.B, name string) string {
	return "sqlite://" + filepath.Join(b.TempDir(), "bench-"+name+".db")
}

func benchResolverWith(b *testing.B, fixtures []*fixturepeer.Peer, storeURL string, noState bool) (store.Store, *resolver.Resolver) {
	b.Helper()
	st, err := store.Open(context.Background(), storeURL)
	if err != nil {
		b.Fatal(err)
	}
	endpoints := map[string]federation.Endpoint{}
	var names []string
	for _, peer := range fixtures {
		ep, _ := federation.ParseEndpoint(peer.URL(), true)
		endpoints[peer.ServerName()] = ep
		names = append(names, peer.ServerName())
	}
	client, err := federation.NewClient(federation.Options{ServerName: ourServer, Key: mfed.GenerateSigningKey(),
		Endpoints: endpoints})
	if err != nil {
		b.Fatal(err)
	}
	peers := resolver.NewPeerSet(names)
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
			st, res := benchResolverWith(b, []*fixturepeer.Peer{peer}, benchSQLite(b, fmt.Sprintf("%d-%t", i, withState)), !withState)
			b.StartTimer()
			start := time.Now()
			stored, _ := benchSync(b, res, room)
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

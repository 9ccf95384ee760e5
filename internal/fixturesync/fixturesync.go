// Package fixturesync fills a store from fixture peers with the real resolver, for tests of
// what reads the store afterwards (inspect, the DAG picture, the rooms page): the store then
// holds what a sync leaves, gaps and the peers' answers on them included.
package fixturesync

import (
	"context"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// ourServer is the server name the resolver signs its requests with.
const ourServer = "fixturesync.test"

// Sync runs resolver passes over the room from the peers into st until the room converges or
// a pass stores nothing (at most maxPasses), and returns the last pass's result.
func Sync(tb testing.TB, st store.Store, room *fixturepeer.Room, peers []*fixturepeer.Peer, maxPasses int) resolver.RoomResult {
	tb.Helper()
	endpoints := map[string]federation.Endpoint{}
	var names []string
	for _, p := range peers {
		ep, err := federation.ParseEndpoint(p.URL(), true)
		if err != nil {
			tb.Fatal(err)
		}
		endpoints[p.ServerName()] = ep
		names = append(names, p.ServerName())
	}
	key := mfed.GenerateSigningKey()
	client, err := federation.NewClient(federation.Options{
		ServerName: ourServer, Key: key, Endpoints: endpoints, RequestTimeout: 5 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer client.Close()
	peerSet := resolver.NewPeerSet(names)
	res, err := resolver.New(resolver.Config{
		Store:      st,
		Peers:      peerSet,
		Client:     client,
		JoinUserID: "@roomsync:" + ourServer,
		Keys: federation.NewKeyRing(client, peerSet.Reachable).WithKeyStore(resolver.KeyStoreOf(st)).
			WithRetryAfterRecovery(peerSet.RetrySince).WithOwnKey(ourServer, key).Key,
	})
	if err != nil {
		tb.Fatal(err)
	}
	var last resolver.RoomResult
	for pass := 1; pass <= maxPasses; pass++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		last, err = res.SyncRoom(ctx, string(room.ID), resolver.History{})
		cancel()
		if err != nil {
			tb.Fatalf("sync pass %d: %v", pass, err)
		}
		if last.Converged || (last.Stored == 0 && !last.BudgetExhausted) {
			break
		}
	}
	return last
}

package resolver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/benchstore"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// BenchmarkServeBackfill serves /backfill pages of 100 events, over HTTP with X-Matrix
// signatures as a recovering server asks, from SQLite stores of 100,000 and 1,000,000 events
// starting at random depths, and reports the median and 99th percentile time per page
// (goal: p99 under 20 ms on 2 cores, the same for both sizes). The room's history is visible
// to joined members only, so each page is judged on the state before and after its events
// (a room of about a thousand members, one joining every thousand events), and forks and
// merges every hundred events.
//
// The stores are built once, with rows written straight through the store (no signing or
// verification: serving reads what is stored), and kept in the temporary directory
// (roomsync-bench-serve-*.db) for later runs; building the million takes a few minutes.
// For a p99 worth its name run enough pages: go test ./resolver/ -run '^$' -bench
// BenchmarkServeBackfill -benchtime=2000x.
func BenchmarkServeBackfill(b *testing.B) {
	for _, size := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			st := benchServeStore(b, size)
			requester := benchReplicaListener(b, st)
			rng := rand.New(rand.NewPCG(uint64(size), 11))
			ctx := context.Background()
			var took []time.Duration
			served := 0
			for b.Loop() {
				// Pages start anywhere but in the first page of the room.
				from := []id.EventID{benchEventID(rng.IntN(size-200) + 200)}
				start := time.Now()
				resp, err := requester.Backfill(ctx, &mfed.ReqBackfill{ServerName: ourServer, RoomID: benchRoomID, Limit: 100, BackfillFrom: from})
				took = append(took, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.PDUs) != 100 {
					b.Fatalf("page from %s: %d events, want 100", from[0], len(resp.PDUs))
				}
				served += len(resp.PDUs)
			}
			slices.Sort(took)
			p50, p99 := took[len(took)/2], took[min(len(took)-1, len(took)*99/100)]
			b.ReportMetric(float64(p50.Microseconds())/1000, "ms-p50/page")
			b.ReportMetric(float64(p99.Microseconds())/1000, "ms-p99/page")
			b.ReportMetric(float64(served)/float64(len(took)), "events/page")
			b.Logf("%d pages of 100 events from a %d-event store: p50 %.2f ms, p99 %.2f ms (goal: p99 < 20 ms, independent of the room's size)",
				len(took), size, float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000)
		})
	}
}

const (
	benchRoomID    = id.RoomID("!bench:origin.bench")
	benchRequester = "requester.bench"
)

func benchEventID(i int) id.EventID { return id.EventID("$bench" + strconv.Itoa(i)) }

// benchReplicaListener serves st's history on loopback and returns a client that signs as
// benchRequester, a server joined to the room.
func benchReplicaListener(b *testing.B, st store.Store) *mfed.Client {
	b.Helper()
	tiny := fixturepeer.MustGenerate(b, fixturepeer.RoomOptions{Seed: 1, Events: 5})
	peer := fixturepeer.Start(b, tiny, fixturepeer.WithServerName(benchRequester))
	ep, err := federation.ParseEndpoint(peer.URL(), true)
	if err != nil {
		b.Fatal(err)
	}
	client, err := federation.NewClient(federation.Options{ServerName: ourServer, Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]federation.Endpoint{benchRequester: ep}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(client.Close)
	srv := federation.NewServer()
	srv.OriginRate, srv.OriginBurst = 1e6, 1e6 // measured, not limited
	srv.RequireAuth(ourServer, federation.NewKeyRing(client, federation.StaticNotaries()))
	srv.HandleHistory(ourServer, resolver.NewReplica(resolver.ReplicaConfig{Store: st, Log: logr.Discard()}), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln, "", "") }()
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return peer.Pusher(ln.Addr().String(), nil)
}

// benchServeStore opens the store of a room of n events, building it first if the temporary
// directory does not hold it yet.
func benchServeStore(b *testing.B, n int) store.Store {
	b.Helper()
	return benchstore.Open(b, "serve", string(benchRoomID), n, buildServeRoom)
}

// serveRoomBuilder writes a synthetic room: the initial state, the requester's join, then
// messages that fork and merge every hundred events, and a member joining every thousand,
// each event with its state groups as the state computation would record them.
type serveRoomBuilder struct {
	st      store.Store
	n       int
	depths  []int64
	state   map[store.StateKey]string
	group   int64 // the current state group
	chain   int
	pending []store.StateGroup
	pool    []int64
}

func buildServeRoom(ctx context.Context, st store.Store, n int) error {
	rb := &serveRoomBuilder{st: st, n: n, depths: make([]int64, n), state: map[store.StateKey]string{}}
	if err := st.EnsureRoom(ctx, string(benchRoomID), "11", string(benchEventID(0))); err != nil {
		return err
	}
	const batch = 5000
	for done := 0; done < n; done += batch {
		var events []store.Event
		var states []store.EventState
		for i := done; i < min(n, done+batch); i++ {
			ev, err := rb.event(ctx, i)
			if err != nil {
				return err
			}
			before := rb.group
			if ev.StateKey != nil {
				if err := rb.setState(ctx, store.StateKey{Type: ev.Type, StateKey: *ev.StateKey}, ev.ID); err != nil {
					return err
				}
			}
			events = append(events, ev)
			states = append(states, store.EventState{EventID: ev.ID, Before: before, After: rb.group})
		}
		if _, err := st.InsertEvents(ctx, string(benchRoomID), events); err != nil {
			return err
		}
		if err := st.SaveState(ctx, string(benchRoomID), rb.pending, states); err != nil {
			return err
		}
		rb.pending = rb.pending[:0]
	}
	return nil
}

// event makes event i: its prevs, type and content follow from i alone.
func (rb *serveRoomBuilder) event(ctx context.Context, i int) (store.Event, error) {
	if i == 0 {
		// The create event's state before is the empty state.
		if err := rb.newGroup(ctx, nil); err != nil {
			return store.Event{}, err
		}
	}
	var prevs []int
	switch {
	case i == 0:
	case i%100 == 51: // a sibling of i-1: a fork
		prevs = []int{i - 2}
	case i%100 == 52: // the merge of both
		prevs = []int{i - 2, i - 1}
	default:
		prevs = []int{i - 1}
	}
	var depth int64 = 1
	prevIDs := make([]string, len(prevs))
	for k, p := range prevs {
		depth = max(depth, rb.depths[p]+1)
		prevIDs[k] = string(benchEventID(p))
	}
	rb.depths[i] = depth
	sender := "@creator:origin.bench"
	typ, content := "m.room.message", fmt.Sprintf(`{"body":"message %d %s","msgtype":"m.text"}`, i, strings.Repeat("lorem ipsum ", 16))
	var stateKey *string
	state := func(t, key, c string) { typ, stateKey, content = t, &key, c }
	switch {
	case i == 0:
		state("m.room.create", "", `{"room_version":"11"}`)
	case i == 1:
		state("m.room.member", sender, `{"membership":"join"}`)
	case i == 2:
		state("m.room.power_levels", "", `{"users":{"@creator:origin.bench":100}}`)
	case i == 3:
		state("m.room.join_rules", "", `{"join_rule":"public"}`)
	case i == 4:
		state("m.room.history_visibility", "", `{"history_visibility":"joined"}`)
	case i == 5:
		sender = "@bench:" + benchRequester
		state("m.room.member", sender, `{"membership":"join"}`)
	case i%1000 == 500:
		sender = fmt.Sprintf("@user%d:s%d.bench", i, (i/1000)%50)
		state("m.room.member", sender, `{"membership":"join"}`)
	}
	prevJSON, _ := json.Marshal(prevIDs)
	stateKeyJSON := ""
	if stateKey != nil {
		k, _ := json.Marshal(*stateKey)
		stateKeyJSON = `,"state_key":` + string(k)
	}
	origin := id.UserID(sender).Homeserver()
	raw := fmt.Sprintf(`{"auth_events":["$bench0","$bench1","$bench2"],"content":%s,"depth":%d,"hashes":{"sha256":"unverified"},"origin_server_ts":%d,"prev_events":%s,"room_id":%q,"sender":%q,"signatures":{%q:{"ed25519:a":"unverified"}}%s,"type":%q}`,
		content, depth, 1_700_000_000_000+int64(i), prevJSON, benchRoomID, sender, origin, stateKeyJSON, typ)
	return store.Event{ID: string(benchEventID(i)), RoomID: string(benchRoomID), Depth: depth, OriginServerTS: 1_700_000_000_000 + int64(i),
		Type: typ, StateKey: stateKey, Sender: sender, Origin: origin, PrevEvents: prevIDs, Raw: []byte(raw)}, nil
}

// setState records a state change as a new group: a delta from the current one while the
// chain stays short, else whole (as the state computation does).
func (rb *serveRoomBuilder) setState(ctx context.Context, key store.StateKey, eventID string) error {
	rb.state[key] = eventID
	return rb.newGroup(ctx, map[store.StateKey]string{key: eventID})
}

func (rb *serveRoomBuilder) newGroup(ctx context.Context, delta map[store.StateKey]string) error {
	if len(rb.pool) == 0 {
		first, err := rb.st.AllocateStateGroups(ctx, string(benchRoomID), 64)
		if err != nil {
			return err
		}
		for k := range int64(64) {
			rb.pool = append(rb.pool, first+k)
		}
	}
	g := store.StateGroup{No: rb.pool[0], Entries: map[store.StateKey]string{}}
	rb.pool = rb.pool[1:]
	if rb.group > 0 && delta != nil && rb.chain < 31 {
		g.PrevGroup, g.Chain, g.Entries = rb.group, rb.chain+1, delta
	} else {
		for k, v := range rb.state {
			g.Entries[k] = v
		}
	}
	rb.group, rb.chain = g.No, g.Chain
	rb.pending = append(rb.pending, g)
	return nil
}

package resolver_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

const ourServer = "resolver.test"

// harness is a resolver over a fresh SQLite store, pointed at fixture peers by URL.
type harness struct {
	t     *testing.T
	store store.Store
	res   *resolver.Resolver
	room  *fixturepeer.Room
	// key is ours, which signs our joins.
	key *mfed.SigningKey
}

// harnessOption adjusts the resolver's configuration or its federation client's.
type harnessOption func(*resolver.Config, *federation.Options)

// withJoin sets the membership policy, signing our joins with key.
func withJoin(policy resolver.JoinPolicy, key *mfed.SigningKey) harnessOption {
	return func(c *resolver.Config, o *federation.Options) {
		c.Join, c.ServerName, c.SigningKey = policy, ourServer, key
		o.Key = key
	}
}

func withLimits(l resolver.Limits) harnessOption {
	return func(c *resolver.Config, _ *federation.Options) { c.Limits = l }
}

// withOrigin routes an origin server's name to a URL whose certificate is checked against
// roots: an origin the resolver reaches itself over verified TLS.
func withOrigin(name, url string, roots *x509.CertPool) harnessOption {
	return func(_ *resolver.Config, o *federation.Options) {
		ep, err := federation.ParseEndpoint(url, false)
		if err != nil {
			panic(err)
		}
		o.Endpoints[name] = ep
		o.RootCAs = roots
	}
}

func newHarness(t *testing.T, room *fixturepeer.Room, peers []*fixturepeer.Peer, opts ...harnessOption) *harness {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newHarnessOnStore(t, room, peers, st, opts...)
}

// newHarnessOnStore is newHarness over an existing store: a restarted resolver.
func newHarnessOnStore(t *testing.T, room *fixturepeer.Room, peers []*fixturepeer.Peer, st store.Store, opts ...harnessOption) *harness {
	t.Helper()
	endpoints := map[string]federation.Endpoint{}
	var names []string
	for _, p := range peers {
		ep, err := federation.ParseEndpoint(p.URL(), true)
		if err != nil {
			t.Fatal(err)
		}
		endpoints[p.ServerName()] = ep
		names = append(names, p.ServerName())
	}
	clientOpts := federation.Options{
		ServerName: ourServer, Key: mfed.GenerateSigningKey(), Endpoints: endpoints, RequestTimeout: 5 * time.Second,
	}
	peerSet := resolver.NewPeerSet(names)
	cfg := resolver.Config{
		Store:      st,
		Peers:      peerSet,
		JoinUserID: "@roomsync:" + ourServer,
		Log:        testLogger(t),
	}
	for _, o := range opts {
		o(&cfg, &clientOpts)
	}
	client, err := federation.NewClient(clientOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	cfg.Client = client
	cfg.Keys = federation.NewKeyRing(client, peerSet.Reachable).WithKeyStore(resolver.KeyStoreOf(st)).
		WithRetryAfterRecovery(peerSet.RetrySince).WithOwnKey(ourServer, clientOpts.Key).Key
	res, err := resolver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, store: st, res: res, room: room, key: clientOpts.Key}
}

// syncUntilDone runs passes until the room converges or a pass stores nothing; it returns
// every pass's result. Bounded by maxPasses.
func (h *harness) syncUntilDone(maxPasses int) []resolver.RoomResult {
	h.t.Helper()
	var results []resolver.RoomResult
	for range maxPasses {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := h.res.SyncRoom(ctx, string(h.room.ID), resolver.History{})
		cancel()
		if err != nil {
			h.t.Fatalf("pass %d: %v", len(results)+1, err)
		}
		results = append(results, r)
		if r.Converged || (r.Stored == 0 && !r.BudgetExhausted) {
			break
		}
	}
	return results
}

// storedIDs is the set of event IDs in the store for the room.
func (h *harness) storedIDs() map[id.EventID]bool {
	h.t.Helper()
	out := map[id.EventID]bool{}
	err := h.store.StreamEvents(context.Background(), string(h.room.ID), func(ev store.Event) error {
		out[id.EventID(ev.ID)] = true
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// backward is the set of the store's backward extremities for the room.
func (h *harness) backward() map[id.EventID]bool {
	h.t.Helper()
	exts, err := h.store.BackwardExtremities(context.Background(), string(h.room.ID), store.BackwardFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[id.EventID]bool{}
	for _, e := range exts {
		out[id.EventID(e.EventID)] = true
	}
	return out
}

// assertHolds checks the store holds exactly want, each event byte-verifiable against the
// room (signed by its origin, its ID recomputed), with extremities consistent with its edges,
// and that its backward extremities are exactly wantGaps.
func (h *harness) assertHolds(want, wantGaps fixturepeer.EventSet) {
	h.t.Helper()
	ctx := context.Background()
	got := h.storedIDs()
	var missing, extra []id.EventID
	for e := range want {
		if !got[e] {
			missing = append(missing, e)
		}
	}
	for e := range got {
		if !want.Holds(e) {
			extra = append(extra, e)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		h.t.Fatalf("store holds %d events, want %d: %d missing (%v), %d extra (%v)",
			len(got), len(want), len(missing), first(missing), len(extra), first(extra))
	}
	gaps := h.backward()
	for g := range wantGaps {
		if !gaps[g] {
			h.t.Errorf("gap %s is not a backward extremity", g)
		}
	}
	if len(gaps) != len(wantGaps) {
		h.t.Errorf("%d backward extremities, want %d", len(gaps), len(wantGaps))
	}
	if err := h.store.CheckConsistency(ctx, string(h.room.ID)); err != nil {
		h.t.Fatalf("store inconsistent: %v", err)
	}
	h.assertAllValid()
}

// assertAllValid re-verifies every stored event against the origin keys: the store never
// holds an event that does not verify, and never a copy that differs from the peers' own.
func (h *harness) assertAllValid() {
	h.t.Helper()
	keys := func(ctx context.Context, server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		if server == ourServer && keyID == h.key.ID {
			return h.key.Pub, time.Now().Add(time.Hour), nil
		}
		k, until, err := h.room.KeyFunc()(server, keyID, time.Time{})
		return k, until, err
	}
	err := h.store.StreamEvents(context.Background(), string(h.room.ID), func(ev store.Event) error {
		again, rej := resolver.VerifyPDU(context.Background(), string(h.room.ID), string(h.room.Version), ev.Raw, keys)
		if rej != nil {
			h.t.Errorf("stored event %s does not verify: %v", ev.ID, rej)
			return nil
		}
		if again.ID != ev.ID {
			h.t.Errorf("stored event %s re-verifies as %s", ev.ID, again.ID)
		}
		orig := h.room.Get(id.EventID(ev.ID))
		if ev.Sender == "@roomsync:"+ourServer {
			// Our own join: not in the fixture's room, which never changes.
			return nil
		}
		if orig == nil {
			h.t.Errorf("stored event %s is not in the room", ev.ID)
		} else if !ev.Redacted && string(ev.Raw) != string(orig.JSON) {
			h.t.Errorf("stored event %s differs from the original:\n%s\n%s", ev.ID, ev.Raw, orig.JSON)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// testLogger logs through t.Log when ROOMSYNC_TEST_VERBOSE is set.
func testLogger(t *testing.T) logr.Logger {
	if os.Getenv("ROOMSYNC_TEST_VERBOSE") == "" {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{Verbosity: 1})
}

func first(ids []id.EventID) []id.EventID {
	if len(ids) > 3 {
		return ids[:3]
	}
	return ids
}

func totalRequests(results []resolver.RoomResult) int {
	n := 0
	for _, r := range results {
		n += r.Requests
	}
	return n
}

package resolver_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// listenerFuzz is our federation listener as the manager assembles it (internal/cli's
// managerRoutes), over a SQLite store holding a room synced from a fixture peer: our keys and
// the notary query over the keys kept in the store, the history the store holds, /send into
// the resolver and /v2/invite to it, every authenticated route behind X-Matrix with the key
// ring fetching the requesters' keys from their own key servers on loopback. Requests are
// served in process (httptest), signed as the room's origins or as the source peer.
//
// One thing differs from production: verifying a pushed PDU asks keys only of the servers the
// fuzz runs (an unknown one is a key that cannot be fetched), so that a fuzzed sender never
// sends the resolver to the network.
type listenerFuzz struct {
	srv    *federation.Server
	res    *resolver.Resolver
	store  store.Store
	room   *fixturepeer.Room
	source *fixturepeer.Peer
	// keys are the servers' keys the fuzz signs with, by server name.
	keys   map[string]*mfed.SigningKey
	ourKey *mfed.SigningKey
}

// listenerServer is our server name in the listener fuzz.
const listenerServer = "listener.test"

// listenerRoomEvents is the size of the fuzz's room; the first listenerHeld are synced before
// the fuzz starts, so that pushing a later one stores it and closes the gap before it.
const (
	listenerRoomEvents = 30
	listenerHeld       = 24
)

func newListenerFuzz(tb testing.TB) *listenerFuzz {
	tb.Helper()
	room := fixturepeer.MustGenerate(tb, fixturepeer.RoomOptions{Seed: 23, Events: listenerRoomEvents})
	source := fixturepeer.Start(tb, room, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, listenerHeld)))
	lf := &listenerFuzz{room: room, source: source, keys: map[string]*mfed.SigningKey{source.ServerName(): source.Key()},
		ourKey: mfed.GenerateSigningKey()}
	endpoints := map[string]federation.Endpoint{}
	add := func(p *fixturepeer.Peer) {
		ep, err := federation.ParseEndpoint(p.URL(), true)
		if err != nil {
			tb.Fatal(err)
		}
		endpoints[p.ServerName()] = ep
	}
	add(source)
	for _, o := range room.Origins() {
		lf.keys[o] = fixturepeer.OriginKey(o)
		add(fixturepeer.Start(tb, room, fixturepeer.WithServerName(o), fixturepeer.WithSigningKey(fixturepeer.OriginKey(o))))
	}

	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(tb.TempDir(), "events.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	lf.store = st
	client, err := federation.NewClient(federation.Options{ServerName: listenerServer, Key: lf.ourKey,
		Endpoints: endpoints, RequestTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(client.Close)
	peers := resolver.NewPeerSet([]string{source.ServerName()})
	ring := federation.NewKeyRing(client, peers.Reachable).WithKeyStore(resolver.KeyStoreOf(st)).WithOwnKey(listenerServer, lf.ourKey)
	known := func(ctx context.Context, server string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
		if _, ok := endpoints[server]; !ok && server != listenerServer {
			return "", time.Time{}, errors.New("not a server of the fuzz")
		}
		return ring.Key(ctx, server, keyID, minValidUntil)
	}
	lf.res, err = resolver.New(resolver.Config{Store: st, Client: client, Keys: known, Peers: peers,
		JoinUserID: "@roomsync:" + listenerServer, Join: resolver.JoinIfNeeded, ServerName: listenerServer,
		SigningKey: lf.ourKey, Log: logr.Discard()})
	if err != nil {
		tb.Fatal(err)
	}
	lf.res.SetRooms([]string{string(room.ID)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := lf.res.SyncRoom(ctx, string(room.ID), resolver.History{}); err != nil {
		tb.Fatal(err)
	}
	// A key response kept for an origin, for the notary query to vouch for.
	kept, err := json.Marshal(fixturepeer.OriginKey(room.Origins()[0]).GenerateKeyResponse(room.Origins()[0], nil))
	if err != nil {
		tb.Fatal(err)
	}
	var resp mfed.ServerKeyResponse
	if err := json.Unmarshal(kept, &resp); err != nil {
		tb.Fatal(err)
	}
	if err := resolver.KeyStoreOf(st).SaveKeyResponse(ctx, &resp); err != nil {
		tb.Fatal(err)
	}

	srv := federation.NewServer()
	srv.OriginRate, srv.OriginBurst = 1e9, 1<<30 // the fuzz asks more than any server would
	srv.HandleKeysAsNotary(listenerServer, lf.ourKey, "fuzz", resolver.NotaryKeysOf(st))
	srv.RequireAuth(listenerServer, federation.NewKeyRing(client, federation.StaticNotaries()))
	srv.HandleHistory(listenerServer, resolver.NewReplica(resolver.ReplicaConfig{Store: st, Log: logr.Discard()}), nil)
	srv.HandleSend(func(ctx context.Context, origin string, pdus []json.RawMessage) (map[string]string, error) {
		results, _ := lf.res.Receive(ctx, origin, pdus)
		return results, nil
	})
	srv.HandleInvite(lf.res.Invite)
	lf.srv = srv
	return lf
}

// origin is the room origin the fuzz signs history and /send requests as: a member.
func (lf *listenerFuzz) origin() string { return lf.room.Origins()[0] }

// request serves one request signed as server (unsigned when server is ""), and returns the
// answer (nil when target is no request a client could send) and the statuses the route may
// give besides its own: 401 when the body cannot be signed (a body with duplicate names has
// no canonical JSON, so its signature can neither be made nor checked).
func (lf *listenerFuzz) request(method, target string, body []byte, server string) (*httptest.ResponseRecorder, []int) {
	req, err := http.NewRequestWithContext(context.Background(), method, "http://"+listenerServer+target, bytes.NewReader(body))
	if err != nil {
		return nil, nil
	}
	var also []int
	if server != "" {
		auth, signed := signRequest(req, body, server, lf.keys[server])
		req.Header.Set("Authorization", auth)
		if !signed {
			also = append(also, http.StatusUnauthorized)
		}
	}
	rec := httptest.NewRecorder()
	lf.srv.ServeHTTP(rec, req)
	return rec, also
}

// signRequest is the X-Matrix header of req as server signs it with key (mautrix's client
// does the same, but only for bodies it marshals itself), and whether it could be signed. A
// body that is not JSON gets a signature of nothing: the listener refuses the body first.
func signRequest(req *http.Request, body []byte, server string, key *mfed.SigningKey) (string, bool) {
	signable := struct {
		Method      string          `json:"method"`
		URI         string          `json:"uri"`
		Origin      string          `json:"origin"`
		Destination string          `json:"destination"`
		Content     json.RawMessage `json:"content,omitempty"`
	}{req.Method, req.URL.RequestURI(), server, listenerServer, nil}
	if len(body) > 0 && req.Method != http.MethodGet && req.Method != http.MethodHead && json.Valid(body) {
		signable.Content = body
	}
	// Signed as the listener verifies: the canonical JSON as mautrix makes it, as it is
	// (SigningKey.SignJSON canonicalizes a second time).
	sig, signed := "AAAA", false
	if message, err := canonicaljson.Marshal(signable); err == nil {
		sig, signed = base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(message)), true
	}
	return mfed.XMatrixAuth{Origin: server, Destination: listenerServer, KeyID: key.ID, Signature: sig}.String(), signed
}

// checkAnswer checks what every answer of the listener must be: a status the route may give
// (never a server error: the store works and the input is the requester's fault) and a JSON
// object, with Matrix's errcode when it is an error. It returns the decoded object.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder, statuses ...int) map[string]json.RawMessage {
	t.Helper()
	if !slices.Contains(statuses, rec.Code) {
		t.Fatalf("status %d, want one of %v: %.300s", rec.Code, statuses, rec.Body.Bytes())
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil {
		t.Fatalf("status %d with an answer that is no JSON object (%v): %.300q", rec.Code, err, rec.Body.Bytes())
	}
	if rec.Code != http.StatusOK {
		var code string
		if json.Unmarshal(obj["errcode"], &code) != nil || code == "" {
			t.Fatalf("status %d without an errcode: %.300s", rec.Code, rec.Body.Bytes())
		}
	}
	return obj
}

// checkServedPDUs checks PDUs our listener served from the room: each verifies as an event
// of the room (visibility may have redacted its content, never its signature or ID).
func (lf *listenerFuzz) checkServedPDUs(t *testing.T, raw json.RawMessage, max int) {
	t.Helper()
	var pdus []json.RawMessage
	if err := json.Unmarshal(raw, &pdus); err != nil {
		t.Fatalf("served PDUs are no list: %v", err)
	}
	if len(pdus) > max {
		t.Fatalf("%d PDUs served, at most %d may be", len(pdus), max)
	}
	keys := func(_ context.Context, server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		if k, ok := lf.keys[server]; ok && k.ID == keyID {
			return k.Pub, time.Now().Add(time.Hour), nil
		}
		return "", time.Time{}, nil
	}
	for _, p := range pdus {
		if _, rej := resolver.VerifyPDU(context.Background(), string(lf.room.ID), string(lf.room.Version), p, keys); rej != nil {
			t.Fatalf("served a PDU that does not verify: %v", rej)
		}
	}
}

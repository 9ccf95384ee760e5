package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// newStore is a fresh SQLite store in the test's directory.
func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// newResolver is a resolver over st that pulls from peer (and asks it for origin keys),
// without ever joining: what a peer strips stays redacted.
func newResolver(t *testing.T, st store.Store, peer *fixturepeer.Peer) *resolver.Resolver {
	t.Helper()
	res, err := resolver.Open(resolver.Setup{
		Store: st, ServerName: "export.test", Key: mfed.GenerateSigningKey(),
		Peers: []resolver.Peer{{ServerName: peer.ServerName(), URL: peer.URL(), InsecureSkipTLSVerify: true}},
		Join:  resolver.JoinNever, Log: logr.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return res
}

// syncFrom fills st with what peer serves of room, through the resolver's normal path
// (verification, state, authorization), until nothing more comes.
func syncFrom(t *testing.T, st store.Store, room *fixturepeer.Room, peer *fixturepeer.Peer) {
	t.Helper()
	res := newResolver(t, st, peer)
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := res.SyncRoom(ctx, string(room.ID), resolver.History{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if r.Converged || (r.Stored == 0 && !r.BudgetExhausted) {
			return
		}
	}
	t.Fatal("the sync did not settle in 50 passes")
}

// runExport exports with opts and returns the output and the cursor; it fails the test on
// an error.
func runExport(t *testing.T, st store.Store, opts export.Options) ([]byte, string) {
	t.Helper()
	out, cursor, err := tryExport(st, opts)
	if err != nil {
		t.Fatalf("export %+v: %v", opts, err)
	}
	return out, cursor
}

func tryExport(st store.Store, opts export.Options) ([]byte, string, error) {
	ctx := context.Background()
	ex, err := export.New(ctx, st, opts)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	if _, err := ex.Run(ctx, &buf); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), ex.Cursor().String(), nil
}

// lines splits NDJSON into its records.
func lines(b []byte) []json.RawMessage {
	var out []json.RawMessage
	for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		if len(l) > 0 {
			out = append(out, json.RawMessage(l))
		}
	}
	return out
}

// heldEvents are the room's stored events, topologically.
func heldEvents(t *testing.T, st store.Store, roomID string) []store.Event {
	t.Helper()
	var out []store.Event
	if err := st.StreamEvents(context.Background(), roomID, func(e store.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

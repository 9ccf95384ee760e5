package cli

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// The listener of `sync --listen` and of the manager serves history: a signed request
// reaches the replica (a server in none of the store's rooms gets Synapse's 403), an unsigned
// one is refused before it.
func TestListenerServesHistory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key := mfed.GenerateSigningKey()
	opts := identityOptions{serverName: "archive.example", listen: "127.0.0.1:0"}
	// The requester is a fixture peer on loopback, whose key discovery finds at its address.
	inbound, closeInbound, err := resolver.InboundKeys(st, opts.serverName, key, true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer closeInbound()
	addr, stop, err := opts.keyServer(key, "test", nil, func(srv *federation.Server) {
		serveHistory(srv, opts.serverName, st, inbound, logr.Discard(), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 5, Events: 10})
	peer := fixturepeer.Start(t, room)
	_, err = peer.Pusher(addr, nil).Backfill(ctx, &mfed.ReqBackfill{ServerName: opts.serverName, RoomID: room.ID, Limit: 10,
		BackfillFrom: room.Heads()})
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != http.StatusForbidden || httpErr.RespError.Err != "Host not in room." {
		t.Errorf("signed /backfill of a room not held: %v, want 403 Host not in room.", err)
	}
	resp, err := http.Get("http://" + addr + "/_matrix/federation/v1/backfill/" + string(room.ID) + "?v=" + string(room.Heads()[0]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned /backfill: %d, want 401", resp.StatusCode)
	}
}

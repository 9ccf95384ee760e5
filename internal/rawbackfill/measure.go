package rawbackfill

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
)

// Options say whom Measure asks, and as whom.
type Options struct {
	// Peer is the server name of the homeserver measured, reached at https://Peer with its
	// certificate unchecked (loopback peers with self-signed certificates).
	Peer string
	// Room is the room walked.
	Room string
	// Limit is the limit of each /backfill request (default 100).
	Limit int
	// Key signs our requests; it is served, with the version endpoint, on Listen.
	Key *mfed.SigningKey
	// Listen is where our key is served (default 127.0.0.1:0); our server name is
	// 127.0.0.1:PORT, PORT the one bound, so the peer fetches our key from there.
	Listen string
	// TLSCert and TLSKey are the PEM files of the key server's TLS.
	TLSCert, TLSKey string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// roomVersions are offered in make_join: those whose event IDs Walk computes or reads.
var roomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// Measure serves our key, asks the peer for a join template (make_join, not timed) whose
// prev_events are the room's forward extremities and whose answer names the room version,
// and walks the room back from them over /backfill (Walk), timed from the first /backfill
// request to the last.
func Measure(ctx context.Context, o Options) (Result, error) {
	var r Result
	if o.Peer == "" || o.Room == "" || o.Key == nil || o.TLSCert == "" || o.TLSKey == "" {
		return r, errors.New("backfill rate: peer, room, key, TLS certificate and key are required")
	}
	if o.Limit == 0 {
		o.Limit = 100
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey); err != nil {
		return r, fmt.Errorf("backfill rate: %w", err)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return r, fmt.Errorf("backfill rate: listen: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	serverName := fmt.Sprintf("127.0.0.1:%d", port)
	srv := federation.NewKeyServer(serverName, o.Key, "backfill-rate")
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln, o.TLSCert, o.TLSKey) // ends with Shutdown
	}()
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		<-served
	}()

	ep, err := federation.ParseEndpoint("https://"+o.Peer, true)
	if err != nil {
		return r, fmt.Errorf("backfill rate: %w", err)
	}
	client, err := federation.NewClient(federation.Options{
		ServerName: serverName,
		Key:        o.Key,
		Endpoints:  map[string]federation.Endpoint{o.Peer: ep},
		UserAgent:  "roomsync-backfill-rate",
	})
	if err != nil {
		return r, fmt.Errorf("backfill rate: %w", err)
	}
	defer client.Close()

	t0 := time.Now()
	version, heads, err := client.JoinTemplate(ctx, o.Peer, o.Room, "@backfill-rate:"+serverName, roomVersions)
	if err != nil {
		return r, fmt.Errorf("backfill rate: make_join of %s at %s: %w", o.Room, o.Peer, err)
	}
	logf("%s: room version %s, %d forward extremities (make_join as %s, %.3fs, not counted)",
		o.Room, version, len(heads), serverName, time.Since(t0).Seconds())
	r, err = Walk(ctx, id.RoomVersion(version), heads, o.Limit, func(ctx context.Context, from []string, limit int) ([]json.RawMessage, error) {
		return client.Backfill(ctx, o.Peer, o.Room, from, limit)
	})
	if err != nil {
		return r, fmt.Errorf("backfill rate of %s at %s: %w", o.Room, o.Peer, err)
	}
	logf("%s: /backfill gave %d events in %d requests in %.3fs (%.0f events/s); m.room.create reached: %t",
		o.Room, r.Events, r.Requests, r.Seconds, r.Rate(), r.ReachedCreate)
	return r, nil
}

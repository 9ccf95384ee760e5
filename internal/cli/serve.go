package cli

import (
	"github.com/go-logr/logr"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// serveHistory makes our listener a replica other servers can recover rooms from: it serves
// the history st holds (/backfill, /get_missing_events, /event, /state_ids, /state,
// /event_auth) to the servers in each room, checking every request's X-Matrix signature with
// inbound keys. The manager and `sync --listen` serve the same way.
func serveHistory(srv *federation.Server, serverName string, st store.Store, inbound *federation.KeyRing,
	log logr.Logger, observer federation.ServeObserver) {
	srv.RequireAuth(serverName, inbound)
	srv.HandleHistory(serverName, resolver.NewReplica(resolver.ReplicaConfig{Store: st, Log: log}), observer)
}

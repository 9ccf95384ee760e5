package cli

import (
	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/roomsync/roomsync/controllers"
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

// managerRoutes are the manager listener's routes besides our keys: the history the store
// holds (serveHistory), the events peers push to rooms we joined (PUT /send) and the invites
// of our user (PUT /v2/invite), each for requests signed by their origin, rate-limited per
// origin.
func managerRoutes(serverName string, originRate float64, originBurst int, st store.Store, inbound *federation.KeyRing,
	syncer *controllers.Syncer) func(*federation.Server) {
	return func(srv *federation.Server) {
		srv.OriginRate, srv.OriginBurst = originRate, originBurst
		serveHistory(srv, serverName, st, inbound, ctrl.Log.WithName("replica"), syncer.Metrics.ServeObserver())
		srv.HandleSend(syncer.Receive)
		srv.HandleInvite(syncer.Invite)
	}
}

package federation

import (
	"net/http"

	mfed "maunium.net/go/mautrix/federation"
)

// NewKeyServer returns a Server with our key routes on it (see HandleKeys).
func NewKeyServer(serverName string, key *mfed.SigningKey, version string) *Server {
	s := NewServer()
	s.HandleKeys(serverName, key, version)
	return s
}

// HandleKeys serves our signing key (/_matrix/key/v2/server, /_matrix/key/v2/query for our
// own name) and /_matrix/federation/v1/version, so peers can verify our signed requests.
//
// mautrix's handlers do the work, registered one by one rather than through KeyServer.Register,
// which would bypass this Server's body limits and error answers.
func (s *Server) HandleKeys(serverName string, key *mfed.SigningKey, version string) {
	ks := &mfed.KeyServer{
		KeyProvider: &mfed.StaticServerKey{ServerName: serverName, Key: key},
		Version:     mfed.ServerVersion{Name: "roomsync", Version: version},
	}
	s.Handle(http.MethodGet, "/_matrix/key/v2/server", 0, http.HandlerFunc(ks.GetServerKey))
	s.Handle(http.MethodGet, "/_matrix/key/v2/query/{serverName}", 0, http.HandlerFunc(ks.GetQueryKeys))
	s.Handle(http.MethodPost, "/_matrix/key/v2/query", KeyQueryMaxBody, http.HandlerFunc(ks.PostQueryKeys))
	s.Handle(http.MethodGet, "/_matrix/federation/v1/version", 0, http.HandlerFunc(ks.GetServerVersion))
}

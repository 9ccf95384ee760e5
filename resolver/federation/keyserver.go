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
func (s *Server) HandleKeys(serverName string, key *mfed.SigningKey, version string) {
	s.HandleKeysAsNotary(serverName, key, version, nil)
}

// HandleKeysAsNotary is HandleKeys whose /_matrix/key/v2/query answers for other servers too,
// as a notary: with the key responses vouched keeps, countersigned with key (see keyQuery).
// vouched nil answers for our own name only.
//
// mautrix's handlers serve our own key and version, registered one by one rather than through
// KeyServer.Register, which would bypass this Server's body limits and error answers. Its
// query handlers answer for our own name only (and POST with an object where the spec has a
// list): the query routes are ours.
func (s *Server) HandleKeysAsNotary(serverName string, key *mfed.SigningKey, version string, vouched NotaryKeys) {
	ks := &mfed.KeyServer{
		KeyProvider: &mfed.StaticServerKey{ServerName: serverName, Key: key},
		Version:     mfed.ServerVersion{Name: "roomsync", Version: version},
	}
	q := &keyQuery{serverName: serverName, key: key, vouched: vouched}
	s.Handle(http.MethodGet, "/_matrix/key/v2/server", 0, http.HandlerFunc(ks.GetServerKey))
	s.Handle(http.MethodGet, "/_matrix/key/v2/query/{serverName}", 0, http.HandlerFunc(q.get))
	s.Handle(http.MethodGet, "/_matrix/key/v2/query/{serverName}/{keyID}", 0, http.HandlerFunc(q.get))
	s.Handle(http.MethodPost, "/_matrix/key/v2/query", KeyQueryMaxBody, http.HandlerFunc(q.post))
	s.Handle(http.MethodGet, "/_matrix/federation/v1/version", 0, http.HandlerFunc(ks.GetServerVersion))
}

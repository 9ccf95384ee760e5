package federation

import (
	"net/http"

	"github.com/rs/zerolog"
	mfed "maunium.net/go/mautrix/federation"
)

// NewKeyServer serves our signing key (/_matrix/key/v2/server, /_matrix/key/v2/query for our
// own name) and /_matrix/federation/v1/version, so peers can verify our signed requests.
func NewKeyServer(serverName string, key *mfed.SigningKey, version string) http.Handler {
	ks := &mfed.KeyServer{
		KeyProvider: &mfed.StaticServerKey{ServerName: serverName, Key: key},
		Version:     mfed.ServerVersion{Name: "roomsync", Version: version},
	}
	mux := http.NewServeMux()
	ks.Register(mux, zerolog.Nop())
	return mux
}

package federation

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// storedKeys is a KeyStore holding one server's keys, as after a restart.
type storedKeys map[id.KeyID]StoredKey

func (s storedKeys) LoadKeys(context.Context, string) (map[id.KeyID]StoredKey, error) {
	return s, nil
}

func (storedKeys) SaveKeys(context.Context, string, map[id.KeyID]StoredKey) error { return nil }

func (storedKeys) SaveKeyResponse(context.Context, *mfed.ServerKeyResponse) error { return nil }

// ResponseFor gives the self-signed key response ServerAuth needs: fetched once when the
// ring knew the key only from its store, then from the cache; an unknown key ID is an error,
// and is not asked for again within keyRefetchMinInterval.
func TestResponseForFetchesWhatTheStoreLacks(t *testing.T) {
	key := mfed.GenerateSigningKey()
	var hits atomic.Int32
	keys := NewKeyServer("origin.example", key, "test")
	p := newPeerServer(t, "origin.example", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/key/v2/server" {
			hits.Add(1)
		}
		keys.ServeHTTP(w, r)
	}))
	ring := NewKeyRing(p.client, StaticNotaries()).WithKeyStore(storedKeys{
		key.ID: {Key: key.Pub, ValidUntil: time.Now().Add(time.Hour)},
	})
	ctx := context.Background()
	steps := []struct {
		name     string
		keyID    id.KeyID
		wantErr  bool
		wantHits int32
	}{
		{"key from the store: fetched for its document", key.ID, false, 1},
		{"then cached", key.ID, false, 1},
		{"unknown key ID: refused, not fetched again so soon", "ed25519:other", true, 1},
	}
	for _, step := range steps {
		resp, err := ring.ResponseFor(ctx, "origin.example", step.keyID)
		switch {
		case step.wantErr && !errors.Is(err, errNoKeyResponse):
			t.Errorf("%s: error %v, want errNoKeyResponse", step.name, err)
		case !step.wantErr && (err != nil || resp.VerifySelfSignature() != nil || resp.VerifyKeys[key.ID].Key != key.Pub):
			t.Errorf("%s: response %+v, error %v; want the origin's self-signed keys", step.name, resp, err)
		}
		if n := hits.Load(); n != step.wantHits {
			t.Errorf("%s: %d fetches, want %d", step.name, n, step.wantHits)
		}
	}
}

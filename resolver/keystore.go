package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// KeyStoreOf keeps the key ring's verified keys, and the self-signed responses they came in,
// in the event store.
func KeyStoreOf(st store.Store) federation.KeyStore { return storeKeys{st} }

// NotaryKeysOf gives our /_matrix/key/v2/query the key responses the key ring kept in the
// event store (see KeyStoreOf), to vouch for as a notary.
func NotaryKeysOf(st store.Store) federation.NotaryKeys { return storeKeys{st} }

type storeKeys struct{ st store.Store }

func (s storeKeys) LoadKeys(ctx context.Context, server string) (map[id.KeyID]federation.StoredKey, error) {
	keys, err := s.st.ServerKeys(ctx, server)
	if err != nil {
		return nil, err
	}
	out := make(map[id.KeyID]federation.StoredKey, len(keys))
	for _, k := range keys {
		out[id.KeyID(k.KeyID)] = federation.StoredKey{Key: id.SigningKey(k.Key), ValidUntil: k.ValidUntil}
	}
	return out, nil
}

func (s storeKeys) SaveKeys(ctx context.Context, server string, keys map[id.KeyID]federation.StoredKey) error {
	rows := make([]store.ServerKey, 0, len(keys))
	for keyID, k := range keys {
		rows = append(rows, store.ServerKey{ServerName: server, KeyID: string(keyID), Key: string(k.Key), ValidUntil: k.ValidUntil.Truncate(time.Millisecond)})
	}
	return s.st.SaveServerKeys(ctx, rows)
}

// SaveKeyResponse keeps resp as the server sent it (Raw, which mautrix fills when it decodes
// a response); only a response built in memory, without Raw, is encoded again.
func (s storeKeys) SaveKeyResponse(ctx context.Context, resp *mfed.ServerKeyResponse) error {
	raw := resp.Raw
	if len(raw) == 0 {
		var err error
		if raw, err = json.Marshal(resp); err != nil {
			return fmt.Errorf("save key response of %s: %w", resp.ServerName, err)
		}
	}
	keyIDs := make([]string, 0, len(resp.VerifyKeys))
	for keyID := range resp.VerifyKeys {
		keyIDs = append(keyIDs, string(keyID))
	}
	return s.st.SaveServerKeyResponse(ctx, store.ServerKeyResponse{
		ServerName: resp.ServerName,
		KeyIDs:     keyIDs,
		Raw:        raw,
		ValidUntil: resp.ValidUntilTS.Time,
	})
}

func (s storeKeys) KeyResponses(ctx context.Context, server string) ([]json.RawMessage, error) {
	kept, err := s.st.ServerKeyResponses(ctx, server)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(kept))
	for i, r := range kept {
		out[i] = r.Raw
	}
	return out, nil
}

package resolver

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// KeyStoreOf keeps the key ring's verified keys in the event store.
func KeyStoreOf(st store.Store) federation.KeyStore { return storeKeys{st} }

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

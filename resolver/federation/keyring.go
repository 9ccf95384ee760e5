package federation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

// How long a failed key fetch is remembered before a server is asked again, and the least time
// between two fetches for a key ID the server did not list (a forged event should not make us
// hammer its claimed origin).
const (
	keyFetchFailureBackoff = time.Minute
	keyRefetchMinInterval  = time.Minute
	// keyFetchTimeout bounds one fetch of a server's keys, notaries included.
	keyFetchTimeout = 30 * time.Second
	// maxKeyValidity is the longest validity the spec lets a key response claim.
	maxKeyValidity = 7 * 24 * time.Hour
)

// KeyRing fetches other servers' signing keys and caches each until its valid_until_ts. It
// asks the server itself first (/_matrix/key/v2/server) and then each notary in turn
// (/_matrix/key/v2/query); every response must carry the server's own signature.
type KeyRing struct {
	client   *Client
	notaries func() []string
	now      func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	known  map[string]*serverKeys

	// persist, when set, keeps verified keys across restarts.
	persist KeyStore
	// retrySince, when set, says when a server (any peer: they are the notaries) last came
	// back after failing: a fetch that failed before then is not held against the key.
	retrySince func() time.Time
}

// KeyStore keeps verified keys across restarts, so that events signed by a server that has
// gone away since stay verifiable. resolver.KeyStoreOf adapts the event store to it.
type KeyStore interface {
	LoadKeys(ctx context.Context, server string) (map[id.KeyID]StoredKey, error)
	SaveKeys(ctx context.Context, server string, keys map[id.KeyID]StoredKey) error
	// SaveKeyResponse keeps the self-signed response the keys came in, as the server signed
	// it (resp.Raw), so that our /_matrix/key/v2/query can vouch for them once the server
	// is gone (see NotaryKeys).
	SaveKeyResponse(ctx context.Context, resp *mfed.ServerKeyResponse) error
}

// StoredKey is a verified key and until when it is valid.
type StoredKey struct {
	Key        id.SigningKey
	ValidUntil time.Time
}

// WithKeyStore makes the ring load keys from ks before fetching and save what it fetches.
func (k *KeyRing) WithKeyStore(ks KeyStore) *KeyRing {
	k.persist = ks
	return k
}

type serverKeys struct {
	keys      map[id.KeyID]verifyKey
	fetchedAt time.Time
	// fetchErr is the last fetch failure (at failedAt), served until retryAt without asking
	// again.
	fetchErr error
	failedAt time.Time
	retryAt  time.Time
	// resp is the last key response that verified (the server's own, else a notary's copy),
	// self-signed by the server: what mautrix's ServerAuth needs to check a request (see
	// ResponseFor).
	resp *mfed.ServerKeyResponse
}

// WithOwnKey makes the ring answer for our own server from key, never over the network: our
// own events (a join we signed) verify even where no listener serves the key.
func (k *KeyRing) WithOwnKey(serverName string, key *mfed.SigningKey) *KeyRing {
	k.mu.Lock()
	defer k.mu.Unlock()
	entry := k.entryLocked(serverName)
	entry.keys[key.ID] = verifyKey{key: key.Pub, validUntil: time.Now().Add(100 * 365 * 24 * time.Hour)}
	entry.fetchedAt = time.Now()
	return k
}

// WithRetryAfterRecovery makes the ring forget a fetch failure once retrySince says a peer
// answered again since it failed (the peer set knows): the keys are then asked for at once,
// from the server or from that peer as notary, rather than after the failure back-off.
func (k *KeyRing) WithRetryAfterRecovery(retrySince func() time.Time) *KeyRing {
	k.retrySince = retrySince
	return k
}

type verifyKey struct {
	key        id.SigningKey
	validUntil time.Time
}

// NewKeyRing builds a key ring that fetches through client and falls back on notaries (in
// practice: the peers, which hold the keys of every server in their rooms). notaries is asked
// at each fetch, so the order can follow the peers' health and a dead peer is not waited on.
func NewKeyRing(client *Client, notaries func() []string) *KeyRing {
	return &KeyRing{client: client, notaries: notaries, now: time.Now, known: make(map[string]*serverKeys)}
}

// StaticNotaries is a notaries function for a fixed list.
func StaticNotaries(names ...string) func() []string {
	return func() []string { return names }
}

// Key returns server's key keyID and until when it is valid, fetching when the cache has no
// current answer. An unknown key ID returns an empty key and no error: the caller's
// signature check reports it. minValidUntil is the event's timestamp; whether a key that
// expired before it may still be used is the room version's rule, applied by the caller.
func (k *KeyRing) Key(ctx context.Context, server string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	now := k.now()
	k.mu.Lock()
	entry := k.known[server]
	if entry == nil && k.persist != nil {
		k.mu.Unlock()
		entry = k.load(ctx, server)
		k.mu.Lock()
	}
	if entry != nil {
		if vk, ok := entry.keys[keyID]; ok && (!vk.validUntil.Before(minValidUntil) || !vk.validUntil.Before(now)) {
			k.mu.Unlock()
			return vk.key, vk.validUntil, nil
		}
		if entry.fetchErr != nil && now.Before(entry.retryAt) && !k.recoveredSince(entry.failedAt) {
			err := entry.fetchErr
			k.mu.Unlock()
			return "", time.Time{}, err
		}
		if entry.fetchErr == nil && now.Sub(entry.fetchedAt) < keyRefetchMinInterval {
			// Fetched moments ago and the key is not there (or not valid long enough): say what
			// we have rather than asking again.
			vk := entry.keys[keyID]
			k.mu.Unlock()
			return vk.key, vk.validUntil, nil
		}
	}
	k.mu.Unlock()

	flightKey := server + "\x00" + string(keyID)
	if _, err, _ := k.flight.Do(flightKey, func() (any, error) { return nil, k.fetch(ctx, server, keyID) }); err != nil {
		// No fresh answer: a key seen before (expired, say) is still the best there is, and
		// the room version's rules decide whether it may verify the event.
		k.mu.Lock()
		vk, ok := k.known[server].keys[keyID]
		k.mu.Unlock()
		if ok {
			return vk.key, vk.validUntil, nil
		}
		return "", time.Time{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	vk := k.known[server].keys[keyID]
	return vk.key, vk.validUntil, nil
}

func (k *KeyRing) recoveredSince(t time.Time) bool {
	return k.retrySince != nil && k.retrySince().After(t)
}

// fetch asks the server, then the notaries (naming the key wanted: some notaries answer an
// open-ended query with nothing), and records the union of what verifies.
func (k *KeyRing) fetch(ctx context.Context, server string, keyID id.KeyID) error {
	// One deadline for the whole fetch, notaries included: a server with many dead notaries
	// must not hold a pass for a timeout per notary.
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	var errs []error
	direct := make(map[id.KeyID]verifyKey)
	var verified, directResp *mfed.ServerKeyResponse
	if resp, err := k.client.ServerKeys(ctx, server); err != nil {
		errs = append(errs, fmt.Errorf("from %s: %w", server, err))
	} else if err := collectKeys(direct, server, resp, k.now()); err != nil {
		errs = append(errs, err)
	} else {
		verified, directResp = resp, resp
	}
	vouched := make(map[id.KeyID]verifyKey)
	if len(direct) == 0 {
		for _, notary := range k.notaries() {
			if notary == server || ctx.Err() != nil {
				continue
			}
			resps, err := k.client.QueryKeys(ctx, notary, server, keyID)
			if err != nil {
				errs = append(errs, fmt.Errorf("from notary %s: %w", notary, err))
				continue
			}
			for _, resp := range resps {
				if err := k.checkNotarySignature(ctx, notary, resp); err != nil {
					errs = append(errs, err)
				} else if err := collectKeys(vouched, server, resp, k.now()); err != nil {
					errs = append(errs, err)
				} else {
					verified = resp
				}
			}
			if len(vouched) > 0 {
				break
			}
		}
	}

	now := k.now()
	parentDone := parent.Err()
	k.mu.Lock()
	defer k.mu.Unlock()
	entry := k.entryLocked(server)
	if len(direct) == 0 && len(vouched) == 0 {
		err := fmt.Errorf("fetch signing keys of %s: %w", server, errors.Join(errs...))
		if len(errs) == 0 {
			err = fmt.Errorf("fetch signing keys of %s: no server or notary returned any", server)
		}
		if parentDone == nil {
			// Remembered for a while; a fetch cut short by the caller's end is not.
			entry.fetchErr, entry.failedAt, entry.retryAt = err, now, now.Add(keyFetchFailureBackoff)
		}
		return err
	}
	for keyID, vk := range direct {
		mergeKey(entry.keys, keyID, vk)
	}
	for keyID, vk := range vouched {
		mergeKey(entry.keys, keyID, vk)
	}
	entry.fetchedAt = now
	entry.fetchErr = nil
	entry.resp = verified
	// Only keys the server gave itself, over TLS that was verified, outlive the session:
	// the store is shared, and a notary or an unverified channel is one party's word. The
	// same goes for the responses we vouch for as a notary.
	if k.persist != nil && directResp != nil && k.client.VerifiedOrigin(server) {
		stored := make(map[id.KeyID]StoredKey, len(direct))
		for keyID, vk := range direct {
			stored[keyID] = StoredKey{Key: vk.key, ValidUntil: vk.validUntil}
		}
		// A failed save costs only a fetch after a restart, or a server we cannot vouch
		// for: verification goes on.
		_ = k.persist.SaveKeys(ctx, server, stored)
		_ = k.persist.SaveKeyResponse(ctx, directResp)
	}
	return nil
}

// collectKeys checks a key response and adds its keys to keys, with their validity capped at
// a week from now (the spec's limit: a server cannot make a key valid for longer).
func collectKeys(keys map[id.KeyID]verifyKey, server string, resp *mfed.ServerKeyResponse, now time.Time) error {
	if err := checkKeyResponse(server, resp); err != nil {
		return err
	}
	limit := now.Add(maxKeyValidity)
	for keyID, vk := range resp.OldVerifyKeys {
		mergeKey(keys, keyID, verifyKey{key: vk.Key, validUntil: minTime(vk.ExpiredTS.Time, limit)})
	}
	for keyID, vk := range resp.VerifyKeys {
		mergeKey(keys, keyID, verifyKey{key: vk.Key, validUntil: minTime(resp.ValidUntilTS.Time, limit)})
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// load fills the memory cache for server from the key store, once. A key from the store was
// verified when it was fetched; it is used like a fetched one, and refetched once it expires.
// The entry counts as never fetched, so a key ID it lacks is asked for at once.
func (k *KeyRing) load(ctx context.Context, server string) *serverKeys {
	stored, err := k.persist.LoadKeys(ctx, server)
	k.mu.Lock()
	defer k.mu.Unlock()
	if entry := k.known[server]; entry != nil {
		return entry // filled meanwhile
	}
	entry := k.entryLocked(server)
	if err == nil {
		for keyID, sk := range stored {
			// A store written before keys were checked may hold a malformed one: fetched
			// again if it is needed.
			if CheckVerifyKey(sk.Key) == nil {
				mergeKey(entry.keys, keyID, verifyKey{key: sk.Key, validUntil: sk.ValidUntil})
			}
		}
	}
	return entry
}

// entryLocked returns server's cache entry, creating an empty one. k.mu must be held.
func (k *KeyRing) entryLocked(server string) *serverKeys {
	entry := k.known[server]
	if entry == nil {
		entry = &serverKeys{keys: make(map[id.KeyID]verifyKey)}
		k.known[server] = entry
	}
	return entry
}

// checkNotarySignature accepts a notary's answer only with the notary's own signature, checked
// with a key fetched from the notary itself: the origin's self-signature proves only that
// whoever made the key signed with it, and a peer reached without TLS verification could be
// anyone.
func (k *KeyRing) checkNotarySignature(ctx context.Context, notary string, resp *mfed.ServerKeyResponse) error {
	if resp == nil {
		return fmt.Errorf("%w: empty answer from notary %s", ErrBadResponse, notary)
	}
	for keyID := range resp.Signatures[notary] {
		key, err := k.directKey(ctx, notary, keyID)
		if err != nil || CheckVerifyKey(key) != nil {
			continue
		}
		if signutil.VerifyJSON(notary, keyID, key, resp.Raw) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: keys of %s from notary %s carry no valid signature of the notary", ErrBadResponse, resp.ServerName, notary)
}

// directKey is a notary's own key, from the cache or from the notary itself. It never asks
// other notaries, so vouching cannot go round in circles.
func (k *KeyRing) directKey(ctx context.Context, server string, keyID id.KeyID) (id.SigningKey, error) {
	now := k.now()
	k.mu.Lock()
	if entry := k.known[server]; entry != nil {
		if vk, ok := entry.keys[keyID]; ok && !vk.validUntil.Before(now) {
			k.mu.Unlock()
			return vk.key, nil
		}
	}
	k.mu.Unlock()
	resp, err := k.client.ServerKeys(ctx, server)
	if err != nil {
		return "", err
	}
	keys := make(map[id.KeyID]verifyKey)
	if err := collectKeys(keys, server, resp, now); err != nil {
		return "", err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	entry := k.entryLocked(server)
	for kid, vk := range keys {
		mergeKey(entry.keys, kid, vk)
	}
	return entry.keys[keyID].key, nil
}

// checkKeyResponse accepts a key response only for the server asked about and only with a
// valid self-signature by each of its current keys.
func checkKeyResponse(server string, resp *mfed.ServerKeyResponse) error {
	if resp == nil {
		return fmt.Errorf("%w: empty key response for %s", ErrBadResponse, server)
	}
	if resp.ServerName != server {
		return fmt.Errorf("%w: key response for %q when %q was asked", ErrBadResponse, resp.ServerName, server)
	}
	if len(resp.VerifyKeys) == 0 {
		return fmt.Errorf("%w: key response for %s lists no verify_keys", ErrBadResponse, server)
	}
	for keyID, vk := range resp.VerifyKeys {
		if err := CheckVerifyKey(vk.Key); err != nil {
			return fmt.Errorf("%w: key response for %s: %s: %w", ErrBadResponse, server, keyID, err)
		}
	}
	for keyID, vk := range resp.OldVerifyKeys {
		if err := CheckVerifyKey(vk.Key); err != nil {
			return fmt.Errorf("%w: key response for %s: old key %s: %w", ErrBadResponse, server, keyID, err)
		}
	}
	if err := resp.VerifySelfSignature(); err != nil {
		return fmt.Errorf("%w: key response for %s: %w", ErrBadResponse, server, err)
	}
	return nil
}

// mergeKey keeps, for each key ID, the longest validity seen for the same key. A different key
// under an ID already held is ignored: key IDs name keys, and the first one verified stays.
func mergeKey(keys map[id.KeyID]verifyKey, keyID id.KeyID, vk verifyKey) {
	old, ok := keys[keyID]
	if !ok || (old.key == vk.key && vk.validUntil.After(old.validUntil)) {
		keys[keyID] = vk
	}
}

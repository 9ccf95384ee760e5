package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Inbound requests are authenticated by mautrix's ServerAuth, which checks the X-Matrix
// header against a key response of the origin that must carry the origin's self-signature.
// Its key cache is keyed by server name only, so the key ID the header names travels in the
// request's context to ringKeyCache, which asks the KeyRing: the keys that verify requests
// are the ones that verify events, fetched, cached and checked the same way.

// RequireAuth makes the routes registered with HandleAuthenticated check each request's
// X-Matrix signature, as addressed to serverName (ours), with the origin's key from ring.
// Call it before Serve.
func (s *Server) RequireAuth(serverName string, ring *KeyRing) {
	// No mautrix client: ringKeyCache never answers "nothing cached", which is when ServerAuth
	// would fetch by itself.
	s.auth = mfed.NewServerAuth(nil, ringKeyCache{ring: ring}, func(mfed.XMatrixAuth) string { return serverName })
}

// HandleAuthenticated is Handle for a route that only answers requests signed by their origin
// (X-Matrix): a request without a valid signature gets 401 M_UNAUTHORIZED, as does every
// request while RequireAuth has not been called. Each origin's requests are rate-limited
// (OriginRate, OriginBurst): past the limit it gets 429 M_LIMIT_EXCEEDED. The handler finds the origin with
// mautrix's federation.OriginServerName. The body limit applies first, so an oversized body
// is refused (413) before any key is fetched for it.
func (s *Server) HandleAuthenticated(method, path string, maxBody int64, h http.Handler) {
	s.handle(Route{Method: method, Path: path, Authenticated: true}, maxBody, s.authenticate(h))
}

func (s *Server) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.auth == nil {
			mfed.MUnauthorized.WithMessage("this server checks no request signatures yet").Write(w)
			return
		}
		// ServeMux leaves the request URI as sent, which is what the origin signed.
		xma := mfed.ParseXMatrixAuth(r.Header.Get("Authorization"))
		ctx := context.WithValue(r.Context(), keyIDContextKey{}, xma.KeyID)
		authed, rerr := s.auth.Authenticate(r.WithContext(ctx))
		if rerr != nil {
			rerr.Write(w)
			return
		}
		// Counted after the signature holds: a forged origin must not spend a real one's
		// budget.
		origin := mfed.OriginServerName(authed.Context())
		if ok, wait := s.originLimiter().reserve(origin, time.Now()); !ok {
			refuseRateLimited(w, origin, wait)
			return
		}
		h.ServeHTTP(w, authed)
	})
}

func (s *Server) originLimiter() *originLimiter {
	s.limiterOnce.Do(func() { s.limiter = newOriginLimiter(s.OriginRate, s.OriginBurst) })
	return s.limiter
}

// keyIDContextKey carries the key ID of a request's X-Matrix header to ringKeyCache.
type keyIDContextKey struct{}

// ringKeyCache adapts a KeyRing to mautrix's KeyCache. It fetches through the ring, and
// stores nothing mautrix hands it: the ring keeps what it verified itself.
type ringKeyCache struct {
	ring *KeyRing
}

var _ mfed.KeyCache = ringKeyCache{}

// LoadKeys returns the origin's key response that lists the key the request names, fetched
// by the ring if need be. It never returns nil without an error, so ServerAuth never fetches
// on its own; a failure is marked as a recent one, which ServerAuth logs quietly (an unknown
// origin is the sender's problem, not ours).
func (c ringKeyCache) LoadKeys(ctx context.Context, server string, _ time.Duration) (*mfed.ServerKeyResponse, error) {
	keyID, _ := ctx.Value(keyIDContextKey{}).(id.KeyID)
	resp, err := c.ring.ResponseFor(ctx, server, keyID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", mfed.ErrRecentKeyQueryFailed, err)
	}
	return resp, nil
}

// StoreKeys is never needed: ServerAuth calls it only after fetching by itself.
func (ringKeyCache) StoreKeys(context.Context, *mfed.ServerKeyResponse) error { return nil }

// StoreFetchError is never needed, as StoreKeys.
func (ringKeyCache) StoreFetchError(context.Context, string, error) error { return nil }

// ShouldReQuery says no: the ring has its own pace for asking again (keyRefetchMinInterval).
func (ringKeyCache) ShouldReQuery(context.Context, string) (bool, error) { return false, nil }

// errNoKeyResponse: the ring holds no current self-signed response listing the key.
var errNoKeyResponse = errors.New("no current key response lists the key")

// ResponseFor returns the last key response of server that verified, when it lists keyID
// among its current keys and is still valid: the self-signed document mautrix's ServerAuth
// verifies a request against. A key the ring holds only from its key store (after a restart)
// comes without that document, so the server is asked again, at most once per
// keyRefetchMinInterval.
func (k *KeyRing) ResponseFor(ctx context.Context, server string, keyID id.KeyID) (*mfed.ServerKeyResponse, error) {
	now := k.now()
	if _, _, err := k.Key(ctx, server, keyID, now); err != nil {
		return nil, err
	}
	resp, due := k.heldResponse(server, keyID, now)
	if resp != nil {
		return resp, nil
	}
	if due {
		flightKey := server + "\x00" + string(keyID)
		if _, err, _ := k.flight.Do(flightKey, func() (any, error) { return nil, k.fetch(ctx, server, keyID) }); err != nil {
			return nil, err
		}
		if resp, _ = k.heldResponse(server, keyID, now); resp != nil {
			return resp, nil
		}
	}
	return nil, fmt.Errorf("key %s of %s: %w", keyID, server, errNoKeyResponse)
}

// heldResponse returns the held response of server if it lists keyID as a current key valid
// at now, and otherwise whether a fetch may be made for it now.
func (k *KeyRing) heldResponse(server string, keyID id.KeyID, now time.Time) (*mfed.ServerKeyResponse, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	entry := k.known[server]
	if entry == nil {
		return nil, true
	}
	if resp := entry.resp; resp != nil && !resp.ValidUntilTS.Time.Before(now) {
		if _, ok := resp.VerifyKeys[keyID]; ok {
			return resp, false
		}
	}
	return nil, entry.fetchedAt.IsZero() || now.Sub(entry.fetchedAt) >= keyRefetchMinInterval
}

package federation

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// MaxKeyQueryServers bounds the servers one POST /_matrix/key/v2/query may name: each costs a
// read of the store, and the endpoint needs no authentication.
const MaxKeyQueryServers = 100

// NotaryKeys gives the key responses other servers signed themselves and gave us over
// verified TLS (what KeyRing saves through KeyStore.SaveKeyResponse): what our
// /_matrix/key/v2/query serves, countersigned, for a server other than us, so that the events
// of a server that has gone away stay verifiable by others. resolver.NotaryKeysOf reads them
// from the event store.
type NotaryKeys interface {
	// KeyResponses returns the responses kept for server, each as the server signed it; none
	// is not an error.
	KeyResponses(ctx context.Context, server string) ([]json.RawMessage, error)
}

// keyQuery answers /_matrix/key/v2/query: for our own name with our current key, for any
// other server with the responses vouched keeps (none when vouched is nil), each with the
// server's own signatures intact and ours added, as a notary's answer must be (Synapse and
// gomatrixserverlib check both).
//
// It never asks the servers named: a query needs no authentication, and we answer only with
// what we verified ourselves. minimum_valid_until_ts is checked for its form and otherwise
// ignored (the spec lets a notary return keys that do not meet it): a server that has gone
// away has only expired keys, and those still verify the events it signed while they were
// valid. An unknown server gets no response, not an error.
type keyQuery struct {
	serverName string
	key        *mfed.SigningKey
	vouched    NotaryKeys
}

// get answers GET /_matrix/key/v2/query/{serverName}, and the form of Matrix r0 with a
// /{keyId} after it, whose key ID the spec then said to ignore and answer all keys.
func (q *keyQuery) get(w http.ResponseWriter, r *http.Request) {
	server := r.PathValue("serverName")
	if _, _, ok := mfed.ParseServerName(server); !ok {
		mautrix.MInvalidParam.WithMessage("%q is not a server name", server).Write(w)
		return
	}
	if ts := r.URL.Query().Get("minimum_valid_until_ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			mautrix.MInvalidParam.WithMessage("minimum_valid_until_ts %q is not a timestamp in milliseconds", ts).Write(w)
			return
		}
	}
	keys, err := q.answer(r.Context(), server, nil)
	if err != nil {
		// The store's own words stay here: the endpoint answers anyone.
		mautrix.MUnknown.WithMessage("the keys we keep could not be read").Write(w)
		return
	}
	writeJSON(w, keyQueryAnswer{ServerKeys: keys})
}

// keyQueryRequest is the POST body. minimum_valid_until_ts is read only to refuse a value that
// is not an integer.
type keyQueryRequest struct {
	ServerKeys map[string]map[id.KeyID]struct {
		MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
	} `json:"server_keys"`
}

type keyQueryAnswer struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// post answers POST /_matrix/key/v2/query: for each server named, the responses that list
// one of the key IDs asked for (among verify_keys or old_verify_keys), or all of them when
// none is asked for. The body is already bounded (KeyQueryMaxBody).
func (q *keyQuery) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || !json.Valid(body) {
		mautrix.MNotJSON.WithMessage("key query is not JSON").Write(w)
		return
	}
	var req keyQueryRequest
	if err := json.Unmarshal(body, &req); err != nil {
		mautrix.MBadJSON.WithMessage("key query is not {\"server_keys\": {server: {key ID: {\"minimum_valid_until_ts\": integer}}}}: %v", err).Write(w)
		return
	}
	if req.ServerKeys == nil {
		mautrix.MBadJSON.WithMessage("key query has no server_keys object").Write(w)
		return
	}
	if len(req.ServerKeys) > MaxKeyQueryServers {
		mautrix.MTooLarge.WithMessage("key query names %d servers; at most %d at once", len(req.ServerKeys), MaxKeyQueryServers).Write(w)
		return
	}
	servers := make([]string, 0, len(req.ServerKeys))
	for server := range req.ServerKeys {
		if _, _, ok := mfed.ParseServerName(server); !ok {
			mautrix.MBadJSON.WithMessage("key query names %q, not a server name", server).Write(w)
			return
		}
		servers = append(servers, server)
	}
	slices.Sort(servers)
	answer := keyQueryAnswer{ServerKeys: []json.RawMessage{}}
	for _, server := range servers {
		keyIDs := make([]id.KeyID, 0, len(req.ServerKeys[server]))
		for keyID := range req.ServerKeys[server] {
			keyIDs = append(keyIDs, keyID)
		}
		keys, err := q.answer(r.Context(), server, keyIDs)
		if err != nil {
			// The store's own words stay here: the endpoint answers anyone.
			mautrix.MUnknown.WithMessage("the keys we keep could not be read").Write(w)
			return
		}
		answer.ServerKeys = append(answer.ServerKeys, keys...)
	}
	writeJSON(w, answer)
}

// answer is what we say of server's keys: our own key response for our name, else the kept
// responses listing one of keyIDs (all when keyIDs is empty), countersigned. A kept response
// that no longer verifies (a store edited by hand, say) is left out rather than vouched for.
func (q *keyQuery) answer(ctx context.Context, server string, keyIDs []id.KeyID) ([]json.RawMessage, error) {
	if server == q.serverName {
		own, err := json.Marshal(q.key.GenerateKeyResponse(q.serverName, nil))
		if err != nil {
			return nil, fmt.Errorf("our key response: %w", err)
		}
		return []json.RawMessage{own}, nil
	}
	if q.vouched == nil {
		return []json.RawMessage{}, nil
	}
	kept, err := q.vouched.KeyResponses(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("read the key responses of %s: %w", server, err)
	}
	out := []json.RawMessage{}
	for _, raw := range kept {
		var resp mfed.ServerKeyResponse
		if json.Unmarshal(raw, &resp) != nil || checkKeyResponse(server, &resp) != nil || !listsAny(&resp, keyIDs) {
			continue
		}
		signed, err := countersign(raw, q.serverName, q.key)
		if err != nil {
			continue
		}
		out = append(out, signed)
	}
	return out, nil
}

// listsAny says whether resp lists one of keyIDs as a current or old key; any key ID when
// keyIDs is empty.
func listsAny(resp *mfed.ServerKeyResponse, keyIDs []id.KeyID) bool {
	if len(keyIDs) == 0 {
		return true
	}
	for _, keyID := range keyIDs {
		_, current := resp.VerifyKeys[keyID]
		_, old := resp.OldVerifyKeys[keyID]
		if current || old {
			return true
		}
	}
	return false
}

// countersign adds our signature to a signed JSON object, keeping the signatures it carries:
// the signed bytes are the canonical JSON of the object without signatures and unsigned (the
// spec's rule; mautrix's SigningKey.SignJSON leaves unsigned in). The object comes back as
// canonical JSON.
func countersign(raw json.RawMessage, serverName string, key *mfed.SigningKey) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	signatures := map[string]json.RawMessage{}
	if s, ok := obj["signatures"]; ok {
		if err := json.Unmarshal(s, &signatures); err != nil || signatures == nil {
			return nil, fmt.Errorf("countersign: signatures is not an object")
		}
	}
	delete(obj, "signatures")
	unsigned, hasUnsigned := obj["unsigned"]
	delete(obj, "unsigned")
	message, err := canonicaljson.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	ours, err := json.Marshal(map[id.KeyID]string{key.ID: base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(json.RawMessage(message)))})
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	signatures[serverName] = ours
	if obj["signatures"], err = json.Marshal(signatures); err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	if hasUnsigned {
		obj["unsigned"] = unsigned
	}
	signed, err := canonicaljson.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	return json.RawMessage(signed), nil
}

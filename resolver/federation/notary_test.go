package federation

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

const notaryTestServer = "us.example"

// keptResponses is a NotaryKeys over a map; err, when set, is every read's answer.
type keptResponses struct {
	byServer map[string][]json.RawMessage
	err      error
}

func (k keptResponses) KeyResponses(_ context.Context, server string) ([]json.RawMessage, error) {
	return k.byServer[server], k.err
}

// signedKeyResponse is a key response of server with key as its current key, and old as its
// old keys, signed by key as a server signs its own (without signatures and unsigned), with
// extra fields added (an unsigned object, say).
func signedKeyResponse(t *testing.T, server string, key *mfed.SigningKey, validUntil time.Time, old map[id.KeyID]mfed.OldVerifyKey, extra map[string]any) json.RawMessage {
	t.Helper()
	obj := map[string]any{
		"server_name":    server,
		"verify_keys":    map[id.KeyID]mfed.ServerVerifyKey{key.ID: {Key: key.Pub}},
		"valid_until_ts": validUntil.UnixMilli(),
	}
	if old != nil {
		obj["old_verify_keys"] = old
	}
	signed, err := canonicaljson.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range extra {
		obj[k] = v
	}
	obj["signatures"] = map[string]map[id.KeyID]string{server: {key.ID: base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(json.RawMessage(signed)))}}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// checkVouched checks a notary's answer: the origin's self-signature intact, and ours.
func checkVouched(t *testing.T, raw json.RawMessage, origin string, notary *mfed.SigningKey) *mfed.ServerKeyResponse {
	t.Helper()
	var resp mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	if resp.ServerName != origin {
		t.Errorf("answer for %q, want %q", resp.ServerName, origin)
	}
	if err := resp.VerifySelfSignature(); err != nil {
		t.Errorf("origin's signature does not verify in %s: %v", raw, err)
	}
	if err := signutil.VerifyJSON(notaryTestServer, notary.ID, notary.Pub, raw); err != nil {
		t.Errorf("our signature does not verify in %s: %v", raw, err)
	}
	return &resp
}

// TestKeyQueryAsNotary: /_matrix/key/v2/query answers for our own name with our key, and for
// other servers with the responses kept, countersigned; malformed queries get 400s that say
// what is wrong.
func TestKeyQueryAsNotary(t *testing.T) {
	ours := mfed.GenerateSigningKey()
	oldKey, newKey := mfed.GenerateSigningKey(), mfed.GenerateSigningKey()
	past := time.Now().Add(-30 * 24 * time.Hour)
	// origin.example rotated its key: the old response still vouches for the old key (valid
	// until a month ago), the new one lists it among old_verify_keys. The old one carries an
	// unsigned object, which neither signature covers.
	oldResp := signedKeyResponse(t, "origin.example", oldKey, past, nil, map[string]any{"unsigned": map[string]any{"note": "not signed"}})
	newResp := signedKeyResponse(t, "origin.example", newKey, time.Now().Add(time.Hour),
		map[id.KeyID]mfed.OldVerifyKey{oldKey.ID: {Key: oldKey.Pub, ExpiredTS: jsontime.UM(past)}}, nil)
	tampered := []byte(strings.Replace(string(signedKeyResponse(t, "liar.example", oldKey, past, nil, nil)), `"liar.example"`, `"liar.example","extra":1`, 1))
	kept := keptResponses{byServer: map[string][]json.RawMessage{
		"origin.example": {newResp, oldResp},
		// A response that no longer verifies, and one filed under another server's name,
		// are not vouched for.
		"liar.example":  {tampered},
		"other.example": {newResp},
	}}
	s := NewServer()
	s.HandleKeysAsNotary(notaryTestServer, ours, "test", kept)
	addr := serve(t, s)

	many := map[string]any{}
	for i := range MaxKeyQueryServers + 1 {
		many[fmt.Sprintf("s%d.example", i)] = map[string]any{}
	}
	tooMany, _ := json.Marshal(map[string]any{"server_keys": many})
	future := time.Now().Add(365 * 24 * time.Hour).UnixMilli()

	cases := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode                 string                // errcode of an error answer
		wantKeys                 map[string][]id.KeyID // server → current key ID of each response, in order
	}{
		{"GET: every kept response", "GET", "/_matrix/key/v2/query/origin.example", "", 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID, oldKey.ID}}},
		{"GET, r0 form with a key ID: every response all the same", "GET", "/_matrix/key/v2/query/origin.example/" + string(newKey.ID), "", 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID, oldKey.ID}}},
		{"GET with minimum_valid_until_ts past every key: served anyway", "GET", fmt.Sprintf("/_matrix/key/v2/query/origin.example?minimum_valid_until_ts=%d", future), "", 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID, oldKey.ID}}},
		{"GET our own name", "GET", "/_matrix/key/v2/query/" + notaryTestServer, "", 200, "",
			map[string][]id.KeyID{notaryTestServer: {ours.ID}}},
		{"GET an unknown server: empty", "GET", "/_matrix/key/v2/query/unknown.example", "", 200, "", map[string][]id.KeyID{}},
		{"GET a tampered response: not vouched for", "GET", "/_matrix/key/v2/query/liar.example", "", 200, "", map[string][]id.KeyID{}},
		{"GET a response filed under another name: not vouched for", "GET", "/_matrix/key/v2/query/other.example", "", 200, "", map[string][]id.KeyID{}},
		{"GET with a bad minimum_valid_until_ts", "GET", "/_matrix/key/v2/query/origin.example?minimum_valid_until_ts=soon", "", 400, "M_INVALID_PARAM", nil},
		{"GET a bad server name", "GET", "/_matrix/key/v2/query/bad%20name", "", 400, "M_INVALID_PARAM", nil},

		{"POST for the old key: both responses list it", "POST", "/_matrix/key/v2/query",
			fmt.Sprintf(`{"server_keys":{"origin.example":{%q:{"minimum_valid_until_ts":%d}}}}`, oldKey.ID, future), 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID, oldKey.ID}}},
		{"POST for the new key only", "POST", "/_matrix/key/v2/query",
			fmt.Sprintf(`{"server_keys":{"origin.example":{%q:{}}}}`, newKey.ID), 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID}}},
		{"POST for a key nobody has", "POST", "/_matrix/key/v2/query",
			`{"server_keys":{"origin.example":{"ed25519:nope":{}}}}`, 200, "", map[string][]id.KeyID{}},
		{"POST for several servers, ours among them", "POST", "/_matrix/key/v2/query",
			fmt.Sprintf(`{"server_keys":{"origin.example":{},"unknown.example":{},%q:{}}}`, notaryTestServer), 200, "",
			map[string][]id.KeyID{"origin.example": {newKey.ID, oldKey.ID}, notaryTestServer: {ours.ID}}},
		{"POST for no server", "POST", "/_matrix/key/v2/query", `{"server_keys":{}}`, 200, "", map[string][]id.KeyID{}},
		{"POST not JSON", "POST", "/_matrix/key/v2/query", `{`, 400, "M_NOT_JSON", nil},
		{"POST JSON and more", "POST", "/_matrix/key/v2/query", `{"server_keys":{}} {}`, 400, "M_NOT_JSON", nil},
		{"POST without server_keys", "POST", "/_matrix/key/v2/query", `{}`, 400, "M_BAD_JSON", nil},
		{"POST server_keys not an object", "POST", "/_matrix/key/v2/query", `{"server_keys":["origin.example"]}`, 400, "M_BAD_JSON", nil},
		{"POST criteria not an object", "POST", "/_matrix/key/v2/query", `{"server_keys":{"origin.example":{"ed25519:a":1}}}`, 400, "M_BAD_JSON", nil},
		{"POST a bad minimum_valid_until_ts", "POST", "/_matrix/key/v2/query", `{"server_keys":{"origin.example":{"ed25519:a":{"minimum_valid_until_ts":"soon"}}}}`, 400, "M_BAD_JSON", nil},
		{"POST a bad server name", "POST", "/_matrix/key/v2/query", `{"server_keys":{"bad name":{}}}`, 400, "M_BAD_JSON", nil},
		{"POST too many servers", "POST", "/_matrix/key/v2/query", string(tooMany), 413, "M_TOO_LARGE", nil},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, "http://"+addr+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, got)
			}
			if tc.wantCode != "" {
				var e struct {
					ErrCode string `json:"errcode"`
					Error   string `json:"error"`
				}
				if err := json.Unmarshal(got, &e); err != nil || e.ErrCode != tc.wantCode || e.Error == "" {
					t.Errorf("answer %s, want errcode %s with a message", got, tc.wantCode)
				}
				return
			}
			var answer struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(got, &answer); err != nil || answer.ServerKeys == nil {
				t.Fatalf("answer %s is not a server_keys list: %v", got, err)
			}
			gotKeys := map[string][]id.KeyID{}
			for _, raw := range answer.ServerKeys {
				var r mfed.ServerKeyResponse
				if err := json.Unmarshal(raw, &r); err != nil {
					t.Fatal(err)
				}
				r = *checkVouched(t, raw, r.ServerName, ours)
				for keyID := range r.VerifyKeys {
					gotKeys[r.ServerName] = append(gotKeys[r.ServerName], keyID)
				}
			}
			if fmt.Sprint(gotKeys) != fmt.Sprint(tc.wantKeys) {
				t.Errorf("answered keys %v, want %v", gotKeys, tc.wantKeys)
			}
		})
	}
}

// TestKeyQueryStoreFailure: a store that fails is a 500, not an empty answer that would say
// we know nothing of the server.
func TestKeyQueryStoreFailure(t *testing.T) {
	s := NewServer()
	s.HandleKeysAsNotary(notaryTestServer, mfed.GenerateSigningKey(), "test", keptResponses{err: errors.New("disk on fire")})
	addr := serve(t, s)
	resp, err := http.Get("http://" + addr + "/_matrix/key/v2/query/origin.example")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "M_UNKNOWN") {
		t.Errorf("status %d %s, want 500 M_UNKNOWN", resp.StatusCode, body)
	}
}

// TestCountersign: our signature covers the object without signatures and unsigned, every
// signature already there stays, and nothing else changes.
func TestCountersign(t *testing.T) {
	origin, ours := mfed.GenerateSigningKey(), mfed.GenerateSigningKey()
	raw := signedKeyResponse(t, "origin.example:8448", origin, time.Now(), nil, map[string]any{"unsigned": map[string]int{"age": 1}})
	signed, err := countersign(raw, "notary.example", ours)
	if err != nil {
		t.Fatal(err)
	}
	if err := signutil.VerifyJSON("origin.example:8448", origin.ID, origin.Pub, signed); err != nil {
		t.Errorf("origin's signature lost: %v", err)
	}
	if err := signutil.VerifyJSON("notary.example", ours.ID, ours.Pub, signed); err != nil {
		t.Errorf("our signature does not verify: %v", err)
	}
	var before, after map[string]any
	_ = json.Unmarshal(raw, &before)
	_ = json.Unmarshal(signed, &after)
	delete(after["signatures"].(map[string]any), "notary.example")
	b1, _ := json.Marshal(before)
	b2, _ := json.Marshal(after)
	if string(b1) != string(b2) {
		t.Errorf("countersigning changed the response:\n%s\n%s", b1, b2)
	}
	for _, bad := range []string{`[1]`, `{"signatures":[]}`, `{"signatures":null}`, `{"a":1.5}`} {
		if _, err := countersign(json.RawMessage(bad), "notary.example", ours); err == nil {
			t.Errorf("countersigned %s", bad)
		}
	}
}

// memoryKeyStore is a KeyStore that records what the ring saves.
type memoryKeyStore struct {
	responses []*mfed.ServerKeyResponse
}

func (*memoryKeyStore) LoadKeys(context.Context, string) (map[id.KeyID]StoredKey, error) {
	return nil, nil
}
func (*memoryKeyStore) SaveKeys(context.Context, string, map[id.KeyID]StoredKey) error { return nil }
func (m *memoryKeyStore) SaveKeyResponse(_ context.Context, resp *mfed.ServerKeyResponse) error {
	m.responses = append(m.responses, resp)
	return nil
}

// TestKeyRingKeepsSelfSignedResponses: the ring keeps the response a server gave itself over
// verified TLS, byte for byte; over unverified TLS it keeps nothing.
func TestKeyRingKeepsSelfSignedResponses(t *testing.T) {
	key := mfed.GenerateSigningKey()
	// Spacing and order that a re-encoding would not reproduce.
	served := strings.Replace(string(signedKeyResponse(t, "origin.example", key, time.Now().Add(time.Hour), nil, nil)), ",", ",  ", -1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, served)
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	for _, verified := range []bool{true, false} {
		t.Run(fmt.Sprintf("verified TLS %v", verified), func(t *testing.T) {
			ep, err := ParseEndpoint(srv.URL, !verified)
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewClient(Options{ServerName: notaryTestServer, Key: mfed.GenerateSigningKey(), Endpoints: map[string]Endpoint{"origin.example": ep}, RootCAs: roots, RequestTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ks := &memoryKeyStore{}
			ring := NewKeyRing(c, StaticNotaries()).WithKeyStore(ks)
			if k, _, err := ring.Key(context.Background(), "origin.example", key.ID, time.Now()); err != nil || k != key.Pub {
				t.Fatalf("Key = %q, %v", k, err)
			}
			switch {
			case verified && (len(ks.responses) != 1 || string(ks.responses[0].Raw) != served):
				t.Errorf("kept %d responses, want the one served, as served", len(ks.responses))
			case !verified && len(ks.responses) != 0:
				t.Errorf("a response received over unverified TLS was kept")
			}
		})
	}
}

// TestVerifiedOriginWithInsecureDiscovery: with TLS verification off for discovered servers
// (--insecure-skip-tls-verify), what they say of themselves is not kept, nor vouched for.
func TestVerifiedOriginWithInsecureDiscovery(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		c, err := NewClient(Options{ServerName: notaryTestServer, Key: mfed.GenerateSigningKey(), InsecureDiscovery: insecure})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.VerifiedOrigin("discovered.example"); got == insecure {
			t.Errorf("InsecureDiscovery %v: VerifiedOrigin of a discovered server = %v", insecure, got)
		}
		c.Close()
	}
}

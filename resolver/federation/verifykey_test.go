package federation

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

func TestCheckVerifyKey(t *testing.T) {
	key32 := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name string
		key  string
		ok   bool
	}{
		{"32 bytes", key32, true},
		{"38 bytes", base64.RawStdEncoding.EncodeToString(make([]byte, 38)), false},
		{"31 bytes", base64.RawStdEncoding.EncodeToString(make([]byte, 31)), false},
		{"padded", base64.StdEncoding.EncodeToString(make([]byte, 32)), false},
		{"not base64", strings.Repeat("!", 43), false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckVerifyKey(id.SigningKey(tc.key)); (err == nil) != tc.ok {
				t.Errorf("CheckVerifyKey(%q) = %v, want ok %t", tc.key, err, tc.ok)
			}
		})
	}
}

// TestKeyResponseWithMalformedKeyIsRefused: a key response, self-signed, that lists a key of
// another length than ed25519's is refused as a bad response, where it made crypto/ed25519
// panic (a current key at once, an old one when an event it signed was verified).
func TestKeyResponseWithMalformedKeyIsRefused(t *testing.T) {
	bad := id.SigningKey(base64.RawStdEncoding.EncodeToString(make([]byte, 38)))
	key := mfed.GenerateSigningKey()
	for _, tc := range []struct {
		name string
		resp func() *mfed.ServerKeyResponse
	}{
		{"current key", func() *mfed.ServerKeyResponse {
			// Signed by the good key, with a signature under the bad one's ID too.
			resp := &mfed.ServerKeyResponse{ServerName: "a.example", ValidUntilTS: jsontime.UM(time.Now().Add(time.Hour)),
				VerifyKeys: map[id.KeyID]mfed.ServerVerifyKey{key.ID: {Key: key.Pub}, "ed25519:bad": {Key: bad}}}
			sig, err := key.SignJSON(resp)
			if err != nil {
				t.Fatal(err)
			}
			resp.Signatures = map[string]map[id.KeyID]string{"a.example": {
				key.ID: sig, "ed25519:bad": base64.RawStdEncoding.EncodeToString(make([]byte, 64))}}
			return resp
		}},
		{"old key", func() *mfed.ServerKeyResponse {
			return key.GenerateKeyResponse("a.example", map[id.KeyID]mfed.OldVerifyKey{"ed25519:old": {Key: bad}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(tc.resp())
			if err != nil {
				t.Fatal(err)
			}
			var parsed mfed.ServerKeyResponse
			if err := json.Unmarshal(raw, &parsed); err != nil {
				t.Fatal(err)
			}
			keys := map[id.KeyID]verifyKey{}
			err = collectKeys(keys, "a.example", &parsed, time.Now())
			if err == nil || !strings.Contains(err.Error(), "38 bytes") {
				t.Fatalf("collectKeys = %v with keys %v, want a bad response naming the 38-byte key", err, keys)
			}
		})
	}
}

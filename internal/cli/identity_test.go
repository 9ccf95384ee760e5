package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
)

// TestKeyServerPlainHTTP serves our key without TLS, as behind an ingress, and checks a peer
// would get a self-signed response for our name.
func TestKeyServerPlainHTTP(t *testing.T) {
	key := mfed.GenerateSigningKey()
	opts := identityOptions{serverName: "archive.example", listen: "127.0.0.1:0"}
	addr, stop, err := opts.keyServer(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var keys mfed.ServerKeyResponse
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		t.Fatal(err)
	}
	if keys.ServerName != "archive.example" || keys.VerifyKeys[key.ID].Key != key.Pub {
		t.Errorf("served %+v", keys)
	}
	// The listener is the federation Server, with its Matrix answers to what it does not serve.
	nope, err := http.Get("http://" + addr + "/_matrix/federation/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(nope.Body)
	nope.Body.Close()
	if nope.StatusCode != http.StatusNotFound || nope.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), "M_UNRECOGNIZED") {
		t.Errorf("unknown path: %d %s %s", nope.StatusCode, nope.Header.Get("Content-Type"), body)
	}

	// A certificate that does not load fails at start, not later.
	bad := identityOptions{serverName: "x", listen: "127.0.0.1:0",
		tlsCert: filepath.Join(t.TempDir(), "none.crt"), tlsKey: filepath.Join(t.TempDir(), "none.key")}
	if _, _, err := bad.keyServer(key, "test"); err == nil {
		t.Error("a missing certificate was accepted")
	}
}

func TestParseSigningKey(t *testing.T) {
	good := mfed.GenerateSigningKey()
	goodLine := good.SynapseString()
	fields := strings.Fields(goodLine) // ed25519 VERSION SEED
	version, seed := fields[1], fields[2]
	cases := []struct {
		name, line string
		wantErr    string // empty: the good key
	}{
		{"keygen output", goodLine, ""},
		{"padded seed", goodLine + "=", ""},
		{"extra spaces", "ed25519  " + version + "\t" + seed, ""},
		{"seed of 3 bytes", "ed25519 a_x QUJD", "the seed is 3 bytes, an ed25519 seed is 32"},
		{"seed of 33 bytes", "ed25519 a_x " + seed + "QUJD", "the seed is 35 bytes"},
		{"empty seed", "ed25519 a_x =", "the seed is 0 bytes"},
		{"seed not base64", "ed25519 a_x !!!notbase64", "the seed is not base64"},
		{"unknown algorithm", "curve25519 " + version + " " + seed, `algorithm "curve25519" is not supported, only ed25519`},
		{"missing seed", "ed25519 " + version, "2 fields, want `ed25519 VERSION SEED`"},
		{"bare algorithm", "ed25519", "1 fields"},
		{"extra field", goodLine + " more", "4 fields"},
		{"bad version", "ed25519 a:x " + seed, `key version "a:x" may hold only letters, digits, _ and -`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var key *mfed.SigningKey
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("parseSigningKey(%q) panicked: %v", tc.line, r)
					}
				}()
				key, err = parseSigningKey(tc.line)
			}()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseSigningKey(%q) = %v", tc.line, err)
			case tc.wantErr == "" && (key.ID != good.ID || key.Pub != good.Pub):
				t.Errorf("parsed %s %s, want %s %s", key.ID, key.Pub, good.ID, good.Pub)
			case tc.wantErr != "" && err == nil:
				t.Errorf("parseSigningKey(%q) accepted a bad key", tc.line)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("parseSigningKey(%q) = %q, want it to say %q", tc.line, err, tc.wantErr)
			}
		})
	}
}

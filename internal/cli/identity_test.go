package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// TestKeyServerPlainHTTP serves our key without TLS, as behind an ingress, and checks a peer
// would get a self-signed response for our name.
func TestKeyServerPlainHTTP(t *testing.T) {
	key := mfed.GenerateSigningKey()
	opts := identityOptions{serverName: "archive.example", listen: "127.0.0.1:0"}
	addr, stop, err := opts.keyServer(key, "test", nil)
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
	if _, _, err := bad.keyServer(key, "test", nil); err == nil {
		t.Error("a missing certificate was accepted")
	}
}

// TestKeyServerVouchesForKeptKeys: the listener's /_matrix/key/v2/query answers for another
// server with the key response kept in the store, countersigned with our key.
func TestKeyServerVouchesForKeptKeys(t *testing.T) {
	st, err := store.Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	other := mfed.GenerateSigningKey()
	if err := resolver.KeyStoreOf(st).SaveKeyResponse(t.Context(), other.GenerateKeyResponse("gone.example", nil)); err != nil {
		t.Fatal(err)
	}
	key := mfed.GenerateSigningKey()
	opts := identityOptions{serverName: "archive.example", listen: "127.0.0.1:0"}
	addr, stop, err := opts.keyServer(key, "test", resolver.NotaryKeysOf(st))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/_matrix/key/v2/query/gone.example")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer mfed.QueryKeysResponse
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	if len(answer.ServerKeys) != 1 || answer.ServerKeys[0].VerifyKeys[other.ID].Key != other.Pub ||
		answer.ServerKeys[0].VerifySelfSignature() != nil ||
		signutil.VerifyJSON("archive.example", key.ID, key.Pub, answer.ServerKeys[0].Raw) != nil {
		t.Errorf("answer %+v: want gone.example's key, signed by it and by us", answer.ServerKeys)
	}
}

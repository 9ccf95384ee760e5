package resolver_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// TLS verification stays on unless a peer says otherwise, and each peer that turns it off is
// named in a warning when the resolver is built: once, not at every pass. A plain http URL
// has no TLS to skip and is not warned about.
func TestInsecurePeersAreWarnedAbout(t *testing.T) {
	st, err := store.Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	res, err := resolver.Open(resolver.Setup{
		Store: st, ServerName: "archive.example", Key: mfed.GenerateSigningKey(), Log: log,
		Peers: []resolver.Peer{
			{ServerName: "checked.example"},
			{ServerName: "unchecked.example", InsecureSkipTLSVerify: true},
			{ServerName: "pinned.example", URL: "https://10.0.0.1:8448", InsecureSkipTLSVerify: true},
			{ServerName: "plain.example", URL: "http://10.0.0.2:8008"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var warned []string
	for _, l := range lines {
		if strings.Contains(l, "not verified") {
			warned = append(warned, l)
		}
	}
	if len(warned) != 2 || !strings.Contains(warned[0], `"peer"="unchecked.example"`) || !strings.Contains(warned[1], `"peer"="pinned.example"`) {
		t.Errorf("warnings %q; want one for unchecked.example and one for pinned.example", warned)
	}
}

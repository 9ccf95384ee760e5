package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
)

// TestRulesMatchCRD reads the generated CRD and checks that the constants of rules.go are what
// the kubebuilder markers put in the schema, so that the CLI and the API server cannot drift.
func TestRulesMatchCRD(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", "federation.roomsync.io_roomsyncs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatalf("parse the CRD: %v", err)
	}
	var spec apiextensionsv1.JSONSchemaProps
	for _, v := range crd.Spec.Versions {
		if v.Name == roomsyncv1alpha1.GroupVersion.Version {
			spec = v.Schema.OpenAPIV3Schema.Properties["spec"]
		}
	}
	item := func(list string) apiextensionsv1.JSONSchemaProps {
		p := spec.Properties[list]
		if p.Items == nil || p.Items.Schema == nil {
			t.Fatalf("the CRD has no spec.%s[] schema", list)
		}
		return *p.Items.Schema
	}
	roomID := item("rooms").Properties["id"]
	peer := item("peers")
	serverName := peer.Properties["serverName"]
	peerURL := peer.Properties["url"]
	length := func(p *int64) string {
		if p == nil {
			return "unset"
		}
		return strconv.FormatInt(*p, 10)
	}
	rulesMention := func(rules apiextensionsv1.ValidationRules, s string) string {
		for _, r := range rules {
			if strings.Contains(r.Rule, s) || r.Message == s {
				return s
			}
		}
		return "no rule with " + s
	}
	user := spec.Properties["membership"].Properties["user"]
	maxPort := strconv.Itoa(roomsyncv1alpha1.ServerNameMaxPort)
	cases := []struct {
		field, got, want string
	}{
		{"rooms[].id pattern", roomID.Pattern, roomsyncv1alpha1.RoomIDPattern},
		{"rooms[].id minLength", length(roomID.MinLength), strconv.Itoa(roomsyncv1alpha1.RoomIDMinLength)},
		{"rooms[].id maxLength", length(roomID.MaxLength), strconv.Itoa(roomsyncv1alpha1.RoomIDMaxLength)},
		{"peers[].serverName pattern", serverName.Pattern, roomsyncv1alpha1.ServerNamePattern},
		{"peers[].serverName minLength", length(serverName.MinLength), strconv.Itoa(roomsyncv1alpha1.ServerNameMinLength)},
		{"peers[].serverName maxLength", length(serverName.MaxLength), strconv.Itoa(roomsyncv1alpha1.ServerNameMaxLength)},
		{"peers[].serverName port rule", rulesMention(serverName.XValidations, "<= "+maxPort), "<= " + maxPort},
		{"peers[].url pattern", peerURL.Pattern, roomsyncv1alpha1.PeerURLPattern},
		{"peers[].url maxLength", length(peerURL.MaxLength), strconv.Itoa(roomsyncv1alpha1.PeerURLMaxLength)},
		{"peers[].url port rule", rulesMention(peerURL.XValidations, "<= "+maxPort), "<= " + maxPort},
		{"peers[] TLS rule", rulesMention(peer.XValidations, roomsyncv1alpha1.InsecurePlainHTTPMessage), roomsyncv1alpha1.InsecurePlainHTTPMessage},
		{"membership.user pattern", user.Pattern, roomsyncv1alpha1.UserLocalpartPattern},
		{"membership.user maxLength", length(user.MaxLength), strconv.Itoa(roomsyncv1alpha1.UserLocalpartMaxLength)},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: the CRD has %q, rules.go %q", tc.field, tc.got, tc.want)
		}
	}
}

// TestGoRulesAgreeWithAPIServer puts the same values to the functions of rules.go and to the
// API server (a dry-run create), and checks both give the same verdict.
func TestGoRulesAgreeWithAPIServer(t *testing.T) {
	type peer struct {
		serverName, url string
		insecure        bool
	}
	cases := []struct {
		name  string
		room  string // default !a:example.org
		peer  peer   // default serverName example.org
		valid bool
		// crdLooser: the API server admits the value and the controller refuses it
		// (validateSpec stalls the RoomSync); CEL has no way to say "this URL parses".
		crdLooser bool
	}{
		{name: "room v11", room: "!abc:example.org", valid: true},
		{name: "room v12", room: "!AbC-_123xyz", valid: true},
		{name: "room of 255 characters", room: "!" + strings.Repeat("a", 254), valid: true},
		{name: "room of 256 characters", room: "!" + strings.Repeat("a", 255)},
		{name: "room alias", room: "#a:example.org"},
		{name: "bare sigil", room: "!"},
		{name: "room with a space", room: "!a b:example.org"},
		{name: "room with a control character", room: "!a\x01:example.org"},
		{name: "room with DEL", room: "!a\x7f:example.org"},
		{name: "room with a newline", room: "!a:example.org\n"},
		{name: "room not ASCII", room: "!é:example.org"},

		{name: "DNS name", peer: peer{serverName: "matrix.example.org"}, valid: true},
		{name: "IPv4 and port", peer: peer{serverName: "127.0.0.1:8448"}, valid: true},
		{name: "IPv6 and port", peer: peer{serverName: "[::1]:8448"}, valid: true},
		{name: "port 65535", peer: peer{serverName: "example.org:65535"}, valid: true},
		{name: "port 65536", peer: peer{serverName: "example.org:65536"}},
		{name: "port 99999", peer: peer{serverName: "example.org:99999"}},
		{name: "server name with a scheme", peer: peer{serverName: "https://example.org"}},
		{name: "bare IPv6", peer: peer{serverName: "::1"}},
		{name: "server name with a space", peer: peer{serverName: "a b"}},
		{name: "server name of 256 characters", peer: peer{serverName: strings.Repeat("a", 256)}},

		{name: "https URL", peer: peer{url: "https://synapse.matrix.svc:8448"}, valid: true},
		{name: "http URL with a path", peer: peer{url: "http://synapse:8008/prefix/"}, valid: true},
		{name: "URL port 65535", peer: peer{url: "https://a.example:65535"}, valid: true},
		{name: "URL with @ in the path", peer: peer{url: "https://a.example/x@y"}, valid: true},
		{name: "URL port 65536", peer: peer{url: "https://a.example:65536"}},
		{name: "URL port 99999", peer: peer{url: "https://a.example:99999"}},
		{name: "URL port 0", peer: peer{url: "https://a.example:0"}},
		{name: "URL with a query", peer: peer{url: "https://a.example/?x=1"}},
		{name: "URL with an empty query", peer: peer{url: "https://a.example/?"}},
		{name: "URL with a fragment", peer: peer{url: "https://a.example/#f"}},
		{name: "URL with credentials", peer: peer{url: "https://u:p@a.example"}},
		{name: "URL with a user", peer: peer{url: "http://u@a.example"}},
		{name: "ftp URL", peer: peer{url: "ftp://a.example"}},
		{name: "upper-case scheme", peer: peer{url: "HTTPS://a.example"}},
		{name: "URL over 2048 characters", peer: peer{url: "https://a.example/" + strings.Repeat("p", 2048)}},
		{name: "URL without a host", peer: peer{url: "https://"}, crdLooser: true},
		{name: "URL that does not parse", peer: peer{url: "https://[::1:8448/"}, crdLooser: true},

		{name: "insecure with https", peer: peer{url: "https://a.example", insecure: true}, valid: true},
		{name: "insecure without url", peer: peer{insecure: true}, valid: true},
		{name: "insecure with http", peer: peer{url: "http://a.example:8008", insecure: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := tc.room
			if room == "" {
				room = "!a:example.org"
			}
			p := tc.peer
			if p.serverName == "" {
				p.serverName = "example.org"
			}
			goErr := errorsOf(
				roomsyncv1alpha1.ValidateRoomID(room),
				roomsyncv1alpha1.ValidateServerName(p.serverName),
				urlErr(p.url),
				roomsyncv1alpha1.ValidatePeerTLS(p.url, p.insecure),
			)
			peerMap := map[string]any{"serverName": p.serverName}
			if p.url != "" {
				peerMap["url"] = p.url
			}
			if p.insecure {
				peerMap["insecureSkipTLSVerify"] = true
			}
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": roomsyncv1alpha1.GroupVersion.String(),
				"kind":       roomsyncv1alpha1.RoomSyncKind,
				"metadata":   map[string]any{"name": "rules-" + sanitize(tc.name), "namespace": "default"},
				"spec": map[string]any{
					"rooms": []any{map[string]any{"id": room}},
					"peers": []any{peerMap},
				},
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			apiErr := k8sClient.Create(ctx, obj, client.DryRunAll)

			wantGo, wantAPI := tc.valid, tc.valid || tc.crdLooser
			if (goErr == "") != wantGo {
				t.Errorf("rules.go says valid=%t (%s), want %t", goErr == "", goErr, wantGo)
			}
			if (apiErr == nil) != wantAPI {
				t.Errorf("the API server says valid=%t (%v), want %t", apiErr == nil, apiErr, wantAPI)
			}
		})
	}
}

func urlErr(raw string) error {
	if raw == "" {
		return nil
	}
	return roomsyncv1alpha1.ValidatePeerURL(raw)
}

// errorsOf joins the messages of the errors that are not nil.
func errorsOf(errs ...error) string {
	var msgs []string
	for _, err := range errs {
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	return strings.Join(msgs, "; ")
}

// TestRuleMessages checks the errors of rules.go say what is wrong, for the CLI and the
// controller's status to show.
func TestRuleMessages(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string // substring; empty: no error
	}{
		{"room ID", roomsyncv1alpha1.ValidateRoomID("!a:example.org"), ""},
		{"alias", roomsyncv1alpha1.ValidateRoomID("#a:example.org"), `"#a:example.org" is not a room ID: room IDs start with !`},
		{"control character shown escaped", roomsyncv1alpha1.ValidateRoomID("!a\x01b"), `"!a\x01b" is not a room ID: after the ! it may hold only printable ASCII`},
		{"long room ID cut short", roomsyncv1alpha1.ValidateRoomID("!" + strings.Repeat("a", 300)), "… is not a room ID: it has 301 characters, a room ID has 2 to 255"},
		{"server name", roomsyncv1alpha1.ValidateServerName("[::1]:8448"), ""},
		{"server name port", roomsyncv1alpha1.ValidateServerName("a.example:99999"), "port must be at most 65535"},
		{"server name grammar", roomsyncv1alpha1.ValidateServerName("a b"), "is not a Matrix server name (host, IPv4 or [IPv6], optional :port)"},
		{"URL", roomsyncv1alpha1.ValidatePeerURL("https://[::1]:8448/"), ""},
		{"URL missing ]", roomsyncv1alpha1.ValidatePeerURL("https://[::1:8448"), "missing ']'"},
		{"URL with a space", roomsyncv1alpha1.ValidatePeerURL("https://exa mple.org"), "invalid character"},
		{"URL without a host", roomsyncv1alpha1.ValidatePeerURL("https://:8448"), "has no host"},
		{"URL with credentials", roomsyncv1alpha1.ValidatePeerURL("https://user:pw@example.org"), "credentials"},
		{"URL with a query", roomsyncv1alpha1.ValidatePeerURL("https://example.org/?x=1"), "query or fragment"},
		{"URL with a fragment", roomsyncv1alpha1.ValidatePeerURL("https://example.org/#frag"), "query or fragment"},
		{"URL port 0", roomsyncv1alpha1.ValidatePeerURL("https://example.org:0"), "port 0 is out of range (1 to 65535)"},
		{"URL port 70000", roomsyncv1alpha1.ValidatePeerURL("https://example.org:70000"), "port 70000 is out of range"},
		{"ftp URL", roomsyncv1alpha1.ValidatePeerURL("ftp://example.org"), "want http(s)://host[:port][/path]"},
		{"long URL", roomsyncv1alpha1.ValidatePeerURL("https://a/" + strings.Repeat("p", 3000)), "has 3010 characters, at most 2048"},
		{"insecure over http", roomsyncv1alpha1.ValidatePeerTLS("http://a", true), roomsyncv1alpha1.InsecurePlainHTTPMessage},
		{"secure over http", roomsyncv1alpha1.ValidatePeerTLS("http://a", false), ""},
	}
	for _, tc := range cases {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: %v, want no error", tc.name, tc.err)
		case tc.want != "" && tc.err == nil:
			t.Errorf("%s: no error, want %q", tc.name, tc.want)
		case tc.want != "" && !strings.Contains(tc.err.Error(), tc.want):
			t.Errorf("%s: %q does not say %q", tc.name, tc.err, tc.want)
		}
	}
}

package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
)

// These tests send RoomSyncs to a real kube-apiserver with the generated CRD installed, so
// they check the schema users get, not a copy of it.

var k8sClient client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := roomsyncv1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

const validSpec = `
rooms:
- id: "!abc:example.org"
peers:
- serverName: example.org
`

// roomSyncFromYAML builds an unstructured RoomSync, as `kubectl apply` would send it, so that
// values the Go types cannot hold (a malformed interval, say) reach the API server.
func roomSyncFromYAML(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var specMap map[string]any
	if err := yaml.Unmarshal([]byte(spec), &specMap); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": roomsyncv1alpha1.GroupVersion.String(),
		"kind":       roomsyncv1alpha1.RoomSyncKind,
		"metadata":   map[string]any{"name": name, "namespace": "default"},
		"spec":       specMap,
	}}
	return obj
}

func TestRejectsInvalidRoomSyncs(t *testing.T) {
	cases := map[string]struct {
		spec string
		// want are substrings of the API server's error: the field path and the complaint.
		want []string
	}{
		"room ID without !": {
			spec: "rooms: [{id: '#alias:example.org'}]\npeers: [{serverName: example.org}]",
			want: []string{"spec.rooms[0].id", "should match"},
		},
		"no rooms": {
			spec: "rooms: []\npeers: [{serverName: example.org}]",
			want: []string{"spec.rooms", "at least 1 item"},
		},
		"no peers": {
			spec: "rooms: [{id: '!a:example.org'}]",
			want: []string{"spec.peers", "Required value"},
		},
		"duplicate rooms": {
			spec: "rooms: [{id: '!a:example.org'}, {id: '!a:example.org'}]\npeers: [{serverName: example.org}]",
			want: []string{"spec.rooms[1]", "Duplicate value"},
		},
		"duplicate peers": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org}, {serverName: example.org}]",
			want: []string{"spec.peers[1]", "Duplicate value"},
		},
		"server name with a scheme": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: 'https://example.org'}]",
			want: []string{"spec.peers[0].serverName", "should match"},
		},
		"server name with port out of range": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: 'example.org:99999'}]",
			want: []string{"spec.peers[0].serverName", "port must be at most 65535"},
		},
		"IPv6 server name without brackets": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: '::1'}]",
			want: []string{"spec.peers[0].serverName", "should match"},
		},
		"peer URL that is not http(s)": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'ftp://example.org'}]",
			want: []string{"spec.peers[0].url", "should match"},
		},
		"room ID with a control character": {
			spec: "rooms: [{id: \"!a\\x01:example.org\"}]\npeers: [{serverName: example.org}]",
			want: []string{"spec.rooms[0].id", "should match"},
		},
		"room ID over 255 characters": {
			spec: "rooms: [{id: '!" + strings.Repeat("a", 255) + "'}]\npeers: [{serverName: example.org}]",
			want: []string{"spec.rooms[0].id", "Too long"},
		},
		"peer URL port over 65535": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://example.org:99999'}]",
			want: []string{"spec.peers[0].url", "url port must be 1 to 65535"},
		},
		"peer URL port zero": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://example.org:0/'}]",
			want: []string{"spec.peers[0].url", "url port must be 1 to 65535"},
		},
		"peer URL with a query": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://example.org/?a=b'}]",
			want: []string{"spec.peers[0].url", "url must not have a query or fragment"},
		},
		"peer URL with a fragment": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://example.org/#top'}]",
			want: []string{"spec.peers[0].url", "url must not have a query or fragment"},
		},
		"peer URL with credentials": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://user:secret@example.org'}]",
			want: []string{"spec.peers[0].url", "url must not carry credentials"},
		},
		"insecureSkipTLSVerify over plain http": {
			spec: "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'http://synapse:8008', insecureSkipTLSVerify: true}]",
			want: []string{"spec.peers[0]", "insecureSkipTLSVerify applies only to TLS: url is plain http"},
		},
		"backfillLimit zero": {
			spec: validSpec + "limits: {backfillLimit: 0}",
			want: []string{"spec.limits.backfillLimit", "greater than or equal to 1"},
		},
		"missingEventsLimit too large": {
			spec: validSpec + "limits: {missingEventsLimit: 5000}",
			want: []string{"spec.limits.missingEventsLimit", "less than or equal to 1000"},
		},
		"maxEventsPerReconcile below backfillLimit": {
			spec: validSpec + "limits: {backfillLimit: 500, maxEventsPerReconcile: 200}",
			want: []string{"spec.limits", "maxEventsPerReconcile must be at least backfillLimit"},
		},
		"interval that is not a duration": {
			spec: validSpec + "interval: 5 minutes",
			want: []string{"spec.interval", "should match"},
		},
		"interval too short": {
			spec: validSpec + "interval: 1s",
			want: []string{"spec.interval", "interval must be at least 10s"},
		},
		"bounded history without a bound": {
			spec: validSpec + "history: {mode: Bounded}",
			want: []string{"spec.history", "Bounded needs minDepth or since"},
		},
		"full history with a bound": {
			spec: validSpec + "history: {mode: Full, minDepth: 10}",
			want: []string{"spec.history", "Full takes neither minDepth nor since"},
		},
		"unknown history mode": {
			spec: validSpec + "history: {mode: Recent}",
			want: []string{"spec.history.mode", "Unsupported value"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			obj := roomSyncFromYAML(t, "invalid-"+sanitize(name), tc.spec)
			err := k8sClient.Create(ctx, obj)
			if err == nil {
				_ = k8sClient.Delete(ctx, obj)
				t.Fatalf("the API server accepted an invalid RoomSync: %s", tc.spec)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestAcceptsValidRoomSyncsAndDefaults(t *testing.T) {
	cases := map[string]string{
		"minimal":          validSpec,
		"v12 room ID":      "rooms: [{id: '!AbC-_123xyz'}]\npeers: [{serverName: example.org}]",
		"IPv6 peer":        "rooms: [{id: '!a:[::1]:8448'}]\npeers: [{serverName: '[::1]:8448', url: 'https://[::1]:8448', insecureSkipTLSVerify: true}]",
		"IPv4 peer":        "rooms: [{id: '!a:127.0.0.1:8448'}]\npeers: [{serverName: '127.0.0.1:8448'}, {serverName: matrix.org}]",
		"plain http peer":  "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'http://synapse.matrix.svc:8008/prefix/'}]",
		"URL port 65535":   "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, url: 'https://example.org:65535', insecureSkipTLSVerify: false}]",
		"insecure, no url": "rooms: [{id: '!a:example.org'}]\npeers: [{serverName: example.org, insecureSkipTLSVerify: true}]",
		"bounded by depth": validSpec + "history: {mode: Bounded, minDepth: 1000}",
		"bounded by time":  validSpec + "history: {mode: Bounded, since: '2026-01-01T00:00:00Z'}",
		"all limits":       validSpec + "limits: {backfillLimit: 100, missingEventsLimit: 20, maxEventsPerReconcile: 5000}\ninterval: 1h30m\nsuspend: true",
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			obj := roomSyncFromYAML(t, "valid-"+sanitize(name), spec)
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatalf("the API server rejected a valid RoomSync: %v", err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), obj) })
		})
	}

	t.Run("defaults", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		obj := roomSyncFromYAML(t, "defaults", validSpec)
		if err := k8sClient.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), obj) })
		var got roomsyncv1alpha1.RoomSync
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), &got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Interval == nil || got.Spec.Interval.Duration != 5*time.Minute {
			t.Errorf("interval defaulted to %v, want 5m", got.Spec.Interval)
		}
		if got.Spec.History == nil || got.Spec.History.Mode != roomsyncv1alpha1.HistoryFull {
			t.Errorf("history defaulted to %+v, want mode Full", got.Spec.History)
		}
		l := got.Spec.Limits
		if l == nil || l.BackfillLimit != 100 || l.MissingEventsLimit != 50 || l.MaxEventsPerReconcile != 10000 {
			t.Errorf("limits defaulted to %+v, want 100/50/10000", l)
		}
		if got.Spec.Suspend {
			t.Error("suspend defaulted to true")
		}
	})
}

func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// assertRoomsPage reads the manager's rooms page and the room's picture from its metrics
// listener, as `kubectl port-forward` users do: both answer, beside /metrics, and the page
// names the room.
func assertRoomsPage(t *testing.T, op operator, room string) {
	t.Helper()
	base := strings.TrimSuffix(op.metricsURL, "/metrics")
	client := &http.Client{Timeout: 30 * time.Second}
	for _, c := range []struct{ path, contentType, want string }{
		{"/rooms", "text/html", room},
		{"/rooms/" + url.PathEscape(room) + "/dag.svg", "image/svg+xml", "<svg"},
	} {
		resp, err := client.Get(base + c.path)
		if err != nil {
			t.Fatalf("GET %s: %v", c.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", c.path, err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) ||
			!strings.Contains(string(body), c.want) {
			t.Errorf("GET %s: %s %s, %d bytes; want %s naming %q", c.path, resp.Status, resp.Header.Get("Content-Type"), len(body), c.contentType, c.want)
		}
	}
}

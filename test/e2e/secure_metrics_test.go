package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/testenv"
)

// TestSecureMetrics: with --metrics-secure (the chart's default) the metrics listener speaks
// HTTPS only, and answers a caller only when the API server authenticates its token and
// authorizes it for the path: no token, 401; a ServiceAccount bound to nothing, 403; one bound
// to config/rbac's metrics-reader ClusterRole, the metrics and the rooms page.
func TestSecureMetrics(t *testing.T) {
	env := startEnv(t)
	dir := t.TempDir()
	op := startOperator(t, env, dir, "events.db", "--metrics-secure")
	secureURL := strings.Replace(op.metricsURL, "http://", "https://", 1)

	reader := filepath.Join(testenv.RepoRoot(), "config", "rbac", "metrics_reader_role.yaml")
	for _, args := range [][]string{
		{"apply", "-f", reader},
		{"create", "serviceaccount", "prometheus"},
		{"create", "serviceaccount", "nobody"},
		{"create", "clusterrolebinding", "prometheus-metrics", "--clusterrole=metrics-reader", "--serviceaccount=default:prometheus"},
	} {
		if out, err := env.Kubectl(args...); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	token := func(sa string) string {
		out, err := env.Kubectl("create", "token", sa)
		if err != nil {
			t.Fatalf("kubectl create token %s: %v\n%s", sa, err, out)
		}
		return strings.TrimSpace(out)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the manager's certificate is self-signed
	}}
	get := func(url, bearer string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// The listener comes up with the manager; wait for it, bounded.
	var code int
	var body string
	for n := 0; n < 60; n++ {
		if code, body = get(secureURL, ""); code != 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != http.StatusUnauthorized {
		t.Errorf("no token: %d %.200s, want 401", code, body)
	}
	// controller-runtime's filter answers 500 "Authentication failed" when the TokenReview
	// itself says the token is malformed (the API server's error, not a plain "no"): refused
	// all the same.
	if code, body := get(secureURL, "not-a-token"); code != http.StatusUnauthorized && code != http.StatusInternalServerError {
		t.Errorf("a bad token: %d %.200s, want it refused", code, body)
	}
	nobody, prometheus := token("nobody"), token("prometheus")
	if code, body := get(secureURL, nobody); code != http.StatusForbidden {
		t.Errorf("a token bound to nothing: %d %.200s, want 403", code, body)
	}
	if code, body := get(secureURL, prometheus); code != http.StatusOK || !strings.Contains(body, "roomsync_served_requests_total") {
		t.Errorf("the reader's token: %d %.200s, want 200 and the metrics", code, body)
	}
	rooms := strings.TrimSuffix(secureURL, "/metrics") + "/rooms"
	if code, _ := get(rooms, nobody); code != http.StatusForbidden {
		t.Errorf("/rooms, a token bound to nothing: %d, want 403", code)
	}
	if code, body := get(rooms, prometheus); code != http.StatusOK {
		t.Errorf("/rooms, the reader's token: %d %.200s, want 200", code, body)
	}
	// Plain HTTP gets nothing but a TLS error.
	if code, body := get(op.metricsURL, prometheus); code == http.StatusOK {
		t.Errorf("plain HTTP: %d %.200s, want no answer", code, body)
	}
	t.Log("metrics over HTTPS: 401 without a token, 403 for a ServiceAccount bound to nothing, 200 for metrics-reader")
}

package localrun

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// StartManager runs `roomsync manager --kubeconfig KUBECONFIG ARGS...` of bin with its
// output in logFile. The caller stops it (Stop) and may wait for its probe (WaitFor, HTTPOK).
func StartManager(bin, kubeconfig, logFile string, args ...string) (*Process, error) {
	return Start("roomsync manager", logFile, bin, append([]string{"manager", "--kubeconfig", kubeconfig}, args...)...)
}

// loopbackClient never goes through a proxy (everything here is on loopback) and accepts the
// self-signed certificates of local servers.
var loopbackClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback, self-signed
	},
}

// Get fetches url from a local server and returns the body of a 200 answer (at most 16 MiB).
func Get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := loopbackClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return body, nil
}

// HTTPOK reports whether GET url answers 200 within two seconds.
func HTTPOK(ctx context.Context, url string) bool {
	_, err := Get(ctx, url)
	return err == nil
}

// WaitFor calls ready every 100 ms until it returns true. It fails when p (if not nil) exits
// first, when ctx ends, or when timeout passes.
func WaitFor(ctx context.Context, what string, timeout time.Duration, p *Process, ready func(context.Context) bool) error {
	const every = 100 * time.Millisecond
	deadline := time.Now().Add(timeout)
	for n := int64(0); n <= int64(timeout/every)+1; n++ {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited during start-up: %v", what, p.ExitError())
		}
		if ready(ctx) {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(every):
		}
	}
	return fmt.Errorf("%s not ready within %v", what, timeout)
}

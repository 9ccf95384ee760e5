package federation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
)

// serve runs s on a loopback port until the test ends, and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve ended with %v", err)
		}
	})
	return ln.Addr().String()
}

func TestServerRoutesAndErrors(t *testing.T) {
	key := mfed.GenerateSigningKey()
	addr := serve(t, NewKeyServer("peer.example", key, "test"))
	query := fmt.Sprintf(`{"server_keys":{"peer.example":{%q:{}}}}`, key.ID)
	cases := []struct {
		name, method, path, body string
		wantStatus               int
		want                     []string // substrings of the body
		wantAllow                string
	}{
		{"own key", "GET", "/_matrix/key/v2/server", "", 200, []string{`"server_name":"peer.example"`, string(key.Pub)}, ""},
		{"query by GET", "GET", "/_matrix/key/v2/query/peer.example", "", 200, []string{`"server_name":"peer.example"`}, ""},
		{"query by POST", "POST", "/_matrix/key/v2/query", query, 200, []string{`"server_name":"peer.example"`, string(key.Pub)}, ""},
		{"version", "GET", "/_matrix/federation/v1/version", "", 200, []string{`"name":"roomsync"`, `"version":"test"`}, ""},
		{"query of bad JSON", "POST", "/_matrix/key/v2/query", "{", 400, []string{`"errcode":"M_NOT_JSON"`}, ""},
		{"unknown path", "GET", "/_matrix/federation/v1/nope", "", 404, []string{`"errcode":"M_UNRECOGNIZED"`}, ""},
		{"root", "GET", "/", "", 404, []string{`"errcode":"M_UNRECOGNIZED"`}, ""},
		// ServeMux would redirect these to the route they clean to, with an HTML body.
		{"doubled slash", "GET", "/_matrix/key/v2/query//peer.example", "", 404, []string{`"errcode":"M_UNRECOGNIZED"`}, ""},
		{"dot segment", "GET", "/_matrix/key/v2/./server", "", 404, []string{`"errcode":"M_UNRECOGNIZED"`}, ""},
		{"dot-dot segment", "GET", "/_matrix/key/v2/query/../server", "", 404, []string{`"errcode":"M_UNRECOGNIZED"`}, ""},
		{"known path, wrong method", "GET", "/_matrix/key/v2/query", "", 405, []string{`"errcode":"M_UNRECOGNIZED"`}, "POST"},
		{"PUT on a GET route", "PUT", "/_matrix/key/v2/server", "", 405, []string{`"errcode":"M_UNRECOGNIZED"`}, "GET, HEAD"},
		{"body on a GET route", "GET", "/_matrix/key/v2/server", "x", 413, []string{`"errcode":"M_TOO_LARGE"`}, ""},
		{"query over the cap", "POST", "/_matrix/key/v2/query", strings.Repeat(" ", KeyQueryMaxBody+1), 413, []string{`"errcode":"M_TOO_LARGE"`}, ""},
		{"query at the cap", "POST", "/_matrix/key/v2/query", query + strings.Repeat(" ", KeyQueryMaxBody-len(query)), 200, []string{string(key.Pub)}, ""},
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
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, got)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if !json.Valid(got) {
				t.Errorf("body is not JSON: %s", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(got), w) {
					t.Errorf("body does not contain %s: %s", w, got)
				}
			}
			if allow := resp.Header.Get("Allow"); allow != tc.wantAllow {
				t.Errorf("Allow %q, want %q", allow, tc.wantAllow)
			}
		})
	}
}

// TestServerRefusesOversizedBodyWithoutHoldingIt sends a 100 MB key query, with its length
// declared and chunked, and checks the answer is 413 and the heap never held the body.
func TestServerRefusesOversizedBodyWithoutHoldingIt(t *testing.T) {
	const size = 100 << 20
	addr := serve(t, NewKeyServer("peer.example", mfed.GenerateSigningKey(), "test"))
	cases := []struct {
		name    string
		chunked bool
	}{
		{"declared length", false},
		{"chunked", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// With the collector off nothing is freed, so the growth of HeapAlloc over the
			// request is the peak the request reached.
			runtime.GC()
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)

			status, body, sent := postHuge(t, addr, size, tc.chunked)

			runtime.ReadMemStats(&after)
			grew := after.HeapAlloc - before.HeapAlloc
			t.Logf("%s: %d KiB of the %d MiB body sent before the server hung up; heap grew by %d KiB (%d KiB allocated in all)",
				tc.name, sent>>10, size>>20, grew>>10, (after.TotalAlloc-before.TotalAlloc)>>10)
			if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"errcode":"M_TOO_LARGE"`) {
				t.Errorf("answer %d %s, want 413 M_TOO_LARGE", status, body)
			}
			if grew > size/20 {
				t.Errorf("the heap grew by %d bytes for a %d-byte body: it was held in memory", grew, size)
			}
		})
	}
}

// postHuge sends a POST /_matrix/key/v2/query with a body of size bytes, on a raw connection
// so that the server may answer while the body is still being sent, and returns the answer
// and how many bytes of the body the connection took.
func postHuge(t *testing.T, addr string, size int, chunked bool) (status int, answer string, sent int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	head := "POST /_matrix/key/v2/query HTTP/1.1\r\nHost: peer.example\r\nContent-Type: application/json\r\n"
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n\r\n", size)
	}
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	written := make(chan struct{})
	go func() {
		defer close(written)
		// A JSON string that never ends, which a decoder would hold whole.
		body := io.MultiReader(strings.NewReader(`{"server_keys":{"`), io.LimitReader(repeatByte('a'), int64(size)))
		buf := make([]byte, 64<<10)
		for sent < size {
			n, _ := io.ReadFull(body, buf[:min(len(buf), size-sent)])
			if chunked {
				if _, err := fmt.Fprintf(conn, "%x\r\n", n); err != nil {
					return
				}
			}
			if _, err := conn.Write(buf[:n]); err != nil {
				return // the server hung up, as it should
			}
			if chunked {
				if _, err := io.WriteString(conn, "\r\n"); err != nil {
					return
				}
			}
			sent += n
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	conn.Close()
	<-written
	return resp.StatusCode, string(body), sent
}

// repeatByte reads as an endless run of one byte.
type repeatByte byte

func (b repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// TestServerCutsOffSlowClients trickles a request one byte at a time and checks the server
// hangs up once its read timeouts pass, long before the client would be done.
func TestServerCutsOffSlowClients(t *testing.T) {
	s := NewKeyServer("peer.example", mfed.GenerateSigningKey(), "test")
	s.ReadHeaderTimeout = 200 * time.Millisecond
	s.ReadTimeout = 400 * time.Millisecond
	s.WriteTimeout = time.Second
	addr := serve(t, s)
	cases := []struct {
		name, head string
	}{
		{"headers", "POST /_matrix/key/v2/query HTTP/1.1\r\nHost: peer.example\r\nX-Slow: "},
		{"body", "POST /_matrix/key/v2/query HTTP/1.1\r\nHost: peer.example\r\nContent-Length: 1000\r\n\r\n"},
	}
	const clients = 5
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, clients)
			for range clients {
				go func() { errs <- trickle(addr, tc.head) }()
			}
			for range clients {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// trickle sends head, then a byte every 20ms for up to 8s, and reports an error unless the
// server closes the connection within 4s.
func trickle(addr, head string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, head); err != nil {
		return err
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for range 400 {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := conn.Write([]byte("a")); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-stopped }()
	if err := conn.SetReadDeadline(time.Now().Add(4 * time.Second)); err != nil {
		return err
	}
	// Whatever the server says before hanging up (a 408, or nothing) is read and dropped.
	_, err = io.Copy(io.Discard, conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("a client trickling %q was still connected after 4s", strings.SplitN(head, "\r\n", 2)[0])
	}
	return nil
}

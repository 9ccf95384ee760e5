package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// exportServer serves st's exports as the manager's metrics listener does: the handler
// under exportPattern on a plain ServeMux (controller-runtime's metrics server registers
// its extra handlers so).
func exportServer(t *testing.T, st store.Store) (*httptest.Server, *exportHandler) {
	t.Helper()
	h := newExportHandler(st, logr.Discard())
	mux := http.NewServeMux()
	mux.Handle(exportPattern, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, h
}

// get requests the export of roomID with query and headers, without the client's own gzip
// handling, and returns the response with its body read (trailers are set then).
func get(t *testing.T, srv *httptest.Server, method, roomID, query string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/rooms/"+url.PathEscape(roomID)+"/export?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the body: %v", err)
	}
	return resp, body
}

// TestExportHTTP: the endpoint streams the same bytes as the CLI for each format, gzip on
// Accept-Encoding or as a .gz file, with the cursor in the trailer; bad requests are 400,
// an unknown room 404, more exports than allowed at once 503.
func TestExportHTTP(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 55, Events: 120, JoinRate: 0.05})
	roomID := string(room.ID)
	storeURL := "sqlite://" + filepath.Join(t.TempDir(), "events.db")
	syncWithCLI(t, storeURL, room, fixturepeer.Start(t, room))
	st, err := store.OpenReadOnly(context.Background(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, h := exportServer(t, st)

	for _, format := range []string{"pdus", "events", "text"} {
		cli, cursor := exportWithCLI(t, "--store", storeURL, "--room", roomID, "--format", format)
		for _, c := range []struct {
			name, query, encoding, contentType string
			header                             http.Header
		}{
			{"plain", "format=" + format, "", "", nil},
			{"Accept-Encoding", "format=" + format, "gzip", "", http.Header{"Accept-Encoding": {"br;q=1.0, gzip;q=0.8"}}},
			{"gzip file", "format=" + format + "&gzip=true", "", "application/gzip", nil},
		} {
			t.Run(format+"/"+c.name, func(t *testing.T) {
				resp, body := get(t, srv, http.MethodGet, roomID, c.query, c.header)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if got := resp.Header.Get("Content-Encoding"); got != c.encoding {
					t.Errorf("Content-Encoding %q, want %q", got, c.encoding)
				}
				want := export.Format(format).ContentType()
				if c.contentType != "" {
					want = c.contentType
				}
				if got := resp.Header.Get("Content-Type"); got != want {
					t.Errorf("Content-Type %q, want %q", got, want)
				}
				if c.encoding != "" || c.contentType != "" {
					body = gunzip(t, body)
				}
				if !bytes.Equal(body, cli) {
					t.Errorf("%d bytes, the CLI's export %d", len(body), len(cli))
				}
				if got := resp.Trailer.Get(cursorTrailer); got != cursor {
					t.Errorf("trailer %s %q, want the CLI's cursor %q", cursorTrailer, got, cursor)
				}
			})
		}
	}

	t.Run("after the cursor", func(t *testing.T) {
		_, cursor := exportWithCLI(t, "--store", storeURL, "--room", roomID)
		resp, body := get(t, srv, http.MethodGet, roomID, "after="+url.QueryEscape(cursor), nil)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Trailer.Get(cursorTrailer) != cursor {
			t.Errorf("status %d, %d bytes, cursor %q: want 200, nothing, the same cursor", resp.StatusCode, len(body), resp.Trailer.Get(cursorTrailer))
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp, body := get(t, srv, http.MethodHead, roomID, "format=text", nil)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("HEAD: %d, %d bytes, %s", resp.StatusCode, len(body), resp.Header.Get("Content-Type"))
		}
	})

	for _, c := range []struct {
		name, room, query string
		status            int
		want              string
	}{
		{"unknown format", roomID, "format=csv", 400, `unknown format "csv"`},
		{"unknown parameter", roomID, "fromat=text", 400, `unknown query parameter "fromat"`},
		{"parameter twice", roomID, "format=text&format=pdus", 400, "given 2 times"},
		{"bad time", roomID, "since=yesterday", 400, `since: time "yesterday"`},
		{"empty range", roomID, "since=2000&until=1000", 400, "is not before until"},
		{"bad gzip", roomID, "gzip=maybe", 400, `gzip "maybe"`},
		{"malformed cursor", roomID, "after=nope", 400, "malformed cursor"},
		{"cursor of another room", roomID, "after=" + export.Cursor{RoomID: "!other:x", Seq: 1}.String(), 400, "the cursor is for room !other:x"},
		{"unknown room", "!nope:example.org", "", 404, "the store holds no room !nope:example.org"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, srv, http.MethodGet, c.room, c.query, nil)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.want) {
				t.Errorf("%d %q, want %d saying %q", resp.StatusCode, body, c.status, c.want)
			}
			if resp.Trailer.Get(cursorTrailer) != "" {
				t.Error("a refused export sent a cursor")
			}
		})
	}
	t.Run("busy", func(t *testing.T) {
		for range maxConcurrentExports {
			h.slots <- struct{}{}
		}
		defer func() {
			for range maxConcurrentExports {
				<-h.slots
			}
		}()
		resp, _ := get(t, srv, http.MethodGet, roomID, "", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("with every slot taken: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
}

// failingStore fails every events page after the first failAfter.
type failingStore struct {
	store.Store
	failAfter, pages int
}

func (s *failingStore) QueryEvents(ctx context.Context, roomID string, q store.EventQuery) ([]store.SequencedEvent, error) {
	if s.pages++; s.pages > s.failAfter {
		return nil, errors.New("disk on fire")
	}
	return s.Store.QueryEvents(ctx, roomID, q)
}

// TestExportHTTPFailures: an export that fails before anything was sent is a 500; one that
// fails once the body has begun is broken off, so the client sees an error and no cursor,
// never a body that looks complete.
func TestExportHTTPFailures(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const roomID = "!big:example.org"
	var events []store.Event
	prev := []string(nil)
	for i := range 1200 { // pages of more than the handler buffers
		id := fmt.Sprintf("$%04d", i)
		raw := fmt.Sprintf(`{"n":%d,"padding":%q}`, i, strings.Repeat("x", 300))
		events = append(events, store.Event{ID: id, RoomID: roomID, Depth: int64(i + 1), Type: "m.room.message",
			Sender: "@a:example.org", Origin: "example.org", PrevEvents: prev, Raw: []byte(raw)})
		prev = []string{id}
	}
	if _, err := st.InsertEvents(ctx, roomID, events); err != nil {
		t.Fatal(err)
	}

	srv, _ := exportServer(t, &failingStore{Store: st, failAfter: 0})
	resp, body := get(t, srv, http.MethodGet, roomID, "", nil)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(string(body), "disk on fire") {
		t.Errorf("failing at once: %d %q, want 500 without the store's words", resp.StatusCode, body)
	}

	// Uncompressed, so that the first page fills the buffers and the status goes out.
	srv, _ = exportServer(t, &failingStore{Store: st, failAfter: 1})
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Get(srv.URL + "/rooms/" + roomID + "/export")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 then a broken body", resp.StatusCode)
	}
	if body, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("read %d bytes without an error: the broken export looked complete", len(body))
	}
	if resp.Trailer.Get(cursorTrailer) != "" {
		t.Error("a broken export sent a cursor")
	}
}

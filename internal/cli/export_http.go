package cli

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/store"
)

// exportPattern is the manager's export endpoint, on its metrics listener (and behind its
// filter, when one is set): `roomsync export` for those with cluster access but no shell.
const exportPattern = "GET /rooms/{roomId}/export"

// cursorTrailer carries the cursor of a complete export. A trailer, not a header: it is
// sent after the body, so it is present only when the export ran to its end.
const cursorTrailer = "X-Roomsync-Cursor"

// maxConcurrentExports bounds the exports served at once: each holds a store connection and
// a core while it runs, and the manager has a room to sync too.
const maxConcurrentExports = 2

// exportQueryParams are the query parameters the endpoint takes; any other is refused, so
// that a misspelt one does not silently export something else.
var exportQueryParams = map[string]bool{"format": true, "since": true, "until": true, "after": true, "gzip": true}

// exportHandler serves GET /rooms/{roomId}/export?format=&since=&until=&after=&gzip=: the
// same bytes as `roomsync export`, streamed, gzip-encoded when the client accepts it
// (Accept-Encoding) or as a .gz file with gzip=true, and the cursor in the
// X-Roomsync-Cursor trailer.
type exportHandler struct {
	st    store.Store
	log   logr.Logger
	slots chan struct{}
}

func newExportHandler(st store.Store, log logr.Logger) *exportHandler {
	return &exportHandler{st: st, log: log, slots: make(chan struct{}, maxConcurrentExports)}
}

func (h *exportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	opts, gzipFile, err := exportOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("%d exports are running already; try again later", maxConcurrentExports), http.StatusServiceUnavailable)
		return
	}
	ctx := r.Context()
	ex, err := export.New(ctx, h.st, opts)
	switch {
	case errors.Is(err, export.ErrUnknownRoom):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case errors.Is(err, export.ErrBadInput):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		h.log.Error(err, "Export failed", "room", opts.RoomID)
		http.Error(w, "the store failed; see the manager's log", http.StatusInternalServerError)
		return
	}

	hdr := w.Header()
	hdr.Set("Content-Type", ex.Format().ContentType())
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Trailer", cursorTrailer)
	hdr.Add("Vary", "Accept-Encoding")
	name := fileName(opts.RoomID) + "-" + string(ex.Format()) + ex.Format().Extension()
	sent := &countingWriter{w: w}
	var body io.Writer = sent
	var zw *gzip.Writer
	switch {
	case gzipFile:
		name += ".gz"
		hdr.Set("Content-Type", "application/gzip")
		zw = gzip.NewWriter(sent)
	case acceptsGzip(r.Header.Get("Accept-Encoding")):
		hdr.Set("Content-Encoding", "gzip")
		zw = gzip.NewWriter(sent)
	}
	hdr.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	if zw != nil {
		body = zw
	}
	start := time.Now()
	n, err := ex.Run(ctx, body)
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err != nil && sent.n == 0 {
		// Nothing reached the response yet (the first pages are buffered): a plain error
		// still can.
		h.log.Error(err, "Export failed", "room", opts.RoomID)
		for _, k := range []string{"Trailer", "Content-Encoding", "Content-Disposition", "Vary"} {
			hdr.Del(k)
		}
		http.Error(w, "the export failed; see the manager's log", http.StatusInternalServerError)
		return
	}
	if err != nil {
		// The status may be sent: break the response off, so that the client sees a
		// truncated body or none (and no cursor), never an export that looks complete.
		h.log.Error(err, "Export broken off", "room", opts.RoomID, "events", n)
		panic(http.ErrAbortHandler)
	}
	hdr.Set(cursorTrailer, ex.Cursor().String())
	h.log.Info("Exported a room", "room", opts.RoomID, "format", ex.Format(), "events", n,
		"took", time.Since(start).Round(time.Millisecond), "after", opts.After != "")
}

// countingWriter counts the bytes that reached the response.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// exportOptions reads the request's room and query; errors are the client's.
func exportOptions(r *http.Request) (opts export.Options, gzipFile bool, err error) {
	q := r.URL.Query()
	for name, values := range q {
		switch {
		case !exportQueryParams[name]:
			return opts, false, fmt.Errorf("unknown query parameter %q: want format, since, until, after or gzip", name)
		case len(values) > 1:
			return opts, false, fmt.Errorf("query parameter %q given %d times", name, len(values))
		}
	}
	opts = export.Options{RoomID: r.PathValue("roomId"), After: q.Get("after")}
	if opts.Format, err = export.ParseFormat(q.Get("format")); err != nil {
		return opts, false, err
	}
	for _, b := range []struct {
		name string
		into *time.Time
	}{{"since", &opts.Since}, {"until", &opts.Until}} {
		if v := q.Get(b.name); v != "" {
			if *b.into, err = export.ParseTime(v); err != nil {
				return opts, false, fmt.Errorf("%s: %w", b.name, err)
			}
		}
	}
	if v := q.Get("gzip"); v != "" {
		if gzipFile, err = strconv.ParseBool(v); err != nil {
			return opts, false, fmt.Errorf("gzip %q: want true or false", v)
		}
	}
	return opts, gzipFile, nil
}

// acceptsGzip reads an Accept-Encoding header: gzip listed without q=0.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, found := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if !found {
			return true
		}
		weight, err := strconv.ParseFloat(q, 64)
		return err == nil && weight > 0
	}
	return false
}

// fileName makes a room ID safe as a file name in a Content-Disposition header.
func fileName(roomID string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, roomID)
}

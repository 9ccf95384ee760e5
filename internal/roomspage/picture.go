package roomspage

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/roomsync/roomsync/internal/dagview"
	"github.com/roomsync/roomsync/store"
)

// Bounds on a picture: the depths drawn around its centre, and the events read.
const (
	defaultPictureDepth = 30
	maxPictureDepth     = 300
	maxPictureEvents    = 20_000
	// maxHeadsRead bounds the heads read to find the newest, where the picture is centred
	// when the request names no event.
	maxHeadsRead = 100
)

// picture serves /rooms/{roomId}/dag.svg[?around=EVENT_ID][&depth=N]: the DAG around an event,
// or around the room's newest head.
func (h *Handlers) picture(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	roomID := r.PathValue("roomId")
	depth := int64(defaultPictureDepth)
	if d := r.URL.Query().Get("depth"); d != "" {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n < 0 || n > maxPictureDepth {
			http.Error(w, "depth: want a number from 0 to "+strconv.Itoa(maxPictureDepth), http.StatusBadRequest)
			return
		}
		depth = n
	}
	around := r.URL.Query().Get("around")
	if _, err := h.Store.Room(ctx, roomID); errors.Is(err, store.ErrNotFound) {
		http.Error(w, "the store holds no such room", http.StatusNotFound)
		return
	} else if err != nil {
		h.fail(w, err, roomID)
		return
	}
	if around == "" {
		var err error
		if around, err = newestHead(ctx, h.Store, roomID); err != nil {
			h.fail(w, err, roomID)
			return
		}
	}
	opts := dagview.Options{Around: around, Depth: depth, MaxEvents: maxPictureEvents}
	if around == "" {
		opts = dagview.Options{MaxEvents: maxPictureEvents} // an empty room
	}
	g, err := dagview.Build(ctx, h.Store, roomID, opts)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "the store holds no such event or gap in the room", http.StatusNotFound)
		return
	}
	if err != nil {
		h.fail(w, err, roomID)
		return
	}
	setHeaders(w, "image/svg+xml")
	if err := dagview.WriteSVG(w, g); err != nil {
		h.Log.Error(err, "Write a DAG picture", "room", roomID)
	}
}

// fail answers 500 without the store's words (the page may be reached by anyone who reaches
// the metrics port) and logs them.
func (h *Handlers) fail(w http.ResponseWriter, err error, roomID string) {
	h.Log.Error(err, "Draw a DAG picture", "room", roomID)
	http.Error(w, "the picture could not be drawn; see the manager's log", http.StatusInternalServerError)
}

// newestHead is the deepest of (up to maxHeadsRead of) the room's forward extremities; ""
// for a room without events.
func newestHead(ctx context.Context, st store.Store, roomID string) (string, error) {
	heads, err := st.ForwardExtremities(ctx, roomID)
	if err != nil || len(heads) == 0 {
		return "", err
	}
	events, err := st.Events(ctx, heads[:min(len(heads), maxHeadsRead)])
	if err != nil {
		return "", err
	}
	best := ""
	var bestDepth int64 = -1
	for _, id := range heads[:min(len(heads), maxHeadsRead)] {
		if e, ok := events[id]; ok && e.Depth > bestDepth {
			best, bestDepth = id, e.Depth
		}
	}
	return best, nil
}

// Package roomspage serves, on the manager's metrics listener, a read-only page of every
// RoomSync's rooms: convergence, gaps (with what the peers answered) and a picture of each
// room's DAG, for people who reach the manager with `kubectl port-forward`. It needs nothing
// outside the page: no scripts, no external styles or images.
package roomspage

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/dagview"
	"github.com/roomsync/roomsync/store"
)

// Bounds on the work of one request: a page lists at most this many RoomSyncs and rooms each,
// and reads at most this many gaps a room from the store.
const (
	maxRoomSyncs   = 50
	maxRoomsShown  = 50
	maxGapsShown   = 10
	requestTimeout = 15 * time.Second
)

// Patterns of the page and of the pictures, for http.ServeMux (Go 1.22 patterns: "/rooms"
// alone, not the subtree, so other routes under /rooms/{roomId}/ can live beside them).
const (
	PagePattern    = "GET /rooms"
	PicturePattern = "GET /rooms/{roomId}/dag.svg"
)

// Handlers serve the page and the pictures from the RoomSyncs a client reads (the manager's
// cached client) and the store.
type Handlers struct {
	Client client.Reader
	Store  store.Store
	Log    logr.Logger
}

// Register adds the page and the picture to a listener, through add (such as the manager's
// AddMetricsServerExtraHandler, which puts them behind the metrics filter when there is one).
func (h *Handlers) Register(add func(pattern string, handler http.Handler) error) error {
	if err := add(PagePattern, http.HandlerFunc(h.page)); err != nil {
		return fmt.Errorf("add the rooms page: %w", err)
	}
	if err := add(PicturePattern, http.HandlerFunc(h.picture)); err != nil {
		return fmt.Errorf("add the DAG pictures: %w", err)
	}
	return nil
}

// pageData is what the template shows.
type pageData struct {
	Generated string
	RoomSyncs []roomSyncView
	Error     string
	Truncated bool
}

type roomSyncView struct {
	Namespace, Name string
	Ready           string // True, False, Unknown
	ReadyReason     string
	ReadyMessage    string
	Summary         roomsyncv1alpha1.Summary
	Peers           []roomsyncv1alpha1.PeerStatus
	Rooms           []roomView
	MoreRooms       int
}

type roomView struct {
	roomsyncv1alpha1.RoomStatus
	PictureURL string
	// GapList are the first gaps the store holds (RoomStatus.Gaps is their number).
	GapList   []gapView
	MoreGaps  bool
	GapsError string
}

type gapView struct {
	dagview.Gap
	PictureURL string
	NextRetry  string
}

func (h *Handlers) page(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	data := pageData{Generated: time.Now().UTC().Format(time.RFC3339)}
	var list roomsyncv1alpha1.RoomSyncList
	if err := h.Client.List(ctx, &list); err != nil {
		h.Log.Error(err, "List RoomSyncs for the rooms page")
		data.Error = "the RoomSyncs could not be read; see the manager's log"
	}
	items := list.Items
	slices.SortFunc(items, func(a, b roomsyncv1alpha1.RoomSync) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if len(items) > maxRoomSyncs {
		items, data.Truncated = items[:maxRoomSyncs], true
	}
	for _, rs := range items {
		data.RoomSyncs = append(data.RoomSyncs, h.roomSyncView(ctx, rs))
	}
	setHeaders(w, "text/html; charset=utf-8")
	if err := pageTemplate.Execute(w, data); err != nil {
		h.Log.Error(err, "Write the rooms page")
	}
}

func (h *Handlers) roomSyncView(ctx context.Context, rs roomsyncv1alpha1.RoomSync) roomSyncView {
	v := roomSyncView{Namespace: rs.Namespace, Name: rs.Name, Ready: "Unknown", Summary: rs.Status.Summary, Peers: rs.Status.Peers}
	if c := meta.FindStatusCondition(rs.Status.Conditions, "Ready"); c != nil {
		v.Ready, v.ReadyReason, v.ReadyMessage = string(c.Status), c.Reason, c.Message
	}
	rooms := rs.Status.Rooms
	if len(rooms) > maxRoomsShown {
		v.MoreRooms = len(rooms) - maxRoomsShown
		rooms = rooms[:maxRoomsShown]
	}
	for _, st := range rooms {
		room := roomView{RoomStatus: st, PictureURL: pictureURL(st.ID, "")}
		gaps, err := dagview.Gaps(ctx, h.Store, st.ID, store.BackwardFilter{Limit: maxGapsShown + 1}, 3)
		if err != nil {
			h.Log.Error(err, "Read gaps for the rooms page", "room", st.ID)
			room.GapsError = "the gaps could not be read; see the manager's log"
		}
		if len(gaps) > maxGapsShown {
			gaps, room.MoreGaps = gaps[:maxGapsShown], true
		}
		for _, g := range gaps {
			next := "next pass"
			if !g.NextAttemptAt.IsZero() {
				next = g.NextAttemptAt.UTC().Format(time.RFC3339)
			}
			room.GapList = append(room.GapList, gapView{Gap: g, PictureURL: pictureURL(st.ID, g.EventID), NextRetry: next})
		}
		v.Rooms = append(v.Rooms, room)
	}
	return v
}

// pictureURL is the address of a room's picture, around an event when one is given.
func pictureURL(roomID, around string) string {
	u := "/rooms/" + url.PathEscape(roomID) + "/dag.svg"
	if around != "" {
		u += "?around=" + url.QueryEscape(around)
	}
	return u
}

// setHeaders marks a response as standalone: nothing may be loaded from elsewhere, and the
// page may not be framed.
func setHeaders(w http.ResponseWriter, contentType string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
}

func mustParse(name, text string) *template.Template {
	return template.Must(template.New(name).Funcs(template.FuncMap{
		"short": func(s string, n int) string {
			if r := []rune(s); len(r) > n {
				return string(r[:n-1]) + "…"
			}
			return s
		},
	}).Parse(text))
}

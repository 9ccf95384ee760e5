package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
)

// Caps of the history endpoints, as the homeservers that serve them apply them: Synapse and
// Dendrite serve at most 100 events a /backfill, Synapse 20 a /get_missing_events (10 when
// the request names no limit).
const (
	BackfillMaxLimit          = 100
	MissingEventsDefaultLimit = 10
	MissingEventsMaxLimit     = 20
	// MissingEventsMaxBody bounds a /get_missing_events body: two lists of event IDs (about
	// 45 bytes each), so 64 KiB holds well over a thousand.
	MissingEventsMaxBody = 64 << 10
)

// Endpoint names of the history routes, as ServeObserver hears them.
const (
	EndpointBackfill      = "backfill"
	EndpointMissingEvents = "get_missing_events"
	EndpointEvent         = "event"
	EndpointStateIDs      = "state_ids"
	EndpointState         = "state"
	EndpointEventAuth     = "event_auth"
)

// HistoryEndpoints lists the history routes' endpoint names.
var HistoryEndpoints = []string{EndpointBackfill, EndpointMissingEvents, EndpointEvent, EndpointStateIDs, EndpointState, EndpointEventAuth}

// HistorySource answers the history requests of origin, the server that signed the request.
// PDUs are returned as they go on the wire (canonical JSON, signatures intact), in the order
// to answer them. An error refuses the request: a mautrix.RespError is answered as it is (403
// M_FORBIDDEN for a server that may not read the room, 404 M_NOT_FOUND for an event not
// served), any other as a 500.
type HistorySource interface {
	// Backfill returns up to limit events of the room, from the events of from (included)
	// back through their prev events, newest first.
	Backfill(ctx context.Context, origin, roomID string, from []string, limit int) ([]json.RawMessage, error)
	// MissingEvents returns up to req.Limit events before req.Latest and after req.Earliest,
	// oldest first.
	MissingEvents(ctx context.Context, origin, roomID string, req MissingEventsRequest) ([]json.RawMessage, error)
	// Event returns one event.
	Event(ctx context.Context, origin, eventID string) (json.RawMessage, error)
	// StateIDs returns the IDs of the room state before an event and of its auth chain.
	StateIDs(ctx context.Context, origin, roomID, eventID string) (state, authChain []string, err error)
	// State is StateIDs with the events themselves.
	State(ctx context.Context, origin, roomID, eventID string) (state, authChain []json.RawMessage, err error)
	// EventAuth returns the auth chain of an event.
	EventAuth(ctx context.Context, origin, roomID, eventID string) ([]json.RawMessage, error)
}

// MissingEventsRequest is a /get_missing_events body, its limit capped.
type MissingEventsRequest struct {
	Earliest, Latest []string
	Limit            int
	MinDepth         int64
}

// ServeObserver hears about every history request answered (once authenticated): the
// endpoint, how it ended, how many events it served and how long it took. Methods must be
// cheap and safe for concurrent use.
type ServeObserver interface {
	Served(endpoint string, outcome Outcome, events int, took time.Duration)
}

type nopServeObserver struct{}

func (nopServeObserver) Served(string, Outcome, int, time.Duration) {}

// HandleHistory serves the history of the rooms src holds, under our serverName, to servers
// that sign their requests (see RequireAuth): /backfill, /get_missing_events, /event,
// /state_ids, /state and /event_auth. Limits are capped as BackfillMaxLimit and
// MissingEventsMaxLimit say. A nil src registers nothing; a nil obs hears nothing.
func (s *Server) HandleHistory(serverName string, src HistorySource, obs ServeObserver) {
	if src == nil {
		return
	}
	if obs == nil {
		obs = nopServeObserver{}
	}
	h := &historyRoutes{serverName: serverName, src: src, obs: obs}
	for _, r := range []struct {
		method, path, endpoint string
		maxBody                int64
		serve                  historyHandler
	}{
		{http.MethodGet, "/_matrix/federation/v1/backfill/{roomId}", EndpointBackfill, 0, h.backfill},
		{http.MethodPost, "/_matrix/federation/v1/get_missing_events/{roomId}", EndpointMissingEvents, MissingEventsMaxBody, h.missingEvents},
		{http.MethodGet, "/_matrix/federation/v1/event/{eventId}", EndpointEvent, 0, h.event},
		{http.MethodGet, "/_matrix/federation/v1/state_ids/{roomId}", EndpointStateIDs, 0, h.stateIDs},
		{http.MethodGet, "/_matrix/federation/v1/state/{roomId}", EndpointState, 0, h.state},
		{http.MethodGet, "/_matrix/federation/v1/event_auth/{roomId}/{eventId}", EndpointEventAuth, 0, h.eventAuth},
	} {
		s.HandleAuthenticated(r.method, r.path, r.maxBody, h.route(r.endpoint, r.serve))
	}
}

type historyRoutes struct {
	serverName string
	src        HistorySource
	obs        ServeObserver
}

// historyHandler answers one history request: the body to send and how many events it
// holds, or the error refusing it.
type historyHandler func(r *http.Request, origin string) (body []byte, events int, err error)

func (h *historyRoutes) route(endpoint string, serve historyHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, events, err := serve(r, mfed.OriginServerName(r.Context()))
		if err != nil {
			outcome := servedOutcome(err)
			h.obs.Served(endpoint, outcome, 0, time.Since(start))
			if outcome == OutcomeServerError {
				// The cause (a store error) is the source's to log; it is not the
				// requester's business.
				mautrix.MUnknown.WithStatus(http.StatusInternalServerError).WithMessage("internal error serving %s", endpoint).Write(w)
				return
			}
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		h.obs.Served(endpoint, OutcomeOK, events, time.Since(start))
	})
}

// servedOutcome classifies the error that refused a request.
func servedOutcome(err error) Outcome {
	var respErr mautrix.RespError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	case !errors.As(err, &respErr):
		return OutcomeServerError
	case respErr.StatusCode == http.StatusForbidden:
		return OutcomeForbidden
	case respErr.StatusCode == http.StatusNotFound:
		return OutcomeNotFound
	case respErr.StatusCode >= 500:
		return OutcomeServerError
	}
	return OutcomeBadRequest
}

// errMissingParam is the spec's M_MISSING_PARAM, which mautrix does not name.
var errMissingParam = mautrix.RespError{ErrCode: "M_MISSING_PARAM", StatusCode: http.StatusBadRequest}

func (h *historyRoutes) backfill(r *http.Request, origin string) ([]byte, int, error) {
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, 0, errMissingParam.WithMessage("v (the events to backfill from) is required")
	}
	limit := BackfillMaxLimit
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			return nil, 0, mautrix.MInvalidParam.WithMessage("limit must be a positive integer, not %q", raw)
		}
		limit = min(n, BackfillMaxLimit)
	}
	pdus, err := h.src.Backfill(r.Context(), origin, r.PathValue("roomId"), from, limit)
	if err != nil {
		return nil, 0, err
	}
	return h.transaction(pdus), len(pdus), nil
}

func (h *historyRoutes) missingEvents(r *http.Request, origin string) ([]byte, int, error) {
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    *int     `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	raw, err := io.ReadAll(r.Body) // bounded by MissingEventsMaxBody
	if err != nil {
		return nil, 0, err
	}
	if !json.Valid(raw) {
		return nil, 0, mautrix.MNotJSON.WithMessage("get_missing_events body is not JSON")
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, 0, mautrix.MBadJSON.WithMessage("get_missing_events body is malformed: %v", err)
	}
	req := MissingEventsRequest{Earliest: body.Earliest, Latest: body.Latest, Limit: MissingEventsDefaultLimit, MinDepth: body.MinDepth}
	if body.Limit != nil {
		if *body.Limit < 1 {
			return nil, 0, mautrix.MInvalidParam.WithMessage("limit must be a positive integer, not %d", *body.Limit)
		}
		req.Limit = min(*body.Limit, MissingEventsMaxLimit)
	}
	events, err := h.src.MissingEvents(r.Context(), origin, r.PathValue("roomId"), req)
	if err != nil {
		return nil, 0, err
	}
	return rawObject(rawField{"events", rawArray(events)}), len(events), nil
}

func (h *historyRoutes) event(r *http.Request, origin string) ([]byte, int, error) {
	ev, err := h.src.Event(r.Context(), origin, r.PathValue("eventId"))
	if err != nil {
		return nil, 0, err
	}
	return h.transaction([]json.RawMessage{ev}), 1, nil
}

// stateEventID is the event_id parameter of /state and /state_ids.
func stateEventID(r *http.Request) (string, error) {
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return "", errMissingParam.WithMessage("event_id is required")
	}
	return eventID, nil
}

func (h *historyRoutes) stateIDs(r *http.Request, origin string) ([]byte, int, error) {
	eventID, err := stateEventID(r)
	if err != nil {
		return nil, 0, err
	}
	state, chain, err := h.src.StateIDs(r.Context(), origin, r.PathValue("roomId"), eventID)
	if err != nil {
		return nil, 0, err
	}
	body, err := json.Marshal(struct {
		AuthChain []string `json:"auth_chain_ids"`
		PDUs      []string `json:"pdu_ids"`
	}{nonNil(chain), nonNil(state)})
	return body, 0, err
}

func (h *historyRoutes) state(r *http.Request, origin string) ([]byte, int, error) {
	eventID, err := stateEventID(r)
	if err != nil {
		return nil, 0, err
	}
	state, chain, err := h.src.State(r.Context(), origin, r.PathValue("roomId"), eventID)
	if err != nil {
		return nil, 0, err
	}
	return rawObject(rawField{"auth_chain", rawArray(chain)}, rawField{"pdus", rawArray(state)}), len(state) + len(chain), nil
}

func (h *historyRoutes) eventAuth(r *http.Request, origin string) ([]byte, int, error) {
	chain, err := h.src.EventAuth(r.Context(), origin, r.PathValue("roomId"), r.PathValue("eventId"))
	if err != nil {
		return nil, 0, err
	}
	return rawObject(rawField{"auth_chain", rawArray(chain)}), len(chain), nil
}

// transaction is the envelope of /backfill and /event answers.
func (h *historyRoutes) transaction(pdus []json.RawMessage) []byte {
	origin, _ := json.Marshal(h.serverName)
	return rawObject(
		rawField{"origin", origin},
		rawField{"origin_server_ts", strconv.AppendInt(nil, time.Now().UnixMilli(), 10)},
		rawField{"pdus", rawArray(pdus)},
	)
}

// rawField is a member of a JSON object whose value is JSON already.
type rawField struct {
	name  string
	value []byte
}

// rawObject writes an object of fields as they are. PDUs go out byte for byte as stored:
// encoding/json would re-encode them (escaping <, > and & among other things), and the
// answer would no longer be the canonical JSON that was signed.
func rawObject(fields ...rawField) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(f.name)
		b.Write(name)
		b.WriteByte(':')
		b.Write(f.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// rawArray is a JSON array of values that are JSON already.
func rawArray(values []json.RawMessage) []byte {
	size := 2
	for _, v := range values {
		size += len(v) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, '[')
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	return append(b, ']')
}

// nonNil makes a nil list an empty one, so it encodes as [] rather than null.
func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

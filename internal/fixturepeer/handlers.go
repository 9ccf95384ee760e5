package fixturepeer

import (
	"cmp"
	"container/heap"
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

func (p *Peer) version(*http.Request, []lieState) (int, any) {
	return http.StatusOK, map[string]any{"server": map[string]string{"name": "roomsync-fixturepeer", "version": "1"}}
}

// keyResponse is the key response the peer gives for serverName: its own, or, as a notary,
// an origin's, self-signed by the origin and signed by the peer. nil for unknown servers.
func (p *Peer) keyResponse(serverName string) *federation.ServerKeyResponse {
	if serverName == p.name {
		return p.key.GenerateKeyResponse(p.name, nil)
	}
	if !p.origins[serverName] {
		return nil
	}
	resp := OriginKey(serverName).GenerateKeyResponse(serverName, nil)
	sig, err := p.key.SignJSON(resp)
	if err != nil {
		return nil
	}
	resp.Signatures[p.name] = map[id.KeyID]string{p.key.ID: sig}
	return resp
}

func (p *Peer) serverKeys(*http.Request, []lieState) (int, any) {
	return http.StatusOK, p.key.GenerateKeyResponse(p.name, nil)
}

func (p *Peer) queryKeysGET(r *http.Request, _ []lieState) (int, any) {
	keys := []*federation.ServerKeyResponse{}
	if resp := p.keyResponse(r.PathValue("serverName")); resp != nil {
		keys = append(keys, resp)
	}
	return http.StatusOK, map[string]any{"server_keys": keys}
}

func (p *Peer) queryKeysPOST(r *http.Request, _ []lieState) (int, any) {
	var req federation.ReqQueryKeys
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return errBody(http.StatusBadRequest, "M_NOT_JSON", "Content not JSON: "+err.Error())
	}
	keys := []*federation.ServerKeyResponse{}
	names := make([]string, 0, len(req.ServerKeys))
	for name := range req.ServerKeys {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		resp := p.keyResponse(name)
		if resp == nil {
			continue
		}
		wanted := req.ServerKeys[name]
		match := len(wanted) == 0
		for keyID := range wanted {
			match = match || resp.HasKey(keyID)
		}
		if match {
			keys = append(keys, resp)
		}
	}
	return http.StatusOK, map[string]any{"server_keys": keys}
}

type pdusAnswer struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

// room returns the served room and the peer's view of it.
func (p *Peer) room(roomID string) (*Room, *holdState, bool) {
	sr, ok := p.rooms[id.RoomID(roomID)]
	if !ok {
		return nil, nil, false
	}
	return sr.room, sr.hold.Load(), true
}

// renderAll renders events for an answer through ep, lies applied.
func (p *Peer) renderAll(ep Endpoint, r *Room, idx []int32, lies []lieState) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(idx)+1)
	for _, i := range idx {
		raw, err := p.render(ep, r, i, lies)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	for i := range lies {
		if ep != EndpointBackfill && ep != EndpointMissingEvents {
			break
		}
		if lies[i].Kind == LieExtraForeignEvent && (lies[i].Endpoint == "" || lies[i].Endpoint == ep) {
			f, err := p.ForeignRoom()
			if err != nil {
				return nil, err
			}
			out = append(out, f.Events[len(f.Events)-1].JSON)
			break
		}
	}
	p.pdus.Add(int64(len(out)))
	return out, nil
}

// byDepth is a max-heap of event indexes by (depth, index).
type byDepth struct {
	r   *Room
	idx []int32
}

func (h *byDepth) Len() int { return len(h.idx) }
func (h *byDepth) Less(i, j int) bool {
	a, b := h.r.Events[h.idx[i]], h.r.Events[h.idx[j]]
	return a.Depth > b.Depth || (a.Depth == b.Depth && a.Index > b.Index)
}
func (h *byDepth) Swap(i, j int) { h.idx[i], h.idx[j] = h.idx[j], h.idx[i] }
func (h *byDepth) Push(x any)    { h.idx = append(h.idx, x.(int32)) }
func (h *byDepth) Pop() any {
	x := h.idx[len(h.idx)-1]
	h.idx = h.idx[:len(h.idx)-1]
	return x
}

// backfill walks back from the v events (included) through held events, deepest first,
// as Synapse does, up to min(limit, cap) events.
func (p *Peer) backfill(req *http.Request, lies []lieState) (int, any) {
	q := req.URL.Query()
	vs := q["v"]
	if len(vs) == 0 {
		return errBody(http.StatusBadRequest, "M_MISSING_PARAM", "Missing v parameter")
	}
	if !q.Has("limit") {
		return errBody(http.StatusBadRequest, "M_MISSING_PARAM", "Missing limit parameter")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		return errBody(http.StatusBadRequest, "M_INVALID_PARAM", "limit is not an integer")
	}
	r, hs, status, refusal := p.historyRoom(req)
	if refusal != nil {
		return status, refusal
	}
	limit = min(limit, p.bfCap)
	seen := make(map[int32]bool)
	h := &byDepth{r: r}
	for _, v := range vs {
		if i, ok := hs.has(id.EventID(v)); ok && !seen[i] {
			seen[i] = true
			h.idx = append(h.idx, i)
		}
	}
	heap.Init(h)
	var out []int32
	for h.Len() > 0 && len(out) < limit {
		i := heap.Pop(h).(int32)
		out = append(out, i)
		for _, pi := range r.prev[i] {
			if hs.held[pi] && !seen[pi] {
				seen[pi] = true
				heap.Push(h, pi)
			}
		}
	}
	pdus, err := p.renderAll(EndpointBackfill, r, out, lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
	}
	return http.StatusOK, pdusAnswer{Origin: p.name, OriginServerTS: time.Now().UnixMilli(), PDUs: pdus}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// missingEvents walks breadth-first back from latest_events' prev_events through held
// events, not past earliest_events or below min_depth (unless WithoutMinDepth), up to
// min(limit, cap) events, and answers them oldest first (by depth).
func (p *Peer) missingEvents(req *http.Request, lies []lieState) (int, any) {
	if !isJSON(req.Header.Get("Content-Type")) {
		return errBody(http.StatusBadRequest, "M_NOT_JSON", "Content-Type must be application/json")
	}
	var body struct {
		Earliest []id.EventID `json:"earliest_events"`
		Latest   []id.EventID `json:"latest_events"`
		Limit    *int         `json:"limit"`
		MinDepth int64        `json:"min_depth"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		return errBody(http.StatusBadRequest, "M_NOT_JSON", "Content not JSON: "+err.Error())
	}
	r, hs, status, refusal := p.historyRoom(req)
	if refusal != nil {
		return status, refusal
	}
	if p.noMinDepth {
		body.MinDepth = 0
	}
	limit := 10 // the spec's default
	if body.Limit != nil {
		limit = *body.Limit
	}
	limit = min(limit, p.gmeCap)
	seen := make(map[int32]bool)
	for _, e := range body.Earliest {
		if i, ok := r.byID[e]; ok {
			seen[i] = true
		}
	}
	var front []int32
	for _, e := range body.Latest {
		if i, ok := r.byID[e]; ok && !seen[i] {
			seen[i] = true
			if hs.held[i] {
				front = append(front, i)
			}
		}
	}
	var out []int32
walk:
	for len(front) > 0 && len(out) < limit {
		var next []int32
		for _, e := range front {
			for _, pi := range r.prev[e] {
				if seen[pi] {
					continue
				}
				seen[pi] = true
				if !hs.held[pi] || r.Events[pi].Depth < body.MinDepth {
					continue
				}
				out = append(out, pi)
				next = append(next, pi)
				if len(out) >= limit {
					break walk
				}
			}
		}
		front = next
	}
	slices.SortFunc(out, func(a, b int32) int {
		return cmp.Or(cmp.Compare(r.Events[a].Depth, r.Events[b].Depth), cmp.Compare(a, b))
	})
	pdus, err := p.renderAll(EndpointMissingEvents, r, out, lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
	}
	return http.StatusOK, map[string]any{"events": pdus}
}

// event serves one held event of any room the peer serves.
func (p *Peer) event(req *http.Request, lies []lieState) (int, any) {
	eventID := id.EventID(req.PathValue("eventId"))
	for _, sr := range p.order {
		hs := sr.hold.Load()
		if i, ok := hs.has(eventID); ok {
			// As Synapse: an unknown event is 404 to anyone, a known one 403 to non-members.
			if !p.mayRead(req, sr) {
				return errBody(http.StatusForbidden, "M_FORBIDDEN", ErrHostNotInRoom)
			}
			pdus, err := p.renderAll(EndpointEvent, sr.room, []int32{i}, lies)
			if err != nil {
				return errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
			}
			return http.StatusOK, pdusAnswer{Origin: p.name, OriginServerTS: time.Now().UnixMilli(), PDUs: pdus}
		}
	}
	if raw, ok := p.loose[eventID]; ok {
		if !p.mayRead(req, p.primary) {
			return errBody(http.StatusForbidden, "M_FORBIDDEN", ErrHostNotInRoom)
		}
		return http.StatusOK, pdusAnswer{Origin: p.name, OriginServerTS: time.Now().UnixMilli(), PDUs: []json.RawMessage{raw}}
	}
	return errBody(http.StatusNotFound, "M_NOT_FOUND", "Event not found")
}

func (p *Peer) timestampToEvent(req *http.Request, _ []lieState) (int, any) {
	if p.noTS.Load() {
		return errBody(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
	}
	q := req.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return errBody(http.StatusBadRequest, "M_INVALID_PARAM", "dir must be b or f")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return errBody(http.StatusBadRequest, "M_INVALID_PARAM", "ts is not an integer")
	}
	r, hs, ok := p.room(req.PathValue("roomId"))
	if !ok {
		return errBody(http.StatusNotFound, "M_NOT_FOUND", "Unknown room")
	}
	i := hs.byTimestamp(ts, dir == "f")
	if i < 0 {
		return errBody(http.StatusNotFound, "M_NOT_FOUND", "No event found")
	}
	return http.StatusOK, map[string]any{"event_id": r.Events[i].ID, "origin_server_ts": r.Events[i].TS}
}

// makeJoin answers anyone (members-only or not) a join template whose prev_events are the
// peer's forward extremities. It joins nothing: send_join does.
func (p *Peer) makeJoin(req *http.Request, _ []lieState) (int, any) {
	r, hs, ok := p.room(req.PathValue("roomId"))
	if !ok {
		return errBody(http.StatusNotFound, "M_NOT_FOUND", "Unknown room")
	}
	vers := req.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = []string{"1"}
	}
	if !slices.Contains(vers, string(r.Version)) {
		return http.StatusBadRequest, map[string]any{
			"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Your homeserver does not support the features required to join this room",
			"room_version": r.Version,
		}
	}
	userID := id.UserID(req.PathValue("userId"))
	_, homeserver, err := userID.Parse()
	if err != nil || homeserver == "" {
		return errBody(http.StatusBadRequest, "M_INVALID_PARAM", "Invalid user ID")
	}
	if homeserver != federation.ParseXMatrixAuth(req.Header.Get("Authorization")).Origin {
		return errBody(http.StatusForbidden, "M_FORBIDDEN", "User is not on the requesting server")
	}
	if !p.mayJoin(p.rooms[r.ID], userID) {
		return errBody(http.StatusForbidden, "M_FORBIDDEN", ErrNotInvited)
	}
	heads := hs.forwardExtremities()
	if len(heads) == 0 {
		return errBody(http.StatusNotFound, "M_NOT_FOUND", "No events in room")
	}
	heads = heads[:min(len(heads), DefaultMakeJoinPrevEvents)]
	var depth int64
	for _, h := range heads {
		depth = max(depth, r.Events[h].Depth)
	}
	auth := make([]int32, 0, 4)
	if !r.Version.RoomIDIsCreateEventID() {
		auth = append(auth, 0)
	}
	auth = append(auth, r.powerIdx, r.rulesIdx)
	if m, ok := r.members[userID]; ok {
		auth = append(auth, m)
	}
	prev := slices.Clone(heads)
	slices.Sort(prev)
	return http.StatusOK, map[string]any{
		"room_version": r.Version,
		"event": map[string]any{
			"type":             "m.room.member",
			"state_key":        userID,
			"sender":           userID,
			"room_id":          r.ID,
			"content":          map[string]any{"membership": "join"},
			"depth":            depth + 1,
			"origin_server_ts": time.Now().UnixMilli(),
			"auth_events":      r.References(auth),
			"prev_events":      r.References(prev),
		},
	}
}

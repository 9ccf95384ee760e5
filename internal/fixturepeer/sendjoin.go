package fixturepeer

import (
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"fmt"
	"io"
	"net/http"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// sendJoinAnswer is the body of a v2 send_join answer.
type sendJoinAnswer struct {
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// joinEvent is what send_join checks of a join, whatever the room version's PDU format.
type joinEvent struct {
	pdu        pdu.AnyPDU
	id         id.EventID
	roomID     id.RoomID
	typ        string
	stateKey   *string
	sender     id.UserID
	content    jsontext.Value
	prev, auth []id.EventID
}

// parseJoin parses raw as a PDU of the room version: in room versions 1 and 2 the event
// carries its ID and references are [ID, hashes] pairs; later, mautrix computes the ID.
func parseJoin(raw []byte, version id.RoomVersion) (*joinEvent, error) {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, err
		}
		j := &joinEvent{pdu: &v1, id: v1.EventID, roomID: v1.RoomID, typ: v1.Type, stateKey: v1.StateKey, sender: v1.Sender, content: v1.Content}
		for _, ref := range v1.PrevEvents {
			j.prev = append(j.prev, ref.ID)
		}
		for _, ref := range v1.AuthEvents {
			j.auth = append(j.auth, ref.ID)
		}
		return j, nil
	}
	var v3 pdu.PDU
	if err := jsonv2.Unmarshal(raw, &v3); err != nil {
		return nil, err
	}
	evID, err := v3.GetEventID(version)
	if err != nil {
		return nil, err
	}
	return &joinEvent{
		pdu: &v3, id: evID, roomID: v3.RoomID, typ: v3.Type, stateKey: v3.StateKey, sender: v3.Sender,
		content: v3.Content, prev: v3.PrevEvents, auth: v3.AuthEvents,
	}, nil
}

// sendJoin accepts a join the way a resident server does, checking that the event:
//
//   - parses as a PDU of the room's version (else 400 M_NOT_JSON or M_BAD_JSON);
//   - is in the room of the path and has the path's event ID (else 400 M_BAD_JSON);
//   - is an m.room.member join with state_key == sender (else 400 M_BAD_JSON);
//   - is sent by a user of the X-Matrix origin (else 403 M_FORBIDDEN);
//   - carries a valid signature of the origin, when the peer has a way to get its keys
//     (WithJoinKey, WithJoinKeys; else 403 M_FORBIDDEN). Without either, no signature is
//     checked;
//   - has prev_events, and prev_events and auth_events the peer holds (else 403 M_FORBIDDEN,
//     a rejection, as Dendrite rejects a join whose prev events it does not know).
//
// It runs no auth rules beyond these (the generated rooms are public) and ignores
// omit_members (members_omitted is false). An unknown room is 404 M_NOT_FOUND.
//
// The origin is then joined (Joined, and members-only history answers it), and the answer
// holds the room state and its auth chain (see joinState) rendered as the other endpoints
// render events, lies applied. The join itself is recorded but never served back: the
// fixture's room is immutable, so the join is not in the DAG, not a forward extremity and not
// in /backfill, /event or a later send_join's state.
func (p *Peer) sendJoin(req *http.Request, lies []lieState) (int, any) {
	sr, ok := p.rooms[id.RoomID(req.PathValue("roomId"))]
	if !ok {
		return errBody(http.StatusNotFound, "M_NOT_FOUND", "Unknown room")
	}
	r, hs := sr.room, sr.hold.Load()
	raw, err := io.ReadAll(req.Body) // wrap has buffered it, at most 1 MiB
	if err != nil || !json.Valid(raw) {
		return errBody(http.StatusBadRequest, "M_NOT_JSON", "The request body is not valid JSON")
	}
	j, err := parseJoin(raw, r.Version)
	if err != nil {
		return errBody(http.StatusBadRequest, "M_BAD_JSON", fmt.Sprintf("Not a PDU of room version %s: %v", r.Version, err))
	}
	origin := requestOrigin(req)
	var membership struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(j.content, &membership) // a content that is no object is no join
	switch {
	case j.roomID != r.ID:
		return errBody(http.StatusBadRequest, "M_BAD_JSON", "The room ID in the request path must match the room ID in the join event JSON")
	case j.id != id.EventID(req.PathValue("eventId")):
		return errBody(http.StatusBadRequest, "M_BAD_JSON", "The event ID in the request path must match the event ID in the join event JSON")
	case j.typ != "m.room.member" || j.stateKey == nil:
		return errBody(http.StatusBadRequest, "M_BAD_JSON", "Not an m.room.member event")
	case membership.Membership != "join":
		return errBody(http.StatusBadRequest, "M_BAD_JSON", "Not a join event")
	case *j.stateKey != string(j.sender):
		return errBody(http.StatusBadRequest, "M_BAD_JSON", "state_key and sender must match")
	case j.sender.Homeserver() != origin:
		return errBody(http.StatusForbidden, "M_FORBIDDEN", "The sender of the join is not on the requesting server")
	case !p.mayJoin(sr, j.sender):
		return errBody(http.StatusForbidden, "M_FORBIDDEN", ErrNotInvited)
	}
	if p.joinKey != nil {
		if err := j.pdu.VerifySignature(r.Version, origin, p.joinKey); err != nil {
			return errBody(http.StatusForbidden, "M_FORBIDDEN", "The join must be signed by the server it originated on: "+err.Error())
		}
	}
	if len(j.prev) == 0 {
		return errBody(http.StatusForbidden, "M_FORBIDDEN", "The join has no prev_events")
	}
	for _, refs := range [][]id.EventID{j.prev, j.auth} {
		for _, e := range refs {
			if _, ok := hs.has(e); !ok {
				return errBody(http.StatusForbidden, "M_FORBIDDEN", fmt.Sprintf("The join refers to an unknown event %s", e))
			}
		}
	}

	stateIdx, chainIdx := joinState(hs)
	state, err := p.renderAll(EndpointSendJoin, r, stateIdx, lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
	}
	chain, err := p.renderAll(EndpointSendJoin, r, chainIdx, lies)
	if err != nil {
		return errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
	}
	sr.setJoined(origin, true)
	return http.StatusOK, sendJoinAnswer{
		State: state, AuthChain: chain, Event: json.RawMessage(raw),
		ServersInRoom: serversInRoom(r, stateIdx, sr.joinedServers()),
	}
}

// joinState returns the room state at the peer's forward extremities as a fixture knows it:
// for each (type, state_key), the newest (in generation order) state event the peer holds.
// The generator sends state only on a single branch, so for a peer that holds everything this
// is the room's exact current state; a peer holding part of the room serves the part of the
// state it holds. authChain is the closure of the state's auth_events through held events,
// less the state events themselves. Both are in generation (topological) order.
func joinState(hs *holdState) (state, authChain []int32) {
	r := hs.room
	type key struct{ typ, stateKey string }
	newest := make(map[key]int32)
	for i, e := range r.Events {
		if hs.held[i] && e.StateKey != nil {
			newest[key{e.Type, *e.StateKey}] = int32(i)
		}
	}
	for _, i := range newest {
		state = append(state, i)
	}
	slices.Sort(state)
	// The state events start out seen, so the walk goes through them but never collects them.
	seen := make(map[int32]bool, len(state))
	for _, i := range state {
		seen[i] = true
	}
	queue := slices.Clone(state)
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, a := range r.Events[i].Auth {
			if j, ok := hs.has(a); ok && !seen[j] {
				seen[j] = true
				queue = append(queue, j)
				authChain = append(authChain, j)
			}
		}
	}
	slices.Sort(authChain)
	return state, authChain
}

// serversInRoom is the servers of the users joined in the state, and those joined through
// the peer, sorted.
func serversInRoom(r *Room, state []int32, joined []string) []string {
	set := make(map[string]bool)
	for _, s := range joined {
		set[s] = true
	}
	for _, i := range state {
		e := r.Events[i]
		if e.Type != "m.room.member" || e.StateKey == nil {
			continue
		}
		var ev struct {
			Content struct {
				Membership string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(e.JSON, &ev) == nil && ev.Content.Membership == "join" {
			set[id.UserID(*e.StateKey).Homeserver()] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
)

// InviteMaxBody bounds a PUT /_matrix/federation/v2/invite body: the event (64 KiB at most)
// and the stripped state shown with it, a few small events.
const InviteMaxBody = 1 << 20

// Invite is an invite another server asks us to countersign (PUT /v2/invite).
type Invite struct {
	// RoomID and EventID are the ones the request path names.
	RoomID, EventID string
	// RoomVersion is the room's version as the inviting server states it.
	RoomVersion string
	// Event is the invite event as sent, signed by its origin.
	Event json.RawMessage
}

// InviteReceiver takes an invite from origin (the server that signed the request) and returns
// the event with our signature added, or an error refusing it: a mautrix.RespError is
// answered as it is (403 M_FORBIDDEN for an invite we do not accept, 400
// M_INCOMPATIBLE_ROOM_VERSION), any other as a 500.
type InviteReceiver func(ctx context.Context, origin string, inv Invite) (json.RawMessage, error)

// HandleInvite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId} with receive, for
// requests signed by their origin (see RequireAuth). A nil receive registers nothing, so the
// endpoint stays unrecognized. Version 1 of the endpoint, without the room version, is not
// served: every server that speaks room versions 3 and later sends v2.
func (s *Server) HandleInvite(receive InviteReceiver) {
	if receive == nil {
		return
	}
	s.HandleAuthenticated(http.MethodPut, "/_matrix/federation/v2/invite/{roomId}/{eventId}", InviteMaxBody,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serveInvite(w, r, receive)
		}))
}

func serveInvite(w http.ResponseWriter, r *http.Request, receive InviteReceiver) {
	var body struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		mautrix.MBadJSON.WithMessage("invite is not valid JSON: %v", err).Write(w)
		return
	}
	if len(body.Event) == 0 || body.Event[0] != '{' {
		mautrix.MBadJSON.WithMessage("invite has no event").Write(w)
		return
	}
	if body.RoomVersion == "" {
		mautrix.MBadJSON.WithMessage("invite has no room_version").Write(w)
		return
	}
	inv := Invite{
		RoomID:      r.PathValue("roomId"),
		EventID:     r.PathValue("eventId"),
		RoomVersion: body.RoomVersion,
		Event:       body.Event,
	}
	signed, err := receive(r.Context(), mfed.OriginServerName(r.Context()), inv)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, struct {
		Event json.RawMessage `json:"event"`
	}{signed})
}

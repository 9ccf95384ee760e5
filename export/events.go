package export

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"github.com/tidwall/gjson"

	"github.com/roomsync/roomsync/store"
)

// clientEvent is an event in the client-server API's format (ClientEvent), as /messages
// would show it, with two fields of ours. Each line decodes into mautrix's event.Event.
type clientEvent struct {
	EventID        string          `json:"event_id"`
	Type           string          `json:"type"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	// StateKey is present for state events only ("" is a state key).
	StateKey *string `json:"state_key,omitempty"`
	RoomID   string  `json:"room_id"`
	// Redacts is the redacted event of an m.room.redaction: top-level in room versions up
	// to 10, in the content from 11, and copied here from the content as servers do, so
	// that clients of either kind find it.
	Redacts string `json:"redacts,omitempty"`
	// Unsigned is always {}: the store keeps no unsigned data (no signature covers it, and
	// each server fills it its own way), and what a server would compute for a client
	// (age, prev_content, redacted_because) is not an archive's to make up. A copy held
	// redacted has no redacted_because either: it failed its content hash because a peer
	// stripped it, and no redaction event may exist; Redacted says so instead.
	Unsigned json.RawMessage `json:"unsigned"`
	// Redacted: the store holds only the redacted form (a peer served the event stripped),
	// so Content is what redaction keeps.
	Redacted bool `json:"redacted"`
	// Rejected is the authorization rule the event broke; absent when it is accepted (or
	// its state is not computed yet: it then arrives again, flagged, if it is rejected).
	Rejected string `json:"rejected,omitempty"`
}

var emptyObject = json.RawMessage(`{}`)

type eventEncoder struct{ roomID string }

func newEventEncoder(roomID string) eventEncoder { return eventEncoder{roomID: roomID} }

func (c eventEncoder) encode(_ context.Context, w *bufio.Writer, page []store.SequencedEvent) error {
	enc := json.NewEncoder(w)
	// Bodies are shown as sent: <, > and & stay as they are.
	enc.SetEscapeHTML(false)
	for _, e := range page {
		if err := enc.Encode(c.clientEvent(e.Event)); err != nil {
			return fmt.Errorf("write event %s: %w", e.ID, err)
		}
	}
	return nil
}

func (c eventEncoder) clientEvent(e store.Event) clientEvent {
	content := emptyObject
	if v := gjson.GetBytes(e.Raw, "content"); v.IsObject() {
		content = json.RawMessage(v.Raw)
	}
	redacts := gjson.GetBytes(e.Raw, "redacts").Str
	if redacts == "" && e.Type == "m.room.redaction" {
		redacts = gjson.GetBytes(content, "redacts").Str
	}
	// The room ID from the store: a room version 12 create event carries none.
	return clientEvent{
		EventID: e.ID, Type: e.Type, Sender: e.Sender, OriginServerTS: e.OriginServerTS,
		Content: content, StateKey: e.StateKey, RoomID: c.roomID, Redacts: redacts,
		Unsigned: emptyObject, Redacted: e.Redacted, Rejected: e.Rejected,
	}
}

package fixturepeer

import (
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// LooseEvent is an event of a room made outside its generated history (see Room.Sign): a
// peer serves it at /event only (WithLooseEvents), never in a walk of the DAG, so a client
// reaches it only by asking for it by ID.
type LooseEvent struct {
	ID  id.EventID
	Raw json.RawMessage
}

// Sign completes ev as an event of the room from origin, signed with OriginKey(origin): its
// room ID, hashes and signature. The caller chooses the rest (sender, prev and auth events,
// depth), and so whether it is authorized. Room versions 1 and 2 are not supported.
func (r *Room) Sign(origin string, ev *pdu.PDU) (LooseEvent, error) {
	if r.Version.EventIDFormat() == id.EventIDFormatCustom {
		return LooseEvent{}, fmt.Errorf("fixturepeer: made events in room version %s are not supported", r.Version)
	}
	ev.RoomID = r.ID
	return signEvent(r.Version, ev, origin, OriginKey(origin))
}

// signEvent signs ev as server with key and returns it with its event ID, as canonical JSON.
func signEvent(version id.RoomVersion, ev *pdu.PDU, server string, key *federation.SigningKey) (LooseEvent, error) {
	if err := ev.Sign(version, server, key.ID, key.Priv); err != nil {
		return LooseEvent{}, fmt.Errorf("fixturepeer: sign %s: %w", ev.Type, err)
	}
	eventID, err := ev.GetEventID(version)
	if err != nil {
		return LooseEvent{}, fmt.Errorf("fixturepeer: %s event ID: %w", ev.Type, err)
	}
	raw, err := canonicaljson.Marshal(ev)
	if err != nil {
		return LooseEvent{}, fmt.Errorf("fixturepeer: encode %s: %w", ev.Type, err)
	}
	return LooseEvent{ID: eventID, Raw: raw}, nil
}

// WithLooseEvents makes the peer serve events at /event, beside its rooms' histories, to the
// servers that may read its first room.
func WithLooseEvents(events ...LooseEvent) Option {
	return func(c *peerConfig) { c.loose = append(c.loose, events...) }
}

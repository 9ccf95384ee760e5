package fixturepeer

import (
	"encoding/json"
	"fmt"
	"time"

	"encoding/json/jsontext"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Invite makes an invite of invitee to the peer's room, sent by @inviter on the peer's own
// server and signed with the peer's key, on top of the room's heads: what the peer would send
// to the invitee's server with PUT /v2/invite. From then on the invitee may join an
// invite-only peer (WithInviteOnly). The inviter is not a member of the generated
// room, so the event is well signed but not authorized by the room's rules. Room versions 1
// and 2 are not supported.
func (p *Peer) Invite(invitee id.UserID) (json.RawMessage, id.EventID, error) {
	r := p.primary.room
	if r.Version.EventIDFormat() == id.EventIDFormatCustom {
		return nil, "", fmt.Errorf("fixturepeer: invites in room version %s are not supported", r.Version)
	}
	var depth int64
	for _, h := range r.heads {
		depth = max(depth, r.Events[h].Depth)
	}
	auth := []int32{r.powerIdx, r.rulesIdx}
	if !r.Version.RoomIDIsCreateEventID() {
		auth = append(auth, 0)
	}
	stateKey := string(invitee)
	ev := &pdu.PDU{
		AuthEvents:     r.ids(auth),
		Content:        jsontext.Value(`{"membership":"invite"}`),
		Depth:          depth + 1,
		OriginServerTS: time.Now().UnixMilli(),
		PrevEvents:     r.ids(r.heads),
		RoomID:         r.ID,
		Sender:         id.NewUserID("inviter", p.name),
		StateKey:       &stateKey,
		Type:           "m.room.member",
	}
	signed, err := signEvent(r.Version, ev, p.name, p.key)
	if err != nil {
		return nil, "", err
	}
	p.primary.mu.Lock()
	p.primary.invited[invitee] = true
	p.primary.mu.Unlock()
	return signed.Raw, signed.ID, nil
}

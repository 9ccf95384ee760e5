package resolver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// ErrRoomNotReplicated refuses a request about a room this resolver does not replicate.
var ErrRoomNotReplicated = mautrix.MForbidden.WithMessage(errTextNotReplicated)

// Invite takes an invite of our join user that origin sends (the InviteReceiver of
// federation.Server.HandleInvite) to a room we replicate under a policy that lets us join.
// The invite must verify as any event does, be the event the request names, and come from a
// member of origin. It returns the event with our signature added and records the invite, so
// that the next pass of the room joins it. Anything else is refused with a Matrix error.
func (r *Resolver) Invite(ctx context.Context, origin string, inv federation.Invite) (json.RawMessage, error) {
	switch {
	case !r.replicates(inv.RoomID):
		return nil, ErrRoomNotReplicated
	case r.cfg.Join == JoinNever || r.cfg.Join == "":
		return nil, mautrix.MForbidden.WithMessage("this server joins room %s only by its membership policy, which is Never", inv.RoomID)
	case !slices.Contains(supportedRoomVersions, inv.RoomVersion):
		return nil, mautrix.MIncompatibleRoomVersion.WithStatus(400).
			WithMessage("room version %q is not supported", inv.RoomVersion).
			WithExtraField("room_version", inv.RoomVersion)
	case id.RoomVersion(inv.RoomVersion).EventIDFormat() == id.EventIDFormatCustom:
		return nil, mautrix.MIncompatibleRoomVersion.WithStatus(400).
			WithMessage("membership in rooms of version %s is not supported", inv.RoomVersion).
			WithExtraField("room_version", inv.RoomVersion)
	}
	ev, rej := VerifyPDU(ctx, inv.RoomID, inv.RoomVersion, inv.Event, r.cfg.Keys)
	if rej != nil {
		return nil, mautrix.MForbidden.WithMessage("the invite does not verify: %v", rej)
	}
	if err := r.checkInvite(origin, inv, ev); err != nil {
		return nil, err
	}
	version := id.RoomVersion(inv.RoomVersion)
	var p pdu.PDU
	if err := jsonv2.Unmarshal(inv.Event, &p); err != nil {
		return nil, mautrix.MBadJSON.WithMessage("parse the invite: %v", err)
	}
	key := r.cfg.SigningKey
	if err := p.Sign(version, r.cfg.ServerName, key.ID, key.Priv); err != nil {
		return nil, fmt.Errorf("countersign invite %s: %w", ev.ID, err)
	}
	signed, err := jsonv2.Marshal(&p)
	if err != nil {
		return nil, fmt.Errorf("encode countersigned invite %s: %w", ev.ID, err)
	}

	// Recorded only once the answer is ready: an invite we refuse leaves no trace.
	pass := r.newPass(inv.RoomID, History{})
	m, err := pass.membership(ctx)
	if err != nil {
		return nil, fmt.Errorf("invite %s: %w", inv.RoomID, err)
	}
	if m.State != store.MembershipJoined {
		if err := pass.setMembership(ctx, store.Membership{State: store.MembershipInvited, EventID: ev.ID, Reason: "invited by " + ev.Sender}); err != nil {
			return nil, fmt.Errorf("invite %s: %w", inv.RoomID, err)
		}
	}
	pass.log.Info("Invited to the room", "sender", ev.Sender, "event", ev.ID)
	return signed, nil
}

// checkInvite says whether a verified event is an invite we take: the one the request
// names, of our join user, sent by a member of origin.
func (r *Resolver) checkInvite(origin string, inv federation.Invite, ev store.Event) error {
	membership := gjson.GetBytes(ev.Raw, "content.membership").Str
	switch {
	case ev.Redacted:
		return mautrix.MForbidden.WithMessage("the invite's content does not match its hash")
	case ev.ID != inv.EventID:
		return mautrix.MBadJSON.WithMessage("the invite is event %s, the request names %s", ev.ID, inv.EventID)
	case ev.Type != "m.room.member" || membership != "invite":
		return mautrix.MBadJSON.WithMessage("the event is a %s (%s), not an invite", ev.Type, membership)
	case ev.StateKey == nil || *ev.StateKey != r.cfg.JoinUserID:
		return mautrix.MForbidden.WithMessage("this server takes invites of %s only", r.cfg.JoinUserID)
	case ev.Origin != origin:
		return mautrix.MForbidden.WithMessage("the invite's sender %s is not of %s, which sent it", ev.Sender, origin)
	}
	return nil
}

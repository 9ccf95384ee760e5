package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/store"
)

// Leave takes our user out of a room we joined, now that nothing replicates it: make_leave,
// our leave signed with our key, send_leave, through the first peer that lets us. The events
// stay stored. A room we never joined (or left already) is left alone.
func (r *Resolver) Leave(ctx context.Context, roomID string) error {
	p := r.newPass(roomID, History{})
	m, err := p.membership(ctx)
	if err != nil {
		return fmt.Errorf("leave %s: %w", roomID, err)
	}
	if m.State != store.MembershipJoined {
		return nil
	}
	room, err := r.cfg.Store.Room(ctx, roomID)
	if err != nil {
		return fmt.Errorf("leave %s: %w", roomID, err)
	}
	p.version = room.Version
	var failures []string
	for _, peer := range r.cfg.Peers.Reachable() {
		eventID, err := p.leaveThrough(ctx, peer)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", peer, err))
			continue
		}
		p.log.Info("Left the room", "peer", peer, "event", eventID)
		return p.setMembership(ctx, store.Membership{State: store.MembershipLeft, EventID: eventID})
	}
	return fmt.Errorf("leave %s: no peer let us leave: %s", roomID, strings.Join(failures, "; "))
}

func (p *pass) leaveThrough(ctx context.Context, peer string) (string, error) {
	tmpl, err := ask(ctx, p, peer, "make_leave", func(ctx context.Context) (joinTemplate, error) {
		version, raw, err := p.r.cfg.Client.MakeLeave(ctx, peer, p.roomID, p.r.cfg.JoinUserID)
		return joinTemplate{version: version, raw: raw}, err
	})
	if err != nil {
		return "", err
	}
	version := id.RoomVersion(p.version)
	if version == "" {
		version = id.RoomVersion(tmpl.version)
	}
	event, eventID, err := p.signMembership(version, tmpl.raw, "leave")
	if err != nil {
		return "", err
	}
	_, err = ask(ctx, p, peer, "send_leave", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, p.r.cfg.Client.SendLeave(ctx, peer, p.roomID, eventID, event)
	})
	if err != nil {
		return "", err
	}
	// Our leave is part of the room: stored like any event we verified.
	if _, _, err := p.accept(ctx, peer, "send_leave", []json.RawMessage{event}, nil); err != nil {
		return "", err
	}
	return eventID, nil
}

package resolver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// JoinPolicy says when the resolver joins a room it replicates.
type JoinPolicy string

const (
	// JoinNever pulls as a non-member.
	JoinNever JoinPolicy = "never"
	// JoinIfNeeded joins when a peer refuses us as a non-member (403 on a history endpoint)
	// or serves redacted copies of events.
	JoinIfNeeded JoinPolicy = "if-needed"
	// JoinAlways joins every room at its first pass.
	JoinAlways JoinPolicy = "always"
)

// joinRetryAfter is how long a failed join waits before the next try.
const joinRetryAfter = 5 * time.Minute

// A join after an invite is tried invitedJoinRounds times, invitedJoinPause apart, before it
// counts as failed.
const (
	invitedJoinRounds = 5
	invitedJoinPause  = time.Second
)

// needsJoin says whether the pass should join now, and why.
func (p *pass) needsJoin(ctx context.Context) (bool, string, error) {
	if p.r.cfg.Join == JoinNever || p.r.cfg.Join == "" {
		return false, "", nil
	}
	m, err := p.membership(ctx)
	switch {
	case err != nil:
		return false, "", err
	case m.State == store.MembershipJoined:
		return false, "", nil
	case m.State == store.MembershipInvited:
		return true, m.Reason, nil
	case m.State == store.MembershipJoinFailed && p.r.cfg.Now().Sub(m.UpdatedAt) < joinRetryAfter:
		return false, "", nil
	}
	if p.r.cfg.Join == JoinAlways {
		return true, "the membership policy is Always", nil
	}
	if len(p.refusals) > 0 {
		return true, "refused as a non-member: " + strings.Join(p.refusals, "; "), nil
	}
	room, err := p.r.cfg.Store.Room(ctx, p.roomID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, "", err
	}
	if room.Redacted > 0 {
		return true, fmt.Sprintf("%d events were shown to us redacted", room.Redacted), nil
	}
	return false, "", nil
}

// join joins the room through the first peer that lets us: make_join with the room versions
// we support, our join filled in and signed with our key, send_join. The state and auth chain
// of the answer, and our join, are verified and stored like any events. It records the
// membership either way, and says whether we are in.
func (p *pass) join(ctx context.Context, why string) (bool, error) {
	p.log.Info("Joining the room", "user", p.r.cfg.JoinUserID, "reason", why)
	m, err := p.membership(ctx)
	if err != nil {
		return false, err
	}
	rounds := 1
	if m.State == store.MembershipInvited {
		// The server that invited us stores its invite only once we have countersigned it,
		// so a join right after the invite may be refused as not invited yet.
		rounds = invitedJoinRounds
	}
	var failures []string
	for round := range rounds {
		if round > 0 {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(invitedJoinPause):
			}
		}
		failures = failures[:0]
		for _, peer := range p.r.cfg.Peers.Available(p.endpoint("make_join")) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			eventID, err := p.joinThrough(ctx, peer)
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", peer, err))
				continue
			}
			if err := p.setMembership(ctx, store.Membership{State: store.MembershipJoined, EventID: eventID}); err != nil {
				return false, err
			}
			// What was refused to a non-member may be given now: every peer and gap again.
			p.r.cfg.Peers.RetryAll()
			return true, nil
		}
	}
	reason := "no peer let us join"
	if len(failures) > 0 {
		reason = strings.Join(failures, "; ")
	}
	return false, p.setMembership(ctx, store.Membership{State: store.MembershipJoinFailed, Reason: reason})
}

// membership is our recorded membership of the room (State MembershipNotJoined when none
// is), read from the store once a pass and kept as the pass changes it.
func (p *pass) membership(ctx context.Context) (store.Membership, error) {
	if p.member == nil {
		m, err := p.r.cfg.Store.Membership(ctx, p.roomID, p.r.cfg.JoinUserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			m.State = MembershipNotJoined
		case err != nil:
			return m, err
		}
		p.member = &m
	}
	return *p.member, nil
}

// setMembership records m as our membership of the room, in the store and for the pass.
func (p *pass) setMembership(ctx context.Context, m store.Membership) error {
	m.RoomID, m.UserID = p.roomID, p.r.cfg.JoinUserID
	m.UpdatedAt = p.r.cfg.Now()
	if err := p.r.cfg.Store.SetMembership(ctx, m); err != nil {
		return err
	}
	p.member = &m
	return nil
}

// joinThrough runs make_join and send_join with one peer and stores what it answers.
func (p *pass) joinThrough(ctx context.Context, peer string) (string, error) {
	tmpl, err := ask(ctx, p, peer, "make_join", func(ctx context.Context) (joinTemplate, error) {
		version, raw, err := p.r.cfg.Client.MakeJoin(ctx, peer, p.roomID, p.r.cfg.JoinUserID, supportedRoomVersions)
		return joinTemplate{version: version, raw: raw}, err
	})
	if err != nil {
		return "", err
	}
	version := id.RoomVersion(tmpl.version)
	if tmpl.version == "" {
		version = id.RoomVersion(p.version)
	}
	if p.version != "" && string(version) != p.version {
		return "", fmt.Errorf("make_join names room version %s, the room is %s", version, p.version)
	}
	if p.version == "" {
		// Nothing else told us; the state we are sent verifies under it, create event
		// included, or none of it is stored.
		p.version = string(version)
	}
	event, eventID, err := p.signMembership(version, tmpl.raw, "join")
	if err != nil {
		return "", err
	}
	ans, err := ask(ctx, p, peer, "send_join", func(ctx context.Context) (federation.JoinAnswer, error) {
		return p.r.cfg.Client.SendJoin(ctx, peer, p.roomID, eventID, event)
	})
	if err != nil {
		return "", err
	}
	// The resident server may add its signature to our join (restricted rooms): keep its copy
	// when it is the same event.
	if len(ans.Event) > 0 {
		if ev, rej := VerifyPDU(ctx, p.roomID, string(version), ans.Event, p.r.cfg.Keys); rej == nil && ev.ID == eventID {
			event = ans.Event
		}
	}
	raws := make([]json.RawMessage, 0, len(ans.State)+len(ans.AuthChain)+1)
	raws = append(append(append(raws, ans.State...), ans.AuthChain...), event)
	held, _, err := p.accept(ctx, peer, "send_join", raws, nil)
	if err != nil {
		return "", err
	}
	if !held[eventID] {
		return "", fmt.Errorf("our join %s did not verify", eventID)
	}
	p.awaitJoin(ctx, peer, eventID)
	return eventID, nil
}

// awaitJoin waits, a few seconds at most, until peer serves our join: a server may answer
// send_join before its room state holds the join (Dendrite does), and until then it still
// shows us what it shows a non-member.
func (p *pass) awaitJoin(ctx context.Context, peer, eventID string) {
	for range 20 {
		if _, err := p.r.cfg.Client.Event(ctx, peer, eventID); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	p.log.Info("The server that let us join does not serve our join yet", "peer", peer, "event", eventID)
}

// signMembership completes a make_join or make_leave template as our membership event:
// stamped now, hashed and signed with our key. Room versions 1 and 2, where the sending server
// mints the event ID, are not supported.
func (p *pass) signMembership(version id.RoomVersion, template []byte, want string) (json.RawMessage, string, error) {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return nil, "", fmt.Errorf("membership in rooms of version %s is not supported", version)
	}
	var ev pdu.PDU
	if err := jsonv2.Unmarshal(template, &ev); err != nil {
		return nil, "", fmt.Errorf("%w: %s template: %w", federation.ErrBadResponse, want, err)
	}
	membership := ""
	var content struct {
		Membership string `json:"membership"`
	}
	if err := jsonv2.Unmarshal(ev.Content, &content); err == nil {
		membership = content.Membership
	}
	switch {
	case ev.Type != "m.room.member" || membership != want:
		return nil, "", fmt.Errorf("%w: the %s template is a %s (%s)", federation.ErrBadResponse, want, ev.Type, membership)
	case string(ev.Sender) != p.r.cfg.JoinUserID || ev.StateKey == nil || *ev.StateKey != p.r.cfg.JoinUserID:
		return nil, "", fmt.Errorf("%w: the %s template is for %s, not %s", federation.ErrBadResponse, want, ev.Sender, p.r.cfg.JoinUserID)
	case string(ev.RoomID) != p.roomID:
		return nil, "", fmt.Errorf("%w: the %s template is for room %s", federation.ErrBadResponse, want, ev.RoomID)
	}
	ev.OriginServerTS = p.r.cfg.Now().UnixMilli()
	ev.Signatures, ev.Hashes, ev.Unsigned = nil, nil, nil
	key := p.r.cfg.SigningKey
	if err := ev.Sign(version, p.r.cfg.ServerName, key.ID, key.Priv); err != nil {
		return nil, "", fmt.Errorf("sign our %s: %w", want, err)
	}
	eventID, err := ev.GetEventID(version)
	if err != nil {
		return nil, "", fmt.Errorf("our %s's event ID: %w", want, err)
	}
	raw, err := jsonv2.Marshal(&ev)
	if err != nil {
		return nil, "", fmt.Errorf("encode our %s: %w", want, err)
	}
	return raw, string(eventID), nil
}

// refetchRedacted asks, one by one, for the events held only redacted, now that we are in
// the room and may see them; what stays redacted is what the room hides from members too.
// It goes on from where an earlier pass of this resolver stopped.
func (p *pass) refetchRedacted(ctx context.Context) error {
	after := p.r.redactedCursor(p.roomID)
	for p.budget > 0 && p.requestsLeft() > 0 {
		page, err := p.r.cfg.Store.RedactedEvents(ctx, p.roomID, after, 100)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			p.r.setRedactedCursor(p.roomID, nil, true)
			return nil
		}
		for _, pos := range page {
			if p.requestsLeft() <= 0 || ctx.Err() != nil {
				return ctx.Err()
			}
			if err := p.fetchEvents(ctx, []string{pos.EventID}); err != nil {
				return err
			}
			after = &store.Position{Depth: pos.Depth, EventID: pos.EventID}
			p.r.setRedactedCursor(p.roomID, after, false)
		}
	}
	return nil
}

// maybeJoin joins when the policy and what the pass saw call for it, and says whether it did.
func (p *pass) maybeJoin(ctx context.Context) (bool, error) {
	need, why, err := p.needsJoin(ctx)
	if err != nil || !need {
		return false, err
	}
	return p.join(ctx, why)
}

// membershipStatus reads our membership into the result: NotJoined until a join is recorded,
// with the refusals of a non-member as the reason.
func (p *pass) membershipStatus(ctx context.Context) error {
	m, err := p.membership(ctx)
	if err != nil {
		return err
	}
	p.res.Membership, p.res.MembershipReason = m.State, m.Reason
	if p.res.Membership != store.MembershipJoined && len(p.refusals) > 0 && p.res.MembershipReason == "" {
		p.res.MembershipReason = "refused as a non-member: " + strings.Join(p.refusals, "; ")
	}
	return nil
}

// Our membership of a room, as RoomResult.Membership says it.
const (
	MembershipJoined     = store.MembershipJoined
	MembershipJoinFailed = store.MembershipJoinFailed
	MembershipLeft       = store.MembershipLeft
	MembershipInvited    = store.MembershipInvited
	// MembershipNotJoined is the membership of a room we never joined.
	MembershipNotJoined = "NotJoined"
)

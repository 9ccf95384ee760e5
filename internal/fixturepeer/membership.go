package fixturepeer

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Membership: which servers a peer lets read a room's history.
//
// Dendrite v0.13.8 serves history to anyone (the peer's default); Synapse refuses servers
// that are not in the room (assert_host_in_room: 403 "Host not in room.") on /backfill,
// /get_missing_events, /event, /state_ids and /state. WithMembersOnly makes a peer behave as
// Synapse does; a server gets in by a send_join through the peer (see sendjoin.go) or by
// WithJoined/SetJoined. The room's own origins are not members unless they join too: the
// fixture's DAG has no notion of the peer's view of membership, and tests want to decide.

// ErrHostNotInRoom is the error message of the 403 M_FORBIDDEN a members-only peer answers
// a server that is not in the room, word for word as Synapse.
const ErrHostNotInRoom = "Host not in room."

// WithMembersOnly makes /backfill, /get_missing_events, /event, /state_ids and /state answer
// 403 {"errcode":"M_FORBIDDEN","error":"Host not in room."} unless the request's X-Matrix
// origin has joined the room through this peer, as Synapse does. A room the peer does not
// serve is one no server is in: 403 there too, as Synapse (404 without this option).
// make_join and send_join answer anyone, and so does /timestamp_to_event (Synapse checks only
// the server ACL there). See also StartSynapseLike and Peer.SetMembersOnly.
func WithMembersOnly() Option { return func(c *peerConfig) { c.membersOnly = true } }

// WithInviteOnly makes make_join and send_join answer 403 {"errcode":"M_FORBIDDEN","error":
// "You are not invited to this room."} to a user that Peer.Invite did not invite: a room with
// join rule invite, as Synapse and Dendrite answer.
func WithInviteOnly() Option { return func(c *peerConfig) { c.inviteOnly = true } }

// ErrNotInvited is the error message of the 403 an invite-only peer answers a join of a user
// not invited.
const ErrNotInvited = "You are not invited to this room."

// mayJoin reports whether user may join sr through the peer.
func (p *Peer) mayJoin(sr *servedRoom, user id.UserID) bool {
	if !p.inviteOnly {
		return true
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return sr.invited[user]
}

// WithoutMinDepth makes /get_missing_events ignore min_depth, as Synapse does (its servlet
// never passes it on).
func WithoutMinDepth() Option { return func(c *peerConfig) { c.noMinDepth = true } }

// WithJoined starts the peer with these servers joined to its (first) room, as if each had
// made a send_join through it.
func WithJoined(servers ...string) Option {
	return func(c *peerConfig) { c.joined = append(c.joined, servers...) }
}

// WithJoinKey gives the peer a public key of server, with which send_join verifies the
// signature of a join that server sends. It can be given once per key.
//
// Without WithJoinKey and WithJoinKeys, send_join does not check signatures at all: a test
// that does not care need not publish its key anywhere.
func WithJoinKey(server string, keyID id.KeyID, pub id.SigningKey) Option {
	return func(c *peerConfig) {
		if c.joinKeys == nil {
			c.joinKeys = make(map[string]map[id.KeyID]id.SigningKey)
		}
		if c.joinKeys[server] == nil {
			c.joinKeys[server] = make(map[id.KeyID]id.SigningKey)
		}
		c.joinKeys[server][keyID] = pub
	}
}

// WithJoinKeys gives the peer a way to get servers' keys for send_join's signature check,
// asked after the keys of WithJoinKey. A key it returns as "" is unknown, and a join signed
// only with unknown keys is refused. Like WithJoinKey, it turns the check on.
func WithJoinKeys(get pdu.GetKeyFunc) Option { return func(c *peerConfig) { c.joinKeyFunc = get } }

// joinKeyGetter combines WithJoinKey's keys and WithJoinKeys' function; nil without either.
func (c *peerConfig) joinKeyGetter() pdu.GetKeyFunc {
	if c.joinKeys == nil && c.joinKeyFunc == nil {
		return nil
	}
	keys, next := c.joinKeys, c.joinKeyFunc
	return func(server string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
		if k, ok := keys[server][keyID]; ok {
			// A key a test hands over is valid for as long as the test runs.
			return k, time.Now().Add(24 * time.Hour), nil
		}
		if next != nil {
			return next(server, keyID, minValidUntil)
		}
		return "", time.Time{}, nil
	}
}

// SynapseOptions are the options that make a peer behave as Synapse does towards a server
// syncing a room: members only, min_depth ignored, 20 events per /get_missing_events and
// 100 per /backfill. /state_ids and /state answer the state before the event, as Synapse,
// by default (not WithStateAfter).
func SynapseOptions() []Option {
	return []Option{
		WithMembersOnly(), WithoutMinDepth(),
		WithMissingEventsCap(DefaultMissingEventsCap), WithBackfillCap(DefaultBackfillCap),
	}
}

// StartSynapseLike is Start with SynapseOptions, then opts (which may override them).
func StartSynapseLike(tb testing.TB, room *Room, opts ...Option) *Peer {
	tb.Helper()
	return Start(tb, room, append(SynapseOptions(), opts...)...)
}

// SetMembersOnly turns members-only history (WithMembersOnly) on or off while the peer runs.
func (p *Peer) SetMembersOnly(on bool) { p.membersOnly.Store(on) }

// MembersOnly reports whether the peer serves history to members only.
func (p *Peer) MembersOnly() bool { return p.membersOnly.Load() }

// Joined reports whether server has joined the peer's (first) room through it.
func (p *Peer) Joined(server string) bool { return p.primary.isJoined(server) }

// SetJoined makes server joined to the peer's (first) room, or not: false is how a test
// makes a server leave (the fixture's room never holds the leave event).
func (p *Peer) SetJoined(server string, joined bool) { p.primary.setJoined(server, joined) }

// JoinedRoom is Joined for any room the peer serves; false for a room it does not serve.
func (p *Peer) JoinedRoom(roomID id.RoomID, server string) bool {
	sr, ok := p.rooms[roomID]
	return ok && sr.isJoined(server)
}

// SetRoomJoined is SetJoined for any room the peer serves.
func (p *Peer) SetRoomJoined(roomID id.RoomID, server string, joined bool) error {
	sr, ok := p.rooms[roomID]
	if !ok {
		return fmt.Errorf("fixturepeer: peer %s does not serve %s", p.name, roomID)
	}
	sr.setJoined(server, joined)
	return nil
}

// JoinedServers returns the servers joined to the peer's (first) room through it, sorted.
func (p *Peer) JoinedServers() []string { return p.primary.joinedServers() }

func (sr *servedRoom) isJoined(server string) bool {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return sr.joined[server]
}

func (sr *servedRoom) setJoined(server string, joined bool) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if joined {
		sr.joined[server] = true
	} else {
		delete(sr.joined, server)
	}
}

func (sr *servedRoom) joinedServers() []string {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	out := make([]string, 0, len(sr.joined))
	for s := range sr.joined {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// requestOrigin is the X-Matrix origin of an authenticated request (wrap checked it is there).
func requestOrigin(req *http.Request) string {
	return federation.ParseXMatrixAuth(req.Header.Get("Authorization")).Origin
}

// historyRoom returns the served room a history request (/backfill, /get_missing_events,
// /state_ids, /state) names, or the refusal to answer: 404 for an unknown room, or when
// members-only, 403 for a server that is not in it (an unknown room included, as Synapse).
func (p *Peer) historyRoom(req *http.Request) (*Room, *holdState, int, any) {
	sr, ok := p.rooms[id.RoomID(req.PathValue("roomId"))]
	if p.membersOnly.Load() && (!ok || !sr.isJoined(requestOrigin(req))) {
		status, body := errBody(http.StatusForbidden, "M_FORBIDDEN", ErrHostNotInRoom)
		return nil, nil, status, body
	}
	if !ok {
		status, body := errBody(http.StatusNotFound, "M_NOT_FOUND", "Unknown room")
		return nil, nil, status, body
	}
	return sr.room, sr.hold.Load(), 0, nil
}

// mayRead reports whether the request's origin may read sr's history.
func (p *Peer) mayRead(req *http.Request, sr *servedRoom) bool {
	return !p.membersOnly.Load() || sr.isJoined(requestOrigin(req))
}

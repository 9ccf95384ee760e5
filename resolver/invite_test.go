package resolver_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

const ourUser = "@roomsync:" + ourServer

// invite asks the harness's resolver to take an invite as origin.
func (h *harness) invite(origin string, inv federation.Invite) (json.RawMessage, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.res.Invite(ctx, origin, inv)
}

// In a room that needs no join (world-readable, served in full), IfNeeded stays out until a
// member invites us: the invite comes back with our signature beside the inviter's, is
// recorded, and the next pass joins.
func TestInviteLeadsToJoin(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 91, Events: 80})
	peer := fixturepeer.Start(t, room, fixturepeer.WithJoinKey(ourServer, key.ID, key.Pub))
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinIfNeeded, key))
	h.res.SetRooms([]string{string(room.ID)})
	ctx := context.Background()

	r, err := h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
	if err != nil || !r.Converged || r.Membership != resolver.MembershipNotJoined {
		t.Fatalf("first pass %+v (%v); want converged without joining", r, err)
	}

	raw, eventID, err := peer.Invite(ourUser)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := h.invite(peer.ServerName(), federation.Invite{RoomID: string(room.ID), EventID: string(eventID), RoomVersion: string(room.Version), Event: raw})
	if err != nil {
		t.Fatalf("invite refused: %v", err)
	}
	var ev pdu.PDU
	if err := json.Unmarshal(signed, &ev); err != nil {
		t.Fatal(err)
	}
	if got, _ := ev.GetEventID(room.Version); got != eventID {
		t.Errorf("countersigned invite is %s, want the same event %s", got, eventID)
	}
	ourKey := func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	peerKey := func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return peer.Key().Pub, time.Now().Add(time.Hour), nil
	}
	if err := ev.VerifySignature(room.Version, ourServer, ourKey); err != nil {
		t.Errorf("our signature: %v", err)
	}
	if err := ev.VerifySignature(room.Version, peer.ServerName(), peerKey); err != nil {
		t.Errorf("the inviter's signature: %v", err)
	}
	m, err := h.store.Membership(ctx, string(room.ID), ourUser)
	if err != nil || m.State != store.MembershipInvited || m.EventID != string(eventID) {
		t.Fatalf("membership %+v (%v), want Invited by %s", m, err, eventID)
	}

	r, err = h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
	if err != nil || r.Membership != resolver.MembershipJoined || !peer.Joined(ourServer) {
		t.Fatalf("pass after the invite %+v (%v); want joined", r, err)
	}
	if n := peer.Count(fixturepeer.EndpointSendJoin); n != 1 {
		t.Errorf("%d send_joins, want 1", n)
	}
}

// Invites the resolver refuses, each with its Matrix error, leave no membership behind.
func TestInviteRefusals(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 92, Events: 20})
	peer := fixturepeer.Start(t, room)
	other := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 93, Events: 5})
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinIfNeeded, key))
	never := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinNever, key))
	for _, x := range []*harness{h, never} {
		x.res.SetRooms([]string{string(room.ID)})
	}
	good, goodID, err := peer.Invite(ourUser)
	if err != nil {
		t.Fatal(err)
	}
	someoneElse, someoneElseID, err := peer.Invite("@alice:" + ourServer)
	if err != nil {
		t.Fatal(err)
	}
	// A field the hash covers and the signature does not: the content no longer matches.
	tampered, err := sjson.SetBytes(good, "content.reason", "changed on the way")
	if err != nil {
		t.Fatal(err)
	}
	inv := func(roomID string, eventID id.EventID, version id.RoomVersion, raw json.RawMessage) federation.Invite {
		return federation.Invite{RoomID: roomID, EventID: string(eventID), RoomVersion: string(version), Event: raw}
	}
	cases := []struct {
		name   string
		h      *harness
		origin string
		inv    federation.Invite
		want   mautrix.RespError
		reason string
	}{
		{"room not replicated", h, peer.ServerName(), inv(string(other.ID), goodID, room.Version, good), mautrix.MForbidden, "not replicated"},
		{"policy Never", never, peer.ServerName(), inv(string(room.ID), goodID, room.Version, good), mautrix.MForbidden, "Never"},
		{"unsupported room version", h, peer.ServerName(), inv(string(room.ID), goodID, "org.example.custom", good), mautrix.MIncompatibleRoomVersion, "not supported"},
		{"room version 1", h, peer.ServerName(), inv(string(room.ID), goodID, id.RoomV1, good), mautrix.MIncompatibleRoomVersion, "not supported"},
		{"another user", h, peer.ServerName(), inv(string(room.ID), someoneElseID, room.Version, someoneElse), mautrix.MForbidden, "invites of " + ourUser},
		{"path names another event", h, peer.ServerName(), inv(string(room.ID), "$other", room.Version, good), mautrix.MBadJSON, "the request names"},
		{"sent by another server", h, "127.0.0.1:1", inv(string(room.ID), goodID, room.Version, good), mautrix.MForbidden, "is not of"},
		{"content changed", h, peer.ServerName(), inv(string(room.ID), goodID, room.Version, tampered), mautrix.MForbidden, "does not match its hash"},
		{"a message, not an invite", h, peer.ServerName(), inv(string(room.ID), room.Events[3].ID, room.Version, room.Events[3].JSON), mautrix.MBadJSON, "not an invite"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.h.invite(tc.origin, tc.inv)
			var got mautrix.RespError
			if !errors.As(err, &got) || got.ErrCode != tc.want.ErrCode || !strings.Contains(got.Err, tc.reason) {
				t.Errorf("error %v, want %s saying %q", err, tc.want.ErrCode, tc.reason)
			}
			if m, err := tc.h.store.Membership(context.Background(), tc.inv.RoomID, ourUser); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refused invite left membership %+v", m)
			}
		})
	}
}

// An invite-only room on a peer that shows nothing to non-members and does not serve
// /timestamp_to_event (as Dendrite v0.13.8): before the invite, IfNeeded can neither see nor
// join the room, and says why (JoinFailed, the peer's refusal); once invited, the next pass
// joins, learns the room version from make_join, and converges.
func TestInviteOnlyRoomJoinsOnceInvited(t *testing.T) {
	key := mfed.GenerateSigningKey()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 94, Events: 120})
	peer := fixturepeer.StartSynapseLike(t, room, fixturepeer.WithInviteOnly(), fixturepeer.WithoutTimestampToEvent(),
		fixturepeer.WithJoinKey(ourServer, key.ID, key.Pub))
	h := newHarness(t, room, []*fixturepeer.Peer{peer}, withJoin(resolver.JoinIfNeeded, key))
	h.res.SetRooms([]string{string(room.ID)})
	ctx := context.Background()

	r, err := h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
	if err == nil || r.Membership != resolver.MembershipJoinFailed || !strings.Contains(r.MembershipReason, fixturepeer.ErrNotInvited) {
		t.Fatalf("pass before the invite: %+v (%v); want JoinFailed saying %q", r, err, fixturepeer.ErrNotInvited)
	}
	if len(h.storedIDs()) != 0 {
		t.Fatal("events stored before we could see the room")
	}

	raw, eventID, err := peer.Invite(ourUser)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.invite(peer.ServerName(), federation.Invite{RoomID: string(room.ID), EventID: string(eventID), RoomVersion: string(room.Version), Event: raw}); err != nil {
		t.Fatalf("invite refused: %v", err)
	}
	results := h.syncUntilDone(5)
	if last := results[len(results)-1]; !last.Converged || last.Membership != resolver.MembershipJoined {
		t.Fatalf("after the invite, last pass %+v; want joined and converged", last)
	}
	if !peer.Joined(ourServer) {
		t.Error("the peer did not see our join")
	}
	h.assertAllValid()
}

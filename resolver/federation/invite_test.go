package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
)

// inviteSetup is a sendSetup whose server also takes invites, with a receiver that records
// what it got and answers with answer, or refuses with refuse.
type inviteSetup struct {
	*sendSetup
	got    []Invite
	origin []string
	answer json.RawMessage
	refuse error
}

func newInviteSetup(t *testing.T) *inviteSetup {
	s := &inviteSetup{answer: json.RawMessage(`{"type":"m.room.member","countersigned":true}`)}
	s.sendSetup = newSendSetup(t, true, func(srv *Server) {
		srv.HandleInvite(func(_ context.Context, origin string, inv Invite) (json.RawMessage, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got, s.origin = append(s.got, inv), append(s.origin, origin)
			return s.answer, s.refuse
		})
	})
	return s
}

// signedInvite PUTs body to /v2/invite/{roomId}/{eventId}, signed as the origin.
func (s *inviteSetup) signedInvite(t *testing.T, roomID, eventID string, body any) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, resp, err := s.signer.MakeFullRequest(ctx, mfed.RequestParams{
		ServerName: sendTestServer, Method: http.MethodPut, Path: mfed.URLPath{"v2", "invite", roomID, eventID},
		Authenticate: true, RequestJSON: body,
	})
	if resp == nil {
		t.Fatalf("invite: %v", err)
	}
	return resp.StatusCode, out
}

// A signed invite reaches the receiver with the path's room and event, the stated version,
// the event as sent and the signing server as origin; the answer is the receiver's event.
func TestInviteReachesReceiver(t *testing.T) {
	s := newInviteSetup(t)
	event := json.RawMessage(`{"type":"m.room.member","state_key":"@roomsync:us.example"}`)
	status, body := s.signedInvite(t, "!room:example.org", "$ev", map[string]any{
		"room_version": "11", "event": event, "invite_room_state": []any{},
	})
	if status != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", status, body)
	}
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || string(resp.Event) != string(s.answer) {
		t.Errorf("answer %s, want {\"event\": %s}", body, s.answer)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 1 {
		t.Fatalf("receiver got %d invites, want 1", len(s.got))
	}
	got := s.got[0]
	if got.RoomID != "!room:example.org" || got.EventID != "$ev" || got.RoomVersion != "11" || string(got.Event) != string(event) || s.origin[0] != s.sendSetup.origin.ServerName() {
		t.Errorf("receiver got %+v from %s", got, s.origin[0])
	}
}

// Invites refused before or by the receiver.
func TestInviteRefusals(t *testing.T) {
	s := newInviteSetup(t)
	event := json.RawMessage(`{"type":"m.room.member"}`)
	cases := []struct {
		name       string
		do         func() (int, []byte)
		wantStatus int
		wantCode   string
	}{
		{"unsigned", func() (int, []byte) {
			return s.plain(t, http.MethodPut, "/_matrix/federation/v2/invite/!r:x/$e", []byte(`{}`))
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"no room version", func() (int, []byte) {
			return s.signedInvite(t, "!r:x", "$e", map[string]any{"event": event})
		}, http.StatusBadRequest, "M_BAD_JSON"},
		{"no event", func() (int, []byte) {
			return s.signedInvite(t, "!r:x", "$e", map[string]any{"room_version": "11"})
		}, http.StatusBadRequest, "M_BAD_JSON"},
		{"version 1 of the endpoint", func() (int, []byte) {
			return s.plain(t, http.MethodPut, "/_matrix/federation/v1/invite/!r:x/$e", []byte(`{}`))
		}, http.StatusNotFound, "M_UNRECOGNIZED"},
		{"refused by the receiver", func() (int, []byte) {
			s.mu.Lock()
			s.refuse = mautrix.MForbidden.WithMessage("not here")
			s.mu.Unlock()
			return s.signedInvite(t, "!r:x", "$e", map[string]any{"room_version": "11", "event": event})
		}, http.StatusForbidden, "M_FORBIDDEN"},
		{"over 1 MiB", func() (int, []byte) {
			return s.plain(t, http.MethodPut, "/_matrix/federation/v2/invite/!r:x/$e", make([]byte, InviteMaxBody+1))
		}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.do()
			if status != tc.wantStatus || errcode(body) != tc.wantCode {
				t.Errorf("status %d errcode %q (%.200s), want %d %q", status, errcode(body), body, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

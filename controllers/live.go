package controllers

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
)

// wakeBuffer bounds the wake-ups waiting for the controller; past it they are dropped, as a
// RoomSync already queued needs no second one.
const wakeBuffer = 1024

// Receive takes the PDUs a peer pushed to our listener (PUT /send, already authenticated):
// each room's PDUs go to the resolver of a RoomSync that names the room, which verifies and
// stores them and closes live gaps; the RoomSyncs naming a room that got new events are woken
// so their status follows within seconds rather than at the next interval. A transaction
// none of whose PDUs is of a room we replicate is refused whole (403).
func (s *Syncer) Receive(ctx context.Context, origin string, pdus []json.RawMessage) (map[string]string, error) {
	byRoom := map[string][]json.RawMessage{}
	var named []string
	var strangers []json.RawMessage
	sessions := map[string]*session{}
	for _, pdu := range pdus {
		room := gjson.GetBytes(pdu, "room_id").Str
		if _, seen := sessions[room]; !seen {
			sessions[room] = s.sessionNaming(room, false)
			if sessions[room] != nil {
				named = append(named, room)
			}
		}
		if sessions[room] == nil {
			strangers = append(strangers, pdu)
			continue
		}
		byRoom[room] = append(byRoom[room], pdu)
	}
	if len(pdus) > 0 && len(named) == 0 {
		return nil, resolver.ErrRoomNotReplicated
	}
	results := map[string]string{}
	if s.Metrics != nil {
		defer func() { s.Metrics.received(origin, pdus, results, time.Now()) }()
	}
	for i, room := range named {
		batch := byRoom[room]
		if i == 0 {
			// PDUs of rooms nobody names ride along, and are refused one by one with the
			// reason.
			batch = append(batch, strangers...)
		}
		res, changed := sessions[room].resolver.Receive(ctx, origin, batch)
		for id, outcome := range res {
			results[id] = outcome
		}
		for _, r := range changed {
			s.wake(r)
		}
	}
	return results, nil
}

// Invite takes an invite of our user to a room a RoomSync names (PUT /v2/invite, already
// authenticated): the resolver of a RoomSync whose policy lets it join countersigns it and
// records it, and the RoomSyncs naming the room are woken to join.
func (s *Syncer) Invite(ctx context.Context, origin string, inv federation.Invite) (json.RawMessage, error) {
	sess := s.sessionNaming(inv.RoomID, true)
	if sess == nil {
		return nil, resolver.ErrRoomNotReplicated
	}
	signed, err := sess.resolver.Invite(ctx, origin, inv)
	if err != nil {
		return nil, err
	}
	s.wake(inv.RoomID)
	return signed, nil
}

// Wakes is the source of wake-ups for the controller (SetupWithManager watches it).
func (s *Syncer) Wakes() <-chan event.GenericEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wakes == nil {
		s.wakes = make(chan event.GenericEvent, wakeBuffer)
	}
	return s.wakes
}

// wake queues a reconcile of each RoomSync naming room.
func (s *Syncer) wake(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wakes == nil {
		return
	}
	for key, sess := range s.sessions {
		if !slices.Contains(sess.rooms, room) {
			continue
		}
		obj := &roomsyncv1alpha1.RoomSync{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		select {
		case s.wakes <- event.GenericEvent{Object: obj}:
		default:
		}
	}
}

// sessionNaming is a session of a RoomSync naming room, preferring one that may join it when
// joining is true; nil when none names it.
func (s *Syncer) sessionNaming(room string, joining bool) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found *session
	for _, sess := range s.sessions {
		if !slices.Contains(sess.rooms, room) {
			continue
		}
		if !joining || sess.join != resolver.JoinNever {
			return sess
		}
		found = sess
	}
	return found
}

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
)

// wakeBuffer bounds the wake-ups waiting for the controller; past it they are dropped, as a
// RoomSync already queued needs no second one.
const wakeBuffer = 1024

// Receive takes the PDUs a peer pushed to our listener (PUT /send, already authenticated):
// each room's PDUs go to the resolver of a RoomSync that names the room, which verifies and
// stores them and closes live gaps; the RoomSyncs naming a room that got new events are woken
// so their status follows within seconds rather than at the next interval.
func (s *Syncer) Receive(ctx context.Context, origin string, pdus []json.RawMessage) map[string]string {
	byRoom := map[string][]json.RawMessage{}
	var order []string
	for _, pdu := range pdus {
		room := gjson.GetBytes(pdu, "room_id").Str
		if _, ok := byRoom[room]; !ok {
			order = append(order, room)
		}
		byRoom[room] = append(byRoom[room], pdu)
	}
	results := map[string]string{}
	if s.Metrics != nil {
		defer func() { s.Metrics.received(origin, pdus, results, time.Now()) }()
	}
	for _, room := range order {
		sess := s.sessionNaming(room)
		if sess == nil {
			// A room no RoomSync names: any session's resolver refuses it with the reason.
			if sess = s.anySession(); sess == nil {
				continue
			}
		}
		res, changed := sess.resolver.Receive(ctx, origin, byRoom[room])
		for id, outcome := range res {
			results[id] = outcome
		}
		for _, r := range changed {
			s.wake(r)
		}
	}
	return results
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

func (s *Syncer) sessionNaming(room string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		if slices.Contains(sess.rooms, room) {
			return sess
		}
	}
	return nil
}

func (s *Syncer) anySession() *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		return sess
	}
	return nil
}

package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/store"
)

// The manager's start-up check of the event store: the cheap part of `roomsync fsck`
// (store.QuickCheck: the database, and each room's counters against its rows), bounded in
// time. A RoomSync naming a room it found damaged (every RoomSync, when the database itself
// is) stalls with StoreCorrupt rather than syncing on top of lost rows and calling the room
// converged on counters that lie.

// storeHealth is what the start-up check found.
type storeHealth struct {
	done chan struct{} // closed once the check has run

	mu     sync.Mutex
	damage store.Damage
}

// StartStoreCheck runs the store's quick check in the background, for at most timeout, and
// returns a channel closed when it is done. Reconciles that start meanwhile wait for it.
func (s *Syncer) StartStoreCheck(ctx context.Context, timeout time.Duration) <-chan struct{} {
	h := &storeHealth{done: make(chan struct{})}
	s.mu.Lock()
	s.health = h
	s.mu.Unlock()
	go func() {
		defer close(h.done)
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		d, err := store.QuickCheck(ctx, s.Store)
		if err != nil {
			s.Log.WithName("store-check").Error(err, "The start-up check of the event store failed; rooms are synced unchecked")
			return
		}
		h.mu.Lock()
		h.damage = d
		h.mu.Unlock()
		s.logDamage(d, time.Since(start))
	}()
	return h.done
}

// logDamage says what the check found, a line per damaged room.
func (s *Syncer) logDamage(d store.Damage, took time.Duration) {
	log := s.Log.WithName("store-check")
	if len(d.Database) > 0 {
		log.Error(nil, "The event store is damaged; no room is synced on it until `roomsync fsck` or a restore fixes it",
			"problems", d.Database)
	}
	for _, room := range slices.Sorted(maps.Keys(d.Rooms)) {
		log.Error(nil, "The event store's counters of a room disagree with its rows; the room is not synced until `roomsync fsck --repair` fixes it",
			"room", room, "problems", d.Rooms[room])
	}
	if len(d.Unchecked) > 0 {
		log.Info("The start-up check of the event store left rooms unchecked", "rooms", len(d.Unchecked))
	}
	log.Info("Checked the event store", "damaged", !d.None(), "seconds", took.Seconds())
}

// storeDamage is what the start-up check found wrong that affects a RoomSync's rooms.
type storeDamage struct {
	database []string
	rooms    map[string][]string
}

// damageOf waits for the start-up check and returns what it found that affects rooms, nil
// when nothing does. A room found damaged is checked again first (its counters are cheap to
// check): one that fsck has repaired since is cleared, and syncs. Damage to the database
// itself stays until the manager restarts.
func (s *Syncer) damageOf(ctx context.Context, rooms []string) (*storeDamage, error) {
	s.mu.Lock()
	h := s.health
	s.mu.Unlock()
	if h == nil {
		return nil, nil
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.damage.Database) > 0 {
		return &storeDamage{database: h.damage.Database}, nil
	}
	d := &storeDamage{rooms: map[string][]string{}}
	for _, room := range rooms {
		if len(h.damage.Rooms[room]) == 0 {
			continue
		}
		problems, err := store.CheckRoomCounters(ctx, s.Store, room)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			problems = []string{err.Error()}
		case len(problems) == 0:
			s.Log.Info("The room's counters agree with its rows again; syncing it", "room", room)
			delete(h.damage.Rooms, room)
			continue
		}
		h.damage.Rooms[room] = problems
		d.rooms[room] = problems
	}
	if len(d.rooms) == 0 {
		return nil, nil
	}
	return d, nil
}

// markRooms says in the room statuses which rooms the damage keeps from syncing.
func (d *storeDamage) markRooms(rooms []roomsyncv1alpha1.RoomStatus) {
	for i := range rooms {
		problems := d.database
		if len(problems) == 0 {
			problems = d.rooms[rooms[i].ID]
		}
		if len(problems) > 0 {
			rooms[i].Converged = false
			rooms[i].LastError = truncate("the event store is damaged: "+strings.Join(problems, "; "), 512)
		}
	}
}

// err is the stalling error of the RoomSync namespace/name, which the damage affects.
func (d *storeDamage) err(namespace, name string) error {
	if len(d.database) > 0 {
		return &stallingError{Reason: roomsyncv1alpha1.ReasonStoreCorrupt, Err: fmt.Errorf(
			"the event store is damaged (the manager's start-up check: %s); no room is synced on it. "+
				"Stop the manager, run `roomsync fsck --store URL` (--repair, or restore a backup), then start it again",
			strings.Join(d.database[:min(len(d.database), 3)], "; "))}
	}
	var parts []string
	for _, room := range slices.Sorted(maps.Keys(d.rooms)) {
		p := d.rooms[room]
		parts = append(parts, fmt.Sprintf("%s: %s", room, strings.Join(p[:min(len(p), 2)], "; ")))
	}
	return &stallingError{Reason: roomsyncv1alpha1.ReasonStoreCorrupt, Err: fmt.Errorf(
		"the event store's counters disagree with the rows of %d rooms (%s); they are not synced. "+
			"Run `roomsync fsck --store URL --room ROOM --repair`, then request a pass "+
			"(kubectl annotate rms -n %s %s %s=$(date +%%s) --overwrite)",
		len(d.rooms), strings.Join(parts, "; "), namespace, name, roomsyncv1alpha1.ReconcileRequestedAnnotation)}
}

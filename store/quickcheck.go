package store

import (
	"context"
	"errors"
	"fmt"
)

// Damage is what QuickCheck found wrong with a store.
type Damage struct {
	// Database lists damage to the database or its schema: every room is affected.
	Database []string
	// Rooms lists, by room, how its counters disagree with its rows.
	Rooms map[string][]string
	// Unchecked says, by room, why a room was not checked: the time bound ran out, or its
	// rows could not be read for a reason that says nothing of them (a lost connection).
	// The database itself is "" here.
	Unchecked map[string]string
}

// None reports whether nothing was found.
func (d Damage) None() bool { return len(d.Database) == 0 && len(d.Rooms) == 0 }

// Of returns what is wrong that affects the room: the database's damage, or the room's own.
func (d Damage) Of(roomID string) []string {
	if len(d.Database) > 0 {
		return d.Database
	}
	return d.Rooms[roomID]
}

// QuickCheck is the manager's start-up check, bounded by ctx: the database (CheckDatabase,
// quick_check on SQLite), then the counters of each room (CheckRoomCounters). It re-verifies
// no event and walks no edge: `roomsync fsck` does. What ctx's end leaves unchecked is
// listed as such, not reported as damage.
func QuickCheck(ctx context.Context, st Store) (Damage, error) {
	d := Damage{Rooms: map[string][]string{}, Unchecked: map[string]string{}}
	db, err := CheckDatabase(ctx, st, false)
	switch {
	case ctx.Err() != nil:
		d.Unchecked[""] = fmt.Sprintf("the database check did not finish: %v", ctx.Err())
		return d, nil
	case err != nil:
		return d, fmt.Errorf("check the database: %w", err)
	}
	d.Database = append(append(d.Database, db.Damaged...), db.Schema...)
	if len(db.OrphanRooms) > 0 {
		d.Database = append(d.Database, fmt.Sprintf("events are held for %d rooms without a room row: %s",
			len(db.OrphanRooms), sample(db.OrphanRooms)))
	}
	if len(db.MissingTables) > 0 {
		return d, nil // no room can be read
	}
	rooms, err := RoomIDs(ctx, st)
	if err != nil {
		if IsDamage(err) {
			d.Database = append(d.Database, err.Error())
			return d, nil
		}
		return d, err
	}
	for _, room := range rooms {
		if ctx.Err() != nil {
			d.Unchecked[room] = fmt.Sprintf("not reached in time: %v", ctx.Err())
			continue
		}
		problems, err := CheckRoomCounters(ctx, st, room)
		switch {
		case IsDamage(err):
			d.Rooms[room] = []string{err.Error()}
		case errors.Is(err, ErrNotFound):
			// Its row went between the listing and the check: nothing to check.
		case err != nil:
			d.Unchecked[room] = err.Error()
		case len(problems) > 0:
			d.Rooms[room] = problems
		}
	}
	return d, nil
}

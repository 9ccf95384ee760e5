// Package fsck checks a roomsync store and repairs what can be rebuilt from its rows, for
// `roomsync fsck`. Check reads: the database beneath the rows (store.CheckDatabase), each
// room's bookkeeping against its rows (store.CheckRoom), and every event verified again with
// the keys the store keeps (resolver.RecheckEvent). Repair writes, a room at a time
// (store.RepairRoom): the events that failed re-verification go, what they and any lost rows
// leave behind becomes gaps that the next sync fills from the peers, and the counters,
// extremities and state are rebuilt. Damage below the rows (a SQLite file whose pages are
// broken, a table gone) is beyond that: the report says so and points to a backup or a
// re-sync.
package fsck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// ErrNoRoom is returned (wrapped) by Check for a room the store holds nothing of.
var ErrNoRoom = errors.New("the store holds no such room")

// Options say what Check checks.
type Options struct {
	// Room limits the check to one room; "" checks every room.
	Room string
	// Thorough runs SQLite's integrity_check instead of quick_check.
	Thorough bool
	// Workers bounds the events verified at once; 0 takes one per CPU.
	Workers int
}

// Report is what Check found and Repair did, as `roomsync fsck --json` prints it.
type Report struct {
	Database Database `json:"database"`
	Rooms    []Room   `json:"rooms"`
	Summary  Summary  `json:"summary"`
	// BeyondRepair says why a repair of rows cannot fix the store, and what to do instead;
	// "" when Repair can.
	BeyondRepair string `json:"beyond_repair,omitempty"`
}

// Database is what was found beneath the rows.
type Database struct {
	// Check names the checks that ran (SQLite's quick_check or integrity_check, or
	// PostgreSQL's read of every table; then the schema).
	Check         string   `json:"check"`
	SchemaVersion int      `json:"schema_version"`
	Problems      []string `json:"problems"`
	// RoomsWithoutRow are rooms whose events are held without a row in rooms; the repair
	// makes the rows.
	RoomsWithoutRow []string `json:"rooms_without_row,omitempty"`
}

// Room is the report on one room.
type Room struct {
	RoomID      string `json:"room_id"`
	RoomVersion string `json:"room_version"`
	// Events counts the event rows held (read and verified).
	Events int64 `json:"events"`
	// Problems are what the room's rows say wrong of each other: counters, extremities,
	// edges, state.
	Problems []string `json:"problems"`
	// Verified counts the events that verified and match their rows; Unverifiable those
	// whose servers' keys the store does not keep (UnverifiableServers), which are neither
	// sound nor corrupt here.
	Verified            int      `json:"verified"`
	Unverifiable        int      `json:"unverifiable"`
	UnverifiableServers []string `json:"unverifiable_servers,omitempty"`
	// BadEvents are the events whose rows failed re-verification.
	BadEvents []BadEvent `json:"bad_events"`
	// Repair is what Repair did to the room; nil when it did not run on it.
	Repair *RoomRepair `json:"repair,omitempty"`
	// Clean: nothing wrong (after the repair, if one ran).
	Clean bool `json:"clean"`

	// unreadable: some of the room's event rows could not be read, so not every event was
	// verified, and no repair makes them readable.
	unreadable bool
}

// BadEvent is an event whose row failed re-verification.
type BadEvent struct {
	EventID string `json:"event_id"`
	// Verdict is "corrupt" (the repair deletes the row and makes it a gap) or "misflagged"
	// (the repair clears the redacted flag).
	Verdict string `json:"verdict"`
	Problem string `json:"problem"`
}

// RoomRepair is what a repair did to one room (see store.RepairResult).
type RoomRepair struct {
	Deleted          int      `json:"deleted"`
	Unredacted       int      `json:"unredacted"`
	StaleEdges       int      `json:"stale_edges"`
	EdgesRebuilt     bool     `json:"edges_rebuilt"`
	GapsAdded        int      `json:"gaps_added"`
	GapsRemoved      int      `json:"gaps_removed"`
	ForwardAdded     int      `json:"forward_added"`
	ForwardRemoved   int      `json:"forward_removed"`
	Unreferenced     int      `json:"unreferenced"`
	Renumbered       int      `json:"renumbered"`
	StateInvalidated int      `json:"state_invalidated"`
	StateRowsRemoved int      `json:"state_rows_removed"`
	Counters         []string `json:"counters"`
	// Remaining are the problems CheckRoom still finds after the repair.
	Remaining []string `json:"remaining"`
}

// Summary adds up the rooms.
type Summary struct {
	Rooms             int   `json:"rooms"`
	RoomsWithProblems int   `json:"rooms_with_problems"`
	Events            int64 `json:"events"`
	Verified          int   `json:"verified"`
	Unverifiable      int   `json:"unverifiable"`
	BadEvents         int   `json:"bad_events"`
	RoomsRepaired     int   `json:"rooms_repaired"`
	// Clean: nothing wrong with the database or any room (after the repair, if one ran).
	Clean   bool    `json:"clean"`
	Seconds float64 `json:"seconds"`
}

// NeedsRepair reports whether a repair has something to do.
func (r *Report) NeedsRepair() bool {
	return slices.ContainsFunc(r.Rooms, func(room Room) bool { return !room.Clean })
}

// Check checks the store, reading only.
func Check(ctx context.Context, st store.Store, opts Options) (*Report, error) {
	start := time.Now()
	db, err := store.CheckDatabase(ctx, st, opts.Thorough)
	if err != nil {
		return nil, fmt.Errorf("check the database: %w", err)
	}
	rep := &Report{Database: Database{Check: db.Method + " and the schema", SchemaVersion: db.SchemaVersion,
		Problems: slices.Concat(db.Damaged, db.Schema), RoomsWithoutRow: db.OrphanRooms}}
	rep.BeyondRepair = beyondRepair(db)
	if len(db.MissingTables) == 0 {
		rooms, err := roomsToCheck(ctx, st, opts.Room, db.OrphanRooms)
		if err != nil {
			return nil, err
		}
		keys := resolver.StoredKeys(st)
		for _, id := range rooms {
			room, err := checkRoom(ctx, st, id, keys, opts.Workers)
			if err != nil {
				return nil, err
			}
			rep.Rooms = append(rep.Rooms, room)
		}
	}
	rep.summarize(time.Since(start))
	return rep, nil
}

// beyondRepair says what in db a repair of rows cannot fix, and what to do.
func beyondRepair(db store.DatabaseCheck) string {
	const instead = "Restore the store from a backup, or move it aside and let roomsync sync (or the manager) fetch the rooms again from their peers."
	switch {
	case len(db.Damaged) > 0:
		return fmt.Sprintf("the database is damaged below its rows (%s found %d problems): fsck repairs rows, not pages. %s",
			db.Method, len(db.Damaged), instead)
	case len(db.MissingTables) > 0:
		return fmt.Sprintf("the schema lacks the tables %s, so no room can be read. %s", strings.Join(db.MissingTables, ", "), instead)
	case len(db.Schema) > 0:
		return fmt.Sprintf("the schema is not what the migrations of version %d make (%s). %s",
			db.SchemaVersion, db.Schema[0], instead)
	}
	return ""
}

// roomsToCheck is the room asked for, or every room with a row or with events.
func roomsToCheck(ctx context.Context, st store.Store, only string, orphans []string) ([]string, error) {
	rooms, err := store.RoomIDs(ctx, st)
	if err != nil {
		return nil, err
	}
	rooms = slices.Compact(slices.Sorted(slices.Values(slices.Concat(rooms, orphans))))
	if only == "" {
		return rooms, nil
	}
	if !slices.Contains(rooms, only) {
		return nil, fmt.Errorf("room %s: %w", only, ErrNoRoom)
	}
	return []string{only}, nil
}

// summarize adds up the rooms into the summary.
func (r *Report) summarize(took time.Duration) {
	s := Summary{Rooms: len(r.Rooms), Seconds: took.Seconds()}
	for _, room := range r.Rooms {
		s.Events += room.Events
		s.Verified += room.Verified
		s.Unverifiable += room.Unverifiable
		s.BadEvents += len(room.BadEvents)
		if len(room.Problems) > 0 || len(room.BadEvents) > 0 {
			s.RoomsWithProblems++
		}
		if room.Repair != nil {
			s.RoomsRepaired++
		}
	}
	s.Clean = len(r.Database.Problems) == 0 && len(r.Database.RoomsWithoutRow) == 0 && !r.NeedsRepair()
	r.Summary = s
}

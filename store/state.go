package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// StateKey names one entry of a room's state.
type StateKey struct {
	Type, StateKey string
}

// StateGroup is a room state shared by the events that have it. Group numbers start at 1.
type StateGroup struct {
	No int64
	// PrevGroup is the group Entries are a delta from; 0 when Entries are the whole state.
	PrevGroup int64
	// Chain counts the deltas from this group down to a whole one (0 for a whole group).
	Chain int
	// Entries map each key to its event; in a delta, "" removes the key from PrevGroup's state.
	Entries map[StateKey]string
}

// EventState is the state of the room around one event, and whether the event was authorized.
type EventState struct {
	EventID string
	// Before is the state group before the event; After the one after it, which differs only
	// for an accepted state event.
	Before, After int64
	// Rejected is the authorization rule the event broke, "" when it is accepted. A rejected
	// event is kept (others name it as a prev) but is never part of a state.
	Rejected string
}

func (s *sqlStore) AllocateStateGroups(ctx context.Context, roomID string, n int) (int64, error) {
	if n < 1 {
		return 0, fmt.Errorf("allocate state groups of %s: n must be positive", roomID)
	}
	var first int64
	err := s.inRoomTx(ctx, roomID, false, func(_ *sql.Tx, room *roomRow) error {
		first = room.stateGroupSeq + 1
		room.stateGroupSeq += int64(n)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("allocate %d state groups of %s: %w", n, roomID, err)
	}
	return first, nil
}

func (s *sqlStore) SaveState(ctx context.Context, roomID string, groups []StateGroup, events []EventState) error {
	err := s.inRoomTx(ctx, roomID, false, func(tx *sql.Tx, room *roomRow) error {
		// Prepared once, not parsed again for each of a page's events.
		q := s.stmts.in(tx)
		if err := s.insertStateGroups(ctx, q, roomID, groups); err != nil {
			return err
		}
		// Accepted events are written a statement per pair of groups, not per event: most
		// events of a page share the state before and after them (messages between two state
		// changes). A rejection also renumbers its event, one statement each.
		accepted := map[[2]int64][]string{}
		var pairs [][2]int64
		for _, e := range events {
			if e.Before < 1 || e.After < 1 {
				return fmt.Errorf("event %s: state groups must be numbered from 1, not %d and %d", e.EventID, e.Before, e.After)
			}
			if e.Rejected == "" {
				pair := [2]int64{e.Before, e.After}
				if _, ok := accepted[pair]; !ok {
					pairs = append(pairs, pair)
				}
				accepted[pair] = append(accepted[pair], e.EventID)
				continue
			}
			// A rejection changes what an export says of the event, so the event arrives
			// again (a new arrival number): an export that took it before its state was
			// computed takes it flagged next time. An accepted event keeps its number.
			res, err := q.ExecContext(ctx, s.d.rebind(`UPDATE events SET state_before = ?, state_after = ?, rejected = ?, seq = ?
				WHERE event_id = ? AND room_id = ? AND state_before IS NULL`),
				e.Before, e.After, e.Rejected, room.eventSeq+1, e.EventID, roomID)
			if err != nil {
				return fmt.Errorf("record the state of %s: %w", e.EventID, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				room.rejected++
				room.eventSeq++
			}
		}
		for _, pair := range pairs {
			// Found by event ID alone: the IDs are the room's (EventsWithoutState), and an
			// event ID names one row. Neither the room nor "state_before IS NULL" is in the
			// WHERE clause, where the planners would take the index of the room's events
			// without state and read it all; coalesce keeps an event's first state, as that
			// test would (group numbers start at 1).
			if _, err := s.execIn(ctx, q, `UPDATE events SET state_before = ?, state_after = ?, rejected = '' WHERE coalesce(state_before, 0) = 0 AND event_id IN `,
				[]any{pair[0], pair[1]}, accepted[pair], ""); err != nil {
				return fmt.Errorf("record the state of %d events: %w", len(accepted[pair]), err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save state of %d events of %s: %w", len(events), roomID, err)
	}
	return nil
}

func (s *sqlStore) insertStateGroups(ctx context.Context, tx querier, roomID string, groups []StateGroup) error {
	type entry struct {
		group int64
		key   StateKey
		event string
	}
	var entries []entry
	for _, g := range groups {
		if g.No < 1 {
			return fmt.Errorf("state group number %d: numbers start at 1", g.No)
		}
		// Sorted, so that the same group is always written the same way.
		keys := make([]StateKey, 0, len(g.Entries))
		for k := range g.Entries {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareStateKeys)
		for _, k := range keys {
			entries = append(entries, entry{g.No, k, g.Entries[k]})
		}
	}
	err := s.insertRows(ctx, tx, "state_groups", []string{"room_id", "group_no", "prev_group", "chain"}, len(groups),
		func(i int, args []any) []any {
			var prev any
			if g := groups[i]; g.PrevGroup > 0 {
				prev = g.PrevGroup
			}
			return append(args, roomID, groups[i].No, prev, groups[i].Chain)
		})
	if err != nil {
		return err
	}
	return s.insertRows(ctx, tx, "state_entries", []string{"room_id", "group_no", "type", "state_key", "event_id"}, len(entries),
		func(i int, args []any) []any {
			e := entries[i]
			return append(args, roomID, e.group, e.key.Type, e.key.StateKey, e.event)
		})
}

func compareStateKeys(a, b StateKey) int {
	if a.Type != b.Type {
		if a.Type < b.Type {
			return -1
		}
		return 1
	}
	switch {
	case a.StateKey < b.StateKey:
		return -1
	case a.StateKey > b.StateKey:
		return 1
	}
	return 0
}

func (s *sqlStore) StateGroup(ctx context.Context, roomID string, no int64) (StateGroup, error) {
	g := StateGroup{No: no, Entries: map[StateKey]string{}}
	var prev sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.d.rebind(`SELECT prev_group, chain FROM state_groups WHERE room_id = ? AND group_no = ?`),
		roomID, no).Scan(&prev, &g.Chain)
	if errors.Is(err, sql.ErrNoRows) {
		return g, fmt.Errorf("state group %d of %s: %w", no, roomID, ErrNotFound)
	}
	if err != nil {
		return g, fmt.Errorf("read state group %d of %s: %w", no, roomID, withContextErr(ctx, err))
	}
	g.PrevGroup = prev.Int64
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT type, state_key, event_id FROM state_entries
		WHERE room_id = ? AND group_no = ?`), roomID, no)
	if err != nil {
		return g, fmt.Errorf("read state group %d of %s: %w", no, roomID, withContextErr(ctx, err))
	}
	defer rows.Close()
	for rows.Next() {
		var k StateKey
		var eventID string
		if err := rows.Scan(&k.Type, &k.StateKey, &eventID); err != nil {
			return g, fmt.Errorf("read state group %d of %s: %w", no, roomID, err)
		}
		g.Entries[k] = eventID
	}
	if err := rows.Err(); err != nil {
		return g, fmt.Errorf("read state group %d of %s: %w", no, roomID, err)
	}
	return g, nil
}

func (s *sqlStore) EventStates(ctx context.Context, eventIDs []string) (map[string]EventState, error) {
	out := make(map[string]EventState, len(eventIDs))
	err := s.queryIn(ctx, s.db, `SELECT event_id, state_before, state_after, rejected FROM events WHERE event_id IN `, nil, eventIDs, "",
		func(rows *sql.Rows) error {
			var e EventState
			var before, after sql.NullInt64
			if err := rows.Scan(&e.EventID, &before, &after, &e.Rejected); err != nil {
				return err
			}
			e.Before, e.After = before.Int64, after.Int64
			out[e.EventID] = e
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("read the state of %d events: %w", len(eventIDs), withContextErr(ctx, err))
	}
	return out, nil
}

func (s *sqlStore) EventsWithoutState(ctx context.Context, roomID string, after *Position, limit int) ([]Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("events without state of %s: limit must be positive", roomID)
	}
	q, args := topoPage(eventSelect+` WHERE room_id = ? AND state_before IS NULL`, []any{roomID}, after, limit)
	events, err := s.queryEvents(ctx, q, args)
	if err != nil {
		return nil, fmt.Errorf("read events without state of %s: %w", roomID, err)
	}
	return events, nil
}

// BoundaryState is the state after an event the store does not hold, as a peer said it.
type BoundaryState struct {
	EventID   string
	Group     int64
	Source    string
	FetchedAt time.Time
}

func (s *sqlStore) SaveBoundaryState(ctx context.Context, roomID, eventID string, group StateGroup, source string) error {
	err := s.inRoomTx(ctx, roomID, false, func(tx *sql.Tx, _ *roomRow) error {
		if err := s.insertStateGroups(ctx, tx, roomID, []StateGroup{group}); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO boundary_states (room_id, event_id, group_no, source, fetched_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, event_id) DO UPDATE SET
				group_no = excluded.group_no, source = excluded.source, fetched_at = excluded.fetched_at`),
			roomID, eventID, group.No, source, time.Now().UnixMilli())
		return err
	})
	if err != nil {
		return fmt.Errorf("save the state after %s in %s: %w", eventID, roomID, err)
	}
	return nil
}

func (s *sqlStore) BoundaryStates(ctx context.Context, roomID string) (map[string]BoundaryState, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT event_id, group_no, source, fetched_at FROM boundary_states WHERE room_id = ?`), roomID)
	if err != nil {
		return nil, fmt.Errorf("read boundary states of %s: %w", roomID, withContextErr(ctx, err))
	}
	defer rows.Close()
	out := map[string]BoundaryState{}
	for rows.Next() {
		var b BoundaryState
		var at int64
		if err := rows.Scan(&b.EventID, &b.Group, &b.Source, &at); err != nil {
			return nil, fmt.Errorf("read boundary states of %s: %w", roomID, err)
		}
		b.FetchedAt = time.UnixMilli(at)
		out[b.EventID] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read boundary states of %s: %w", roomID, err)
	}
	return out, nil
}

// TableBytes is the space a table of st takes on disk, its indexes included: what the state
// tables cost beside the events table.
func TableBytes(ctx context.Context, st Store, table string) (int64, error) {
	s, ok := st.(*sqlStore)
	if !ok {
		return 0, fmt.Errorf("table size: not a SQL store")
	}
	q := `SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = ?)`
	if s.d == postgresDialect {
		q = `SELECT pg_total_relation_size(?::regclass)`
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, s.d.rebind(q), table).Scan(&n); err != nil {
		return 0, fmt.Errorf("size of table %s: %w", table, err)
	}
	return n, nil
}

package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// streamPageSize is how many events StreamEvents reads at a time: large enough that the
// per-page queries do not matter, small enough that memory does not (≈ a few hundred KiB).
const streamPageSize = 256

const eventSelect = `SELECT event_id, room_id, depth, origin_server_ts, type, state_key, sender, origin,
	prev_events, raw, redacted, rejected FROM events`

func scanEvent(row interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var stateKey sql.NullString
	var prevJSON string
	if err := row.Scan(&e.ID, &e.RoomID, &e.Depth, &e.OriginServerTS, &e.Type, &stateKey, &e.Sender,
		&e.Origin, &prevJSON, &e.Raw, &e.Redacted, &e.Rejected); err != nil {
		return Event{}, err
	}
	if stateKey.Valid {
		e.StateKey = &stateKey.String
	}
	if err := json.Unmarshal([]byte(prevJSON), &e.PrevEvents); err != nil {
		return Event{}, fmt.Errorf("decode prev events of %s: %w", e.ID, err)
	}
	if len(e.PrevEvents) == 0 {
		e.PrevEvents = nil
	}
	return e, nil
}

func (s *sqlStore) HasEvent(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, s.d.rebind(`SELECT 1 FROM events WHERE event_id = ?`), eventID).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up event %s: %w", eventID, err)
	}
	return true, nil
}

func (s *sqlStore) HasEvents(ctx context.Context, eventIDs []string) (map[string]bool, error) {
	held := make(map[string]bool)
	err := s.queryIn(ctx, s.db, `SELECT event_id FROM events WHERE event_id IN `, nil, eventIDs, "",
		func(rows *sql.Rows) error {
			var id string
			err := rows.Scan(&id)
			held[id] = true
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("look up %d events: %w", len(eventIDs), err)
	}
	return held, nil
}

func (s *sqlStore) Event(ctx context.Context, eventID string) (Event, error) {
	e, err := scanEvent(s.db.QueryRowContext(ctx, s.d.rebind(eventSelect+` WHERE event_id = ?`), eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, fmt.Errorf("event %s: %w", eventID, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("read event %s: %w", eventID, err)
	}
	return e, nil
}

func (s *sqlStore) Events(ctx context.Context, eventIDs []string) (map[string]Event, error) {
	out := make(map[string]Event, len(eventIDs))
	err := s.queryIn(ctx, s.db, eventSelect+` WHERE event_id IN `, nil, eventIDs, "", func(rows *sql.Rows) error {
		e, err := scanEvent(rows)
		out[e.ID] = e
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %d events: %w", len(eventIDs), withContextErr(ctx, err))
	}
	return out, nil
}

func (s *sqlStore) EventsPage(ctx context.Context, roomID string, after *Position, limit int) ([]Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("read events of %s: limit %d is not positive", roomID, limit)
	}
	q, args := topoPage(eventSelect+` WHERE room_id = ?`, []any{roomID}, after, limit)
	events, err := s.queryEvents(ctx, q, args)
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", roomID, err)
	}
	return events, nil
}

func (s *sqlStore) EventsInDepthRange(ctx context.Context, roomID string, minDepth, maxDepth int64, limit int) ([]Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("read events of %s by depth: limit %d is not positive", roomID, limit)
	}
	// The index events_room_depth read backwards from maxDepth: both planners stop at the
	// limit.
	events, err := s.queryEvents(ctx, eventSelect+` WHERE room_id = ? AND depth >= ? AND depth <= ?
		ORDER BY depth DESC, event_id DESC LIMIT ?`, []any{roomID, minDepth, maxDepth, limit})
	if err != nil {
		return nil, fmt.Errorf("read events of %s at depths %d to %d: %w", roomID, minDepth, maxDepth, err)
	}
	return events, nil
}

// topoPage completes q (a SELECT of events with its WHERE) and its args into one page of a
// room's topological order: strictly after the position after (nil: from the start), at most
// limit rows.
func topoPage(q string, args []any, after *Position, limit int) (string, []any) {
	if after != nil {
		// (depth, event_id) > (?, ?), spelled so that both planners see a plain range on
		// the index's depth column; the OR only filters the rows of that one depth.
		q += ` AND depth >= ? AND (depth > ? OR event_id > ?)`
		args = append(args, after.Depth, after.Depth, after.EventID)
	}
	return q + ` ORDER BY depth, event_id LIMIT ?`, append(args, limit)
}

// queryEvents runs a SELECT of eventSelect's columns.
func (s *sqlStore) queryEvents(ctx context.Context, q string, args []any) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, withContextErr(ctx, err)
	}
	defer rows.Close()
	var events []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

func (s *sqlStore) StreamEvents(ctx context.Context, roomID string, fn func(Event) error) error {
	var after *Position
	for {
		page, err := s.EventsPage(ctx, roomID, after, streamPageSize)
		if err != nil {
			return fmt.Errorf("stream events: %w", err)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < streamPageSize {
			return nil
		}
		last := page[len(page)-1].Position()
		after = &last
	}
}

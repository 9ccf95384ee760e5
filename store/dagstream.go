package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// dagPageSize is how many events a StreamDAG page reads: without the JSON an event is a
// hundred bytes or so, so a page is larger than StreamEvents'.
const dagPageSize = 2000

// dagSelect reads an event's place in the DAG. The child count is one range on event_edges'
// key per event (a held event's children are all there, none in gap_edges).
const dagSelect = `SELECT e.event_id, e.depth, e.origin_server_ts, e.type, e.state_key, e.prev_events,
	e.redacted, e.rejected,
	(SELECT COUNT(*) FROM event_edges g WHERE g.room_id = e.room_id AND g.prev_nid = e.event_nid)
	FROM events e WHERE e.room_id = ?`

func (s *sqlStore) StreamDAG(ctx context.Context, roomID string, minDepth, maxDepth int64, fn func(DAGEvent) error) error {
	var after *Position
	for {
		args := []any{roomID}
		q := dagSelect
		if after == nil {
			q += ` AND e.depth >= ?`
			args = append(args, minDepth)
		} else {
			// (depth, event_id) > after, spelled as topoPage does for the planners.
			q += ` AND e.depth >= ? AND (e.depth > ? OR e.event_id > ?)`
			args = append(args, after.Depth, after.Depth, after.EventID)
		}
		if maxDepth > 0 {
			q += ` AND e.depth <= ?`
			args = append(args, maxDepth)
		}
		q += ` ORDER BY e.depth, e.event_id LIMIT ?`
		args = append(args, dagPageSize)
		page, err := s.dagPage(ctx, q, args)
		if err != nil {
			return fmt.Errorf("stream the DAG of %s: %w", roomID, err)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < dagPageSize {
			return nil
		}
		last := page[len(page)-1]
		after = &Position{Depth: last.Depth, EventID: last.ID}
	}
}

func (s *sqlStore) dagPage(ctx context.Context, q string, args []any) ([]DAGEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, withContextErr(ctx, err)
	}
	defer rows.Close()
	page := make([]DAGEvent, 0, dagPageSize)
	for rows.Next() {
		var e DAGEvent
		var stateKey sql.NullString
		var prevJSON string
		if err := rows.Scan(&e.ID, &e.Depth, &e.OriginServerTS, &e.Type, &stateKey, &prevJSON,
			&e.Redacted, &e.Rejected, &e.Children); err != nil {
			return nil, err
		}
		if stateKey.Valid {
			e.StateKey = &stateKey.String
		}
		if err := json.Unmarshal([]byte(prevJSON), &e.PrevEvents); err != nil {
			return nil, fmt.Errorf("decode prev events of %s: %w", e.ID, err)
		}
		page = append(page, e)
	}
	return page, rows.Err()
}

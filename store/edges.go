package store

import (
	"context"
	"database/sql"
	"fmt"
)

// An edge says that an event lists another as a prev. Where the prev is held in the room the
// edge is in event_edges, keyed by the prev's event_nid, so that new edges land at the end of
// the index; where it is not, in gap_edges, keyed by the prev's ID (see integerEventKeys).

// edge is a child and one of its prevs, both by ID.
type edge struct{ event, prev string }

// writeEdges writes the edges of the fresh events, whose keys and those of their held prevs
// are in nids, and moves to event_edges the edges of held events that named one of mayFill
// (the fresh events, or none in a room without gaps) while it was missing. It returns the
// fresh events so named: a held event points at them.
func (s *sqlStore) writeEdges(ctx context.Context, tx querier, roomID string, fresh []Event, mayFill []string,
	nids map[string]int64) (map[string]bool, error) {
	var keyed, gaps []edge
	named := make(map[string]bool)
	err := s.queryIn(ctx, tx, `DELETE FROM gap_edges WHERE room_id = ? AND prev_event_id IN `, []any{roomID},
		mayFill, ` RETURNING event_id, prev_event_id`, func(rows *sql.Rows) error {
			var e edge
			err := rows.Scan(&e.event, &e.prev)
			keyed = append(keyed, e)
			named[e.prev] = true
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("take the edges of filled gaps: %w", err)
	}
	for _, e := range fresh {
		for _, p := range e.PrevEvents {
			if _, held := nids[p]; held {
				keyed = append(keyed, edge{e.ID, p})
			} else {
				gaps = append(gaps, edge{e.ID, p})
			}
		}
	}
	if err := s.insertRows(ctx, tx, "event_edges", []string{"room_id", "prev_nid", "event_id"}, len(keyed),
		func(i int, args []any) []any { return append(args, roomID, nids[keyed[i].prev], keyed[i].event) }); err != nil {
		return nil, err
	}
	if err := s.insertRows(ctx, tx, "gap_edges", []string{"room_id", "prev_event_id", "event_id"}, len(gaps),
		func(i int, args []any) []any { return append(args, roomID, gaps[i].prev, gaps[i].event) }); err != nil {
		return nil, err
	}
	return named, nil
}

// edgeFaults counts edges in the wrong place, which only damage or a bug can leave.
type edgeFaults struct {
	orphans   int64 // edges of events the room does not hold
	heldGaps  int64 // gap edges whose prev the room holds: they belong in event_edges
	lostPrevs int64 // event_edges rows whose prev key is no held event of the room
}

func (f edgeFaults) any() bool { return f.orphans+f.heldGaps+f.lostPrevs > 0 }

// misplacedEdges counts the room's edgeFaults.
func (s *sqlStore) misplacedEdges(ctx context.Context, tx *sql.Tx, roomID string) (edgeFaults, error) {
	var f edgeFaults
	for _, q := range []struct {
		what, sql string
		args      []any
		into      *int64
	}{
		{"count edges without events", `SELECT
			(SELECT COUNT(*) FROM event_edges g WHERE g.room_id = ?
				AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = g.event_id AND e.room_id = g.room_id)) +
			(SELECT COUNT(*) FROM gap_edges g WHERE g.room_id = ?
				AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = g.event_id AND e.room_id = g.room_id))`,
			[]any{roomID, roomID}, &f.orphans},
		{"count gap edges to held events", `SELECT COUNT(*) FROM gap_edges g WHERE g.room_id = ?
			AND EXISTS (SELECT 1 FROM events p WHERE p.event_id = g.prev_event_id AND p.room_id = g.room_id)`,
			[]any{roomID}, &f.heldGaps},
		{"count edges to keys not held", `SELECT COUNT(*) FROM event_edges g WHERE g.room_id = ?
			AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_nid = g.prev_nid AND p.room_id = g.room_id)`,
			[]any{roomID}, &f.lostPrevs},
	} {
		if err := tx.QueryRowContext(ctx, s.d.rebind(q.sql), q.args...).Scan(q.into); err != nil {
			return f, fmt.Errorf("%s: %w", q.what, err)
		}
	}
	return f, nil
}

package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
)

// SequencedEvent is an event with its arrival number: events of a room are numbered 1, 2, 3…
// in the order the store took them, so "what arrived since N" is a range whatever the DAG
// looks like. An event arrives again, with a new number, when what an export says of it
// changes: its full copy replaces a redacted one, or its state computation finds it rejected.
// Numbers are handed out and committed in order under the room's row lock, so once Room says
// LastSeq is N, every event numbered up to N is readable and none will be numbered N or less
// again.
type SequencedEvent struct {
	Event
	Seq int64
}

// EventQuery selects one page of a room's events (see Store.QueryEvents). The zero value,
// with a Limit, is the first page of the whole room in topological order.
type EventQuery struct {
	// ByArrival orders the page by arrival number; otherwise by (depth, event ID).
	ByArrival bool
	// After is where a topological page starts (strictly after; nil: from the start).
	// Ignored with ByArrival, which pages on AfterSeq.
	After *Position
	// AfterSeq and UpToSeq bound the arrival numbers: AfterSeq < Seq <= UpToSeq (UpToSeq 0:
	// no upper bound). An export reads the room's LastSeq first and passes it as UpToSeq,
	// so that it is exactly what arrived up to then.
	AfterSeq, UpToSeq int64
	// SinceTS and UntilTS bound origin_server_ts in Unix milliseconds, half open: SinceTS <=
	// ts < UntilTS. 0 leaves that side open.
	SinceTS, UntilTS int64
	// Limit is the largest page; it must be positive.
	Limit int
}

// arrivalNumbers hands out the next arrival numbers of the room to fresh events, the caller
// writing them in the same transaction. Within a batch they follow the topological order,
// so that a batch read back in arrival order has parents before children.
func arrivalNumbers(fresh []Event, room *roomRow) []int64 {
	order := make([]int, len(fresh))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(fresh[a].Depth, fresh[b].Depth), cmp.Compare(fresh[a].ID, fresh[b].ID))
	})
	seqs := make([]int64, len(fresh))
	for _, i := range order {
		room.eventSeq++
		seqs[i] = room.eventSeq
	}
	return seqs
}

const sequencedSelect = `SELECT event_id, room_id, depth, origin_server_ts, type, state_key, sender, origin,
	prev_events, raw, redacted, rejected, seq FROM events`

// seqScanner scans an event row followed by its seq column, so that scanEvent serves both.
type seqScanner struct {
	row interface{ Scan(...any) error }
	seq *int64
}

func (s seqScanner) Scan(dest ...any) error { return s.row.Scan(append(dest, s.seq)...) }

func (s *sqlStore) QueryEvents(ctx context.Context, roomID string, q EventQuery) ([]SequencedEvent, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("query events of %s: limit %d is not positive", roomID, q.Limit)
	}
	query, args := eventQuerySQL(roomID, q)
	rows, err := s.db.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("query events of %s: %w", roomID, withContextErr(ctx, err))
	}
	defer rows.Close()
	var page []SequencedEvent
	for rows.Next() {
		var e SequencedEvent
		if e.Event, err = scanEvent(seqScanner{rows, &e.Seq}); err != nil {
			return nil, fmt.Errorf("query events of %s: %w", roomID, err)
		}
		page = append(page, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query events of %s: %w", roomID, withContextErr(ctx, err))
	}
	return page, nil
}

// eventQuerySQL spells q for both dialects.
func eventQuerySQL(roomID string, q EventQuery) (string, []any) {
	query := sequencedSelect + ` WHERE room_id = ?`
	args := []any{roomID}
	// In topological order the arrival bounds are written +seq, which keeps both planners
	// off the (room_id, seq) index: walking the depth index needs no sort, and a LIMIT
	// stops it early, whereas a seq range would sort the whole room for every page.
	seq := "+seq"
	if q.ByArrival {
		seq = "seq"
	}
	if q.ByArrival || q.AfterSeq > 0 {
		query += ` AND ` + seq + ` > ?`
		args = append(args, q.AfterSeq)
	}
	if q.UpToSeq > 0 {
		query += ` AND ` + seq + ` <= ?`
		args = append(args, q.UpToSeq)
	}
	if q.SinceTS != 0 {
		query += ` AND origin_server_ts >= ?`
		args = append(args, q.SinceTS)
	}
	if q.UntilTS != 0 {
		query += ` AND origin_server_ts < ?`
		args = append(args, q.UntilTS)
	}
	if q.ByArrival {
		return query + ` ORDER BY seq LIMIT ?`, append(args, q.Limit)
	}
	return topoPage(query, args, q.After, q.Limit)
}

// arrivalProblems checks the room's arrival numbers for CheckConsistency: every event has
// one, and none is above the room's last number, which would be handed out again (the unique
// index keeps them distinct). The last number may be above the largest held: a repair that
// deletes the latest arrival keeps the number spent, so that an export cursor past it never
// skips what arrives next.
func (s *sqlStore) arrivalProblems(ctx context.Context, tx *sql.Tx, roomID string, kept int64) ([]string, error) {
	var unnumbered, largest int64
	if err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT COALESCE(SUM(CASE WHEN seq <= 0 THEN 1 ELSE 0 END), 0),
		COALESCE(MAX(seq), 0) FROM events WHERE room_id = ?`), roomID).Scan(&unnumbered, &largest); err != nil {
		return nil, fmt.Errorf("check arrival numbers: %w", err)
	}
	var problems []string
	if unnumbered != 0 {
		problems = append(problems, fmt.Sprintf("%d events have no arrival number", unnumbered))
	}
	if largest > kept {
		problems = append(problems, fmt.Sprintf("the last arrival number is %d, the rows say %d", kept, largest))
	}
	return problems, nil
}

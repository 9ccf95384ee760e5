package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// stateFaults is what is wrong with a room's state rows: references to state groups the room
// lacks, and rejected events inside a state. Each makes the state of some events wrong or
// unreadable; a repair invalidates the state of those events and their descendants, which
// the resolver then computes again.
type stateFaults struct {
	// missingGroupEvents are held events whose state before or after is a group the room
	// lacks.
	missingGroupEvents []string
	// brokenGroups are groups that are deltas from a group the room lacks.
	brokenGroups []int64
	// strayEntries counts state entries of groups the room lacks.
	strayEntries int64
	// brokenBoundaries are boundary states whose group the room lacks (by event ID).
	brokenBoundaries []string
	// rejectedInState are rejected events that are an entry of some state group: a rejected
	// event never enters a state.
	rejectedInState []string
	// rejectedWithoutState counts rejected events without a state: the rejection comes from
	// the state computation, which records both together.
	rejectedWithoutState int64
	// groupSeq and maxGroup are the room's last allocated group number and the largest held:
	// a larger one held would be allocated again.
	groupSeq, maxGroup int64
}

// problems renders the faults for a report.
func (f stateFaults) problems() []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if n := len(f.missingGroupEvents); n > 0 {
		add("%d events have a state group the room lacks: %s", n, sample(f.missingGroupEvents))
	}
	if n := len(f.brokenGroups); n > 0 {
		groups := make([]string, n)
		for i, g := range f.brokenGroups {
			groups[i] = strconv.FormatInt(g, 10)
		}
		add("%d state groups are deltas from a group the room lacks: %s", n, sample(groups))
	}
	if f.strayEntries > 0 {
		add("%d state entries belong to no state group", f.strayEntries)
	}
	if n := len(f.brokenBoundaries); n > 0 {
		add("%d boundary states name a state group the room lacks: %s", n, sample(f.brokenBoundaries))
	}
	if n := len(f.rejectedInState); n > 0 {
		add("%d rejected events are part of a state: %s", n, sample(f.rejectedInState))
	}
	if f.rejectedWithoutState > 0 {
		add("%d rejected events have no state", f.rejectedWithoutState)
	}
	if f.maxGroup > f.groupSeq {
		add("state groups are numbered up to %d, past the last allocated (%d)", f.maxGroup, f.groupSeq)
	}
	return out
}

// stateFaults reads the room's state faults in tx.
func (s *sqlStore) stateFaults(ctx context.Context, tx *sql.Tx, roomID string) (stateFaults, error) {
	var f stateFaults
	lists := []struct {
		what, sql string
		into      *[]string
	}{
		{"events with a missing state group", `SELECT e.event_id FROM events e WHERE e.room_id = ? AND (
			(e.state_before IS NOT NULL AND NOT EXISTS
				(SELECT 1 FROM state_groups g WHERE g.room_id = e.room_id AND g.group_no = e.state_before))
			OR (e.state_after IS NOT NULL AND NOT EXISTS
				(SELECT 1 FROM state_groups g WHERE g.room_id = e.room_id AND g.group_no = e.state_after)))
			ORDER BY e.event_id`, &f.missingGroupEvents},
		{"boundary states with a missing group", `SELECT b.event_id FROM boundary_states b WHERE b.room_id = ?
			AND NOT EXISTS (SELECT 1 FROM state_groups g WHERE g.room_id = b.room_id AND g.group_no = b.group_no)
			ORDER BY b.event_id`, &f.brokenBoundaries},
		{"rejected events in a state", `SELECT DISTINCT s.event_id FROM state_entries s
			JOIN events e ON e.event_id = s.event_id AND e.room_id = s.room_id
			WHERE s.room_id = ? AND e.rejected <> '' ORDER BY s.event_id`, &f.rejectedInState},
	}
	for _, q := range lists {
		ids, err := s.columnOf(ctx, tx, q.sql, roomID)
		if err != nil {
			return f, fmt.Errorf("look for %s: %w", q.what, err)
		}
		*q.into = ids
	}
	rows, err := tx.QueryContext(ctx, s.d.rebind(`SELECT g.group_no FROM state_groups g WHERE g.room_id = ?
		AND g.prev_group IS NOT NULL AND NOT EXISTS
			(SELECT 1 FROM state_groups p WHERE p.room_id = g.room_id AND p.group_no = g.prev_group)
		ORDER BY g.group_no`), roomID)
	if err != nil {
		return f, fmt.Errorf("look for broken state groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g int64
		if err := rows.Scan(&g); err != nil {
			return f, fmt.Errorf("look for broken state groups: %w", err)
		}
		f.brokenGroups = append(f.brokenGroups, g)
	}
	if err := rows.Err(); err != nil {
		return f, fmt.Errorf("look for broken state groups: %w", err)
	}
	for _, q := range []struct {
		what, sql string
		into      *int64
	}{
		{"stray state entries", `SELECT COUNT(*) FROM state_entries s WHERE s.room_id = ? AND NOT EXISTS
			(SELECT 1 FROM state_groups g WHERE g.room_id = s.room_id AND g.group_no = s.group_no)`, &f.strayEntries},
		{"rejected events without state", `SELECT COUNT(*) FROM events WHERE room_id = ? AND rejected <> ''
			AND state_before IS NULL`, &f.rejectedWithoutState},
		{"the last state group", `SELECT COALESCE(MAX(group_no), 0) FROM state_groups WHERE room_id = ?`, &f.maxGroup},
		{"the last allocated state group", `SELECT state_group_seq FROM rooms WHERE room_id = ?`, &f.groupSeq},
	} {
		if err := tx.QueryRowContext(ctx, s.d.rebind(q.sql), roomID).Scan(q.into); err != nil {
			return f, fmt.Errorf("read %s: %w", q.what, err)
		}
	}
	return f, nil
}

// columnOf runs a query of one text column with the room ID as its argument.
func (s *sqlStore) columnOf(ctx context.Context, q querier, query, roomID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, s.d.rebind(query), roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// CheckRoomCounters compares the room's counters with counts of its rows, in one snapshot:
// the cheap check that inspect, sync and the manager's start-up make before they trust the
// counters. It reads indexes (the rejected count excepted: a read of the room's rows) and
// walks no edge; CheckRoom checks everything. It returns the differences (none when the
// counters agree with the rows), or ErrNotFound for a room without a row.
func CheckRoomCounters(ctx context.Context, st Store, roomID string) ([]string, error) {
	s, err := sqlStoreOf(st)
	if err != nil {
		return nil, err
	}
	var problems []string
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		problems, err = s.counterProblems(ctx, tx, roomID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("check the counters of %s: %w", roomID, err)
	}
	return problems, nil
}

// CheckRoom checks everything the room's rows say of each other: what CheckConsistency
// checks (extremities with their child depths, counters, edges against prev events, arrival
// numbers) and the state (see stateFaults). It reads the whole room. It returns the problems,
// none when there is none, or ErrNotFound for a room without a row.
func CheckRoom(ctx context.Context, st Store, roomID string) ([]string, error) {
	s, err := sqlStoreOf(st)
	if err != nil {
		return nil, err
	}
	var problems []string
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		if problems, err = s.consistencyProblems(ctx, tx, roomID); err != nil {
			return err
		}
		f, err := s.stateFaults(ctx, tx, roomID)
		problems = append(problems, f.problems()...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("check room %s: %w", roomID, err)
	}
	return problems, nil
}

// readTx runs fn in a read-only transaction: one snapshot of the store.
func (s *sqlStore) readTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return withContextErr(ctx, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	return withContextErr(ctx, fn(tx))
}

// counterProblems is CheckRoomCounters in a transaction.
func (s *sqlStore) counterProblems(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	var room roomRow
	err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT `+roomColumns+` FROM rooms WHERE room_id = ?`),
		roomID).Scan(room.scanTargets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("room %s: %w", roomID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read the room: %w", err)
	}
	var truth roomRow
	var lastSeq, staleForward, heldBackward int64
	// Each count is one indexed read: the depth index for the events, the (room_id, seq)
	// index for the last number, the redacted index, the extremities' keys.
	for _, q := range []struct {
		what, sql string
		into      []any
	}{
		{"count events", `SELECT COUNT(*), COALESCE(MIN(depth), 0), COALESCE(MAX(depth), 0) FROM events WHERE room_id = ?`,
			[]any{&truth.events, &truth.minDepth, &truth.maxDepth}},
		{"read the last arrival number", `SELECT COALESCE(MAX(seq), 0) FROM events WHERE room_id = ?`, []any{&lastSeq}},
		{"count redacted events", `SELECT COUNT(*) FROM events WHERE room_id = ? AND redacted`, []any{&truth.redacted}},
		{"count rejected events", `SELECT COUNT(*) FROM events WHERE room_id = ? AND rejected <> ''`, []any{&truth.rejected}},
		{"count forward extremities", `SELECT COUNT(*), COALESCE(SUM(CASE WHEN e.event_id IS NULL THEN 1 ELSE 0 END), 0)
			FROM forward_extremities f LEFT JOIN events e ON e.event_id = f.event_id AND e.room_id = f.room_id
			WHERE f.room_id = ?`, []any{&truth.forward, &staleForward}},
		{"count backward extremities", `SELECT COUNT(*), COALESCE(SUM(CASE WHEN b.unfillable THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN e.event_id IS NULL THEN 0 ELSE 1 END), 0)
			FROM backward_extremities b LEFT JOIN events e ON e.event_id = b.event_id AND e.room_id = b.room_id
			WHERE b.room_id = ?`, []any{&truth.backward, &truth.unfillable, &heldBackward}},
	} {
		if err := tx.QueryRowContext(ctx, s.d.rebind(q.sql), roomID).Scan(q.into...); err != nil {
			return nil, fmt.Errorf("%s: %w", q.what, err)
		}
	}
	problems := compareCounters(room, truth)
	if staleForward > 0 {
		problems = append(problems, fmt.Sprintf("%d forward extremities are events the store does not hold", staleForward))
	}
	if heldBackward > 0 {
		problems = append(problems, fmt.Sprintf("%d backward extremities are events the store holds", heldBackward))
	}
	if lastSeq > room.eventSeq {
		problems = append(problems, fmt.Sprintf("the last arrival number is %d, the rows say %d", room.eventSeq, lastSeq))
	}
	return problems, nil
}

// counterNames name the counters of a room's row, in the words of the reports.
var counterNames = []struct {
	name string
	of   func(*roomRow) *int64
}{
	{"event count", func(r *roomRow) *int64 { return &r.events }},
	{"redacted count", func(r *roomRow) *int64 { return &r.redacted }},
	{"rejected count", func(r *roomRow) *int64 { return &r.rejected }},
	{"min depth", func(r *roomRow) *int64 { return &r.minDepth }},
	{"max depth", func(r *roomRow) *int64 { return &r.maxDepth }},
	{"forward extremity count", func(r *roomRow) *int64 { return &r.forward }},
	{"backward extremity count", func(r *roomRow) *int64 { return &r.backward }},
	{"unfillable extremity count", func(r *roomRow) *int64 { return &r.unfillable }},
}

// compareCounters says which of the kept counters differ from the truth.
func compareCounters(kept, truth roomRow) []string {
	var problems []string
	for _, c := range counterNames {
		if k, t := *c.of(&kept), *c.of(&truth); k != t {
			problems = append(problems, fmt.Sprintf("%s is %d, the rows say %d", c.name, k, t))
		}
	}
	return problems
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

func (s *sqlStore) ForwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(
		`SELECT event_id FROM forward_extremities WHERE room_id = ? ORDER BY event_id`), roomID)
	if err != nil {
		return nil, fmt.Errorf("read forward extremities of %s: %w", roomID, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read forward extremities of %s: %w", roomID, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read forward extremities of %s: %w", roomID, err)
	}
	return ids, nil
}

func (s *sqlStore) BackwardExtremities(ctx context.Context, roomID string, filter BackwardFilter) ([]BackwardExtremity, error) {
	q := `SELECT event_id, first_seen, attempts, last_error, last_attempt_at, next_attempt_at,
		unfillable, unfillable_reason, min_child_depth, max_child_depth, max_child_ts
		FROM backward_extremities WHERE room_id = ?`
	args := []any{roomID}
	switch {
	case !filter.DueBy.IsZero() && !filter.StaleBefore.IsZero():
		q += ` AND (next_attempt_at <= ? OR last_attempt_at < ?)`
		args = append(args, filter.DueBy.UnixMilli(), filter.StaleBefore.UnixMilli())
	case !filter.DueBy.IsZero():
		q += ` AND next_attempt_at <= ?`
		args = append(args, filter.DueBy.UnixMilli())
	}
	if filter.SkipUnfillable {
		q += ` AND unfillable = ?`
		args = append(args, false)
	}
	if filter.ChildDepthAtLeast != 0 {
		q += ` AND max_child_depth >= ?`
		args = append(args, filter.ChildDepthAtLeast)
	}
	if filter.ChildTSAtLeast != 0 {
		q += ` AND max_child_ts >= ?`
		args = append(args, filter.ChildTSAtLeast)
	}
	// The index on (room_id, max_child_depth DESC, event_id) yields this order without a
	// sort, so with a limit the scan stops as soon as enough rows pass the filter.
	q += ` ORDER BY max_child_depth DESC, event_id`
	if filter.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, filter.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read backward extremities of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []BackwardExtremity
	for rows.Next() {
		var b BackwardExtremity
		var firstSeen, lastAttempt, nextAttempt int64
		if err := rows.Scan(&b.EventID, &firstSeen, &b.Attempts, &b.LastError, &lastAttempt, &nextAttempt,
			&b.Unfillable, &b.UnfillableReason, &b.MinChildDepth, &b.MaxChildDepth, &b.MaxChildTS); err != nil {
			return nil, fmt.Errorf("read backward extremities of %s: %w", roomID, err)
		}
		b.FirstSeen, b.LastAttemptAt, b.NextAttemptAt = fromMillis(firstSeen), fromMillis(lastAttempt), fromMillis(nextAttempt)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read backward extremities of %s: %w", roomID, err)
	}
	return out, nil
}

// fromMillis maps the schema's "0 means never" back to the zero time.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// toMillis maps the zero time to 0, which sorts as "due at once".
func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func (s *sqlStore) RecordAttemptFailure(ctx context.Context, roomID, eventID, errText string, nextAttemptAt time.Time, peers ...PeerAttempt) error {
	if err := s.recordAttempt(ctx, roomID, eventID, errText, nextAttemptAt, false, peers); err != nil {
		return fmt.Errorf("record failed attempt at %s in %s: %w", eventID, roomID, err)
	}
	return nil
}

func (s *sqlStore) MarkUnfillable(ctx context.Context, roomID, eventID, reason string, nextAttemptAt time.Time, peers ...PeerAttempt) error {
	if err := s.recordAttempt(ctx, roomID, eventID, reason, nextAttemptAt, true, peers); err != nil {
		return fmt.Errorf("mark %s in %s unfillable: %w", eventID, roomID, err)
	}
	return nil
}

// recordAttempt counts a failed attempt at a backward extremity and, with unfillable, flags
// it as one no peer could fill. The room's row is held (inRoomTx) because the unfillable
// counter lives there; an attempt failure keeps an earlier unfillable flag, which only goes
// when the event arrives. The peers' answers are written in the same transaction, so they
// exist only while the extremity does.
func (s *sqlStore) recordAttempt(ctx context.Context, roomID, eventID, errText string, next time.Time, unfillable bool, peers []PeerAttempt) error {
	return s.inRoomTx(ctx, roomID, false, func(tx *sql.Tx, room *roomRow) error {
		var was bool
		err := tx.QueryRowContext(ctx, s.d.rebind(
			`SELECT unfillable FROM backward_extremities WHERE room_id = ? AND event_id = ?`),
			roomID, eventID).Scan(&was)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("backward extremity %s: %w", eventID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		q := `UPDATE backward_extremities SET attempts = attempts + 1, last_error = ?,
			last_attempt_at = ?, next_attempt_at = ?`
		args := []any{errText, time.Now().UnixMilli(), toMillis(next)}
		if unfillable {
			q += `, unfillable = ?, unfillable_reason = ?`
			args = append(args, true, errText)
			if !was {
				room.unfillable++
			}
		}
		q += ` WHERE room_id = ? AND event_id = ?`
		args = append(args, roomID, eventID)
		if _, err := tx.ExecContext(ctx, s.d.rebind(q), args...); err != nil {
			return err
		}
		return s.savePeerAttempts(ctx, tx, roomID, eventID, peers)
	})
}

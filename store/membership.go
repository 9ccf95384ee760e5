package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Membership states of our own users, as the resolver records them.
const (
	MembershipJoined     = "Joined"
	MembershipJoinFailed = "JoinFailed"
	MembershipLeft       = "Left"
	// MembershipInvited: a member invited us and we countersigned the invite; the join is
	// next.
	MembershipInvited = "Invited"
)

// Membership is what one of our users did in a room.
type Membership struct {
	RoomID, UserID string
	// State is MembershipJoined, MembershipJoinFailed, MembershipLeft or MembershipInvited.
	State string
	// Reason says why a join failed, or who invited us.
	Reason string
	// EventID is our join, leave or invite event, when there is one.
	EventID   string
	UpdatedAt time.Time
}

func (s *sqlStore) SetMembership(ctx context.Context, m Membership) error {
	if m.RoomID == "" || m.UserID == "" || m.State == "" {
		return fmt.Errorf("set membership: incomplete %+v", m)
	}
	// ON CONFLICT … DO UPDATE is spelled the same in SQLite (3.24+) and PostgreSQL.
	_, err := s.wdb.ExecContext(ctx, s.d.rebind(`INSERT INTO memberships (room_id, user_id, membership, reason, event_id, updated_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (room_id, user_id) DO UPDATE SET
			membership = excluded.membership, reason = excluded.reason, event_id = excluded.event_id,
			updated_at = excluded.updated_at`),
		m.RoomID, m.UserID, m.State, m.Reason, m.EventID, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("set membership of %s in %s: %w", m.UserID, m.RoomID, withContextErr(ctx, err))
	}
	return nil
}

func (s *sqlStore) Membership(ctx context.Context, roomID, userID string) (Membership, error) {
	m := Membership{RoomID: roomID, UserID: userID}
	var updated int64
	err := s.db.QueryRowContext(ctx, s.d.rebind(`SELECT membership, reason, event_id, updated_at FROM memberships
		WHERE room_id = ? AND user_id = ?`), roomID, userID).Scan(&m.State, &m.Reason, &m.EventID, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("membership of %s in %s: %w", userID, roomID, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("read membership of %s in %s: %w", userID, roomID, withContextErr(ctx, err))
	}
	m.UpdatedAt = time.UnixMilli(updated)
	return m, nil
}

func (s *sqlStore) RedactedEvents(ctx context.Context, roomID string, after *Position, limit int) ([]Position, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("redacted events of %s: limit must be positive", roomID)
	}
	// "AND redacted", not "= ?": the planners use the partial index events_room_redacted
	// only for a condition they see implies its own.
	q, args := topoPage(`SELECT depth, event_id FROM events WHERE room_id = ? AND redacted`, []any{roomID}, after, limit)
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read redacted events of %s: %w", roomID, withContextErr(ctx, err))
	}
	defer rows.Close()
	var out []Position
	for rows.Next() {
		var p Position
		if err := rows.Scan(&p.Depth, &p.EventID); err != nil {
			return nil, fmt.Errorf("read redacted events of %s: %w", roomID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read redacted events of %s: %w", roomID, err)
	}
	return out, nil
}

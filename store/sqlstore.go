package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// sqlStore implements Store over database/sql for both dialects.
type sqlStore struct {
	d   *dialect
	db  *sql.DB // reads
	wdb *sql.DB // write transactions; the same pool as db on PostgreSQL
	// stmts keeps the write path's prepared statements on SQLite's writer; nil elsewhere.
	stmts *stmtCache
}

var _ Store = (*sqlStore)(nil)

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *sqlStore) Close() error {
	s.stmts.close()
	err := s.db.Close()
	if s.wdb != s.db {
		err = errors.Join(err, s.wdb.Close())
	}
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// roomRow is a room's row as a write transaction reads and rewrites it.
type roomRow struct {
	version, createEventID               string
	events, redacted, minDepth, maxDepth int64
	forward, backward, unfillable        int64
	rejected, stateGroupSeq              int64
	eventSeq                             int64 // the last arrival number handed out
}

const roomColumns = `room_version, create_event_id, event_count, redacted_count, min_depth, max_depth,
	forward_count, backward_count, unfillable_count, rejected_count, state_group_seq, event_seq`

func (r *roomRow) scanTargets() []any {
	return []any{&r.version, &r.createEventID, &r.events, &r.redacted, &r.minDepth, &r.maxDepth,
		&r.forward, &r.backward, &r.unfillable, &r.rejected, &r.stateGroupSeq, &r.eventSeq}
}

// inRoomTx runs fn in a write transaction that holds the room's row, and writes the row back
// if fn changed it. Every write to a room's DAG goes through here, so the row is the lock that
// keeps the extremity sets and counters of a room consistent between concurrent writers
// (see dialect.forUpdate). With create, a missing room is created; without, it is ErrNotFound.
func (s *sqlStore) inRoomTx(ctx context.Context, roomID string, create bool, fn func(tx *sql.Tx, room *roomRow) error) error {
	return withContextErr(ctx, s.roomTx(ctx, roomID, create, fn))
}

// withContextErr makes an error that the context's end caused say so. pgx reports a statement
// tried after the deadline as driver.ErrBadConn, which would hide why a transaction failed
// from errors.Is(err, context.Canceled).
func withContextErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	return err
}

func (s *sqlStore) roomTx(ctx context.Context, roomID string, create bool, fn func(tx *sql.Tx, room *roomRow) error) error {
	s.stmts.prepareWanted(ctx)
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	room, err := s.lockRoom(ctx, tx, roomID)
	if errors.Is(err, ErrNotFound) && create {
		// Two writers may both get here for a new room: the second one's insert waits for
		// the first to commit (PostgreSQL) or cannot happen at all (SQLite), then does nothing.
		if _, err := tx.ExecContext(ctx, s.d.rebind(
			`INSERT INTO rooms (room_id, created_at) VALUES (?, ?) ON CONFLICT (room_id) DO NOTHING`),
			roomID, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("create room: %w", err)
		}
		room, err = s.lockRoom(ctx, tx, roomID)
	}
	if err != nil {
		return err
	}
	before := room
	if err := fn(tx, &room); err != nil {
		return err
	}
	if room != before {
		if _, err := tx.ExecContext(ctx, s.d.rebind(`UPDATE rooms SET room_version = ?, create_event_id = ?,
			event_count = ?, redacted_count = ?, min_depth = ?, max_depth = ?,
			forward_count = ?, backward_count = ?, unfillable_count = ?, rejected_count = ?,
			state_group_seq = ?, event_seq = ? WHERE room_id = ?`),
			room.version, room.createEventID, room.events, room.redacted, room.minDepth, room.maxDepth,
			room.forward, room.backward, room.unfillable, room.rejected, room.stateGroupSeq, room.eventSeq, roomID); err != nil {
			return fmt.Errorf("update room counters: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// lockRoom reads the room's row and, on PostgreSQL, locks it until the transaction ends.
func (s *sqlStore) lockRoom(ctx context.Context, tx *sql.Tx, roomID string) (roomRow, error) {
	var room roomRow
	err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT `+roomColumns+` FROM rooms WHERE room_id = ?`+s.d.forUpdate),
		roomID).Scan(room.scanTargets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return room, fmt.Errorf("room %s: %w", roomID, ErrNotFound)
	}
	if err != nil {
		return room, fmt.Errorf("lock room: %w", err)
	}
	return room, nil
}

func (s *sqlStore) EnsureRoom(ctx context.Context, roomID, roomVersion, createEventID string) error {
	if roomID == "" {
		return fmt.Errorf("ensure room: empty room ID")
	}
	err := s.inRoomTx(ctx, roomID, true, func(_ *sql.Tx, room *roomRow) error {
		if err := setOnce(&room.version, roomVersion, "room version"); err != nil {
			return err
		}
		return setOnce(&room.createEventID, createEventID, "create event")
	})
	if err != nil {
		return fmt.Errorf("ensure room %s: %w", roomID, err)
	}
	return nil
}

// setOnce fills an unknown value; a known one may only be confirmed.
func setOnce(stored *string, value, what string) error {
	switch {
	case value == "" || value == *stored:
	case *stored == "":
		*stored = value
	default:
		return fmt.Errorf("%s is %q, not %q: %w", what, *stored, value, ErrConflict)
	}
	return nil
}

func (s *sqlStore) Room(ctx context.Context, roomID string) (Room, error) {
	var r roomRow
	err := s.db.QueryRowContext(ctx, s.d.rebind(`SELECT `+roomColumns+` FROM rooms WHERE room_id = ?`),
		roomID).Scan(r.scanTargets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return Room{}, fmt.Errorf("room %s: %w", roomID, ErrNotFound)
	}
	if err != nil {
		return Room{}, fmt.Errorf("read room %s: %w", roomID, err)
	}
	return Room{
		ID: roomID, Version: r.version, CreateEventID: r.createEventID,
		Events: r.events, Redacted: r.redacted, MinDepth: r.minDepth, MaxDepth: r.maxDepth,
		ForwardExtremities: r.forward, BackwardExtremities: r.backward, UnfillableExtremities: r.unfillable,
		Rejected: r.rejected, LastSeq: r.eventSeq,
	}, nil
}

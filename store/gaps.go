package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// savePeerAttempts records the peers' answers on a gap, in the transaction that counted the
// attempt: one row per (gap, peer), the latest answer replacing the one before.
func (s *sqlStore) savePeerAttempts(ctx context.Context, tx *sql.Tx, roomID, eventID string, peers []PeerAttempt) error {
	now := time.Now().UnixMilli()
	for _, p := range peers {
		if p.Peer == "" {
			return fmt.Errorf("a peer answer on %s names no peer", eventID)
		}
		at := now
		if !p.At.IsZero() {
			at = p.At.UnixMilli()
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO gap_attempts
			(room_id, event_id, peer, endpoint, outcome, error, attempted_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (room_id, event_id, peer) DO UPDATE SET endpoint = excluded.endpoint,
			outcome = excluded.outcome, error = excluded.error, attempted_at = excluded.attempted_at`),
			roomID, eventID, p.Peer, p.Endpoint, p.Outcome, cleanText(p.Error, MaxPeerAttemptError), at); err != nil {
			return fmt.Errorf("record the answer of %s: %w", p.Peer, err)
		}
	}
	return nil
}

// cleanText makes a peer's error text storable in both backends (valid UTF-8 without NUL,
// which PostgreSQL's TEXT refuses) and cuts it to at most n bytes, on a rune boundary.
func cleanText(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

func (s *sqlStore) GapAttempts(ctx context.Context, roomID string, eventIDs []string) (map[string][]PeerAttempt, error) {
	out := make(map[string][]PeerAttempt)
	err := s.queryIn(ctx, s.db, `SELECT event_id, peer, endpoint, outcome, error, attempted_at FROM gap_attempts
		WHERE room_id = ? AND event_id IN `, []any{roomID}, eventIDs, "", func(rows *sql.Rows) error {
		var id string
		var p PeerAttempt
		var at int64
		if err := rows.Scan(&id, &p.Peer, &p.Endpoint, &p.Outcome, &p.Error, &at); err != nil {
			return err
		}
		p.At = fromMillis(at)
		out[id] = append(out[id], p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the peer answers on %d gaps of %s: %w", len(eventIDs), roomID, err)
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b PeerAttempt) int { return strings.Compare(a.Peer, b.Peer) })
	}
	return out, nil
}

func (s *sqlStore) ReferencingEvents(ctx context.Context, roomID string, prevIDs []string, limit int) (map[string][]string, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("read the events referencing %d events of %s: limit %d is not positive", len(prevIDs), roomID, limit)
	}
	out := make(map[string][]string)
	// One indexed range per prev on the key of gap_edges (room_id, prev_event_id, event_id)
	// or, for a held prev, of event_edges (room_id, prev_nid, event_id), already sorted: a
	// prev is in one table or the other. The rows past the limit are read and dropped,
	// which costs little: a gap has a few children.
	scan := func(rows *sql.Rows) error {
		var prev, id string
		if err := rows.Scan(&prev, &id); err != nil {
			return err
		}
		if len(out[prev]) < limit {
			out[prev] = append(out[prev], id)
		}
		return nil
	}
	err := s.queryIn(ctx, s.db, `SELECT prev_event_id, event_id FROM gap_edges WHERE room_id = ? AND prev_event_id IN `,
		[]any{roomID}, prevIDs, ` ORDER BY prev_event_id, event_id`, scan)
	if err == nil {
		err = s.queryIn(ctx, s.db, `SELECT p.event_id, g.event_id FROM events p
			JOIN event_edges g ON g.room_id = p.room_id AND g.prev_nid = p.event_nid WHERE p.room_id = ? AND p.event_id IN `,
			[]any{roomID}, prevIDs, ` ORDER BY p.event_id, g.event_id`, scan)
	}
	if err != nil {
		return nil, fmt.Errorf("read the events referencing %d events of %s: %w", len(prevIDs), roomID, err)
	}
	return out, nil
}

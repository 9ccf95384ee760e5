package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
)

// CheckConsistency implements Store: it reads the room's events and edges in one read-only
// transaction and recomputes forward and backward extremities (with their child depths) and
// counters from them alone.
func (s *sqlStore) CheckConsistency(ctx context.Context, roomID string) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("check consistency of %s: %w", roomID, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	problems, err := s.consistencyProblems(ctx, tx, roomID)
	if err != nil {
		return fmt.Errorf("check consistency of %s: %w", roomID, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("room %s is inconsistent:\n%s", roomID, strings.Join(problems, "\n"))
	}
	return nil
}

func (s *sqlStore) consistencyProblems(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	var room roomRow
	err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT `+roomColumns+` FROM rooms WHERE room_id = ?`),
		roomID).Scan(room.scanTargets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("room %s: %w", roomID, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// Forward extremities: held events that no held event lists as a prev. Edge rows exist
	// only for held events, so "no edge points at it" says exactly that.
	wantForward := map[string]depthRange{}
	if err := s.collect(ctx, tx, wantForward, recomputeForward, roomID); err != nil {
		return nil, fmt.Errorf("recompute forward extremities: %w", err)
	}
	haveForward := map[string]depthRange{}
	if err := s.collect(ctx, tx, haveForward, `SELECT event_id, 0, 0 FROM forward_extremities WHERE room_id = ?`,
		roomID); err != nil {
		return nil, fmt.Errorf("read forward extremities: %w", err)
	}
	compareSets(add, "forward extremities", wantForward, haveForward)

	// Backward extremities: prevs of held events that are not held, with the depths of the
	// children pointing at them.
	wantBackward := map[string]depthRange{}
	if err := s.collect(ctx, tx, wantBackward, recomputeBackward, roomID); err != nil {
		return nil, fmt.Errorf("recompute backward extremities: %w", err)
	}
	haveBackward := map[string]depthRange{}
	if err := s.collect(ctx, tx, haveBackward, `SELECT event_id, min_child_depth, max_child_depth
		FROM backward_extremities WHERE room_id = ?`, roomID); err != nil {
		return nil, fmt.Errorf("read backward extremities: %w", err)
	}
	compareSets(add, "backward extremities", wantBackward, haveBackward)

	// Their newest child timestamps, checked the same way (the depth columns stand in).
	wantTS := map[string]depthRange{}
	if err := s.collect(ctx, tx, wantTS, recomputeBackwardTS, roomID); err != nil {
		return nil, fmt.Errorf("recompute backward extremity timestamps: %w", err)
	}
	haveTS := map[string]depthRange{}
	if err := s.collect(ctx, tx, haveTS, `SELECT event_id, max_child_ts, 0
		FROM backward_extremities WHERE room_id = ?`, roomID); err != nil {
		return nil, fmt.Errorf("read backward extremity timestamps: %w", err)
	}
	compareSets(add, "backward extremity child timestamps", wantTS, haveTS)

	// The edges must say what the events' prev_events say: compare an order-independent
	// digest of the (event, prev) pairs read from each.
	fromEvents, fromEdges, err := s.edgeDigests(ctx, tx, roomID)
	if err != nil {
		return nil, err
	}
	if fromEvents != fromEdges {
		add("the %d edges disagree with the %d prev events the events list", fromEdges.pairs, fromEvents.pairs)
	}

	misplaced, err := s.misplacedEdges(ctx, tx, roomID)
	if err != nil {
		return nil, err
	}
	if misplaced.orphans != 0 {
		add("%d edges belong to no held event of the room", misplaced.orphans)
	}
	if misplaced.heldGaps != 0 {
		add("%d edges name a held event as missing (in gap_edges)", misplaced.heldGaps)
	}
	if misplaced.lostPrevs != 0 {
		add("%d edges name by key a prev event the room does not hold", misplaced.lostPrevs)
	}
	var events, redacted, rejected, minDepth, maxDepth, unfillable int64
	var orphanAnswers int64
	if err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT COUNT(*) FROM gap_attempts a WHERE a.room_id = ?
		AND NOT EXISTS (SELECT 1 FROM backward_extremities b WHERE b.room_id = a.room_id AND b.event_id = a.event_id)`),
		roomID).Scan(&orphanAnswers); err != nil {
		return nil, fmt.Errorf("count peer answers without a gap: %w", err)
	}
	if orphanAnswers != 0 {
		add("%d peer answers are kept for events that are no gap", orphanAnswers)
	}
	if err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT COUNT(*),
		COALESCE(SUM(CASE WHEN redacted THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN rejected <> '' THEN 1 ELSE 0 END), 0),
		COALESCE(MIN(depth), 0), COALESCE(MAX(depth), 0)
		FROM events WHERE room_id = ?`), roomID).Scan(&events, &redacted, &rejected, &minDepth, &maxDepth); err != nil {
		return nil, fmt.Errorf("count events: %w", err)
	}
	if err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT COUNT(*) FROM backward_extremities
		WHERE room_id = ? AND unfillable = ?`), roomID, true).Scan(&unfillable); err != nil {
		return nil, fmt.Errorf("count unfillable extremities: %w", err)
	}
	problems = append(problems, compareCounters(room, roomRow{
		events: events, redacted: redacted, rejected: rejected, minDepth: minDepth, maxDepth: maxDepth,
		forward: int64(len(haveForward)), backward: int64(len(haveBackward)), unfillable: unfillable,
	})...)
	arrival, err := s.arrivalProblems(ctx, tx, roomID, room.eventSeq)
	if err != nil {
		return nil, err
	}
	return append(problems, arrival...), nil
}

// The extremities as the rows imply them, as (event ID, min, max) rows for collect: what
// CheckConsistency compares with the extremity tables, and what a repair rebuilds them from.
const (
	// recomputeForward: held events that no held event lists as a prev. Edge rows exist only
	// for held events, so "no edge points at it" says exactly that.
	recomputeForward = `SELECT e.event_id, 0, 0 FROM events e WHERE e.room_id = ?
		AND NOT EXISTS (SELECT 1 FROM event_edges g WHERE g.room_id = e.room_id AND g.prev_nid = e.event_nid)
		AND NOT EXISTS (SELECT 1 FROM gap_edges g WHERE g.room_id = e.room_id AND g.prev_event_id = e.event_id)`
	// recomputeBackward: prevs of held events that are not held, with the depths of the
	// children pointing at them.
	recomputeBackward = `SELECT g.prev_event_id, MIN(c.depth), MAX(c.depth)
		FROM gap_edges g JOIN events c ON c.event_id = g.event_id
		WHERE g.room_id = ? AND NOT EXISTS
			(SELECT 1 FROM events p WHERE p.event_id = g.prev_event_id AND p.room_id = g.room_id)
		GROUP BY g.prev_event_id`
	// recomputeBackwardTS: the same prevs with the newest timestamp of their children (in
	// the min column).
	recomputeBackwardTS = `SELECT g.prev_event_id, MAX(c.origin_server_ts), 0
		FROM gap_edges g JOIN events c ON c.event_id = g.event_id
		WHERE g.room_id = ? AND NOT EXISTS
			(SELECT 1 FROM events p WHERE p.event_id = g.prev_event_id AND p.room_id = g.room_id)
		GROUP BY g.prev_event_id`
)

// edgeDigests digests the room's (event, prev) pairs as the events' prev_events list them
// and as the edge rows hold them: the edges must say what the events say.
func (s *sqlStore) edgeDigests(ctx context.Context, tx *sql.Tx, roomID string) (fromEvents, fromEdges digest, err error) {
	fromEvents, err = s.pairDigest(ctx, tx, `SELECT event_id, prev_events FROM events WHERE room_id = ?`, roomID, true)
	if err != nil {
		return fromEvents, fromEdges, fmt.Errorf("read prev events: %w", err)
	}
	// An edge whose key names no held event of the room is left out of the join, and so
	// makes the digests differ.
	keyed, err := s.pairDigest(ctx, tx, `SELECT g.event_id, p.event_id FROM event_edges g
		JOIN events p ON p.event_nid = g.prev_nid AND p.room_id = g.room_id WHERE g.room_id = ?`, roomID, false)
	if err != nil {
		return fromEvents, fromEdges, fmt.Errorf("read edges: %w", err)
	}
	gaps, err := s.pairDigest(ctx, tx, `SELECT event_id, prev_event_id FROM gap_edges WHERE room_id = ?`, roomID, false)
	if err != nil {
		return fromEvents, fromEdges, fmt.Errorf("read the edges of gaps: %w", err)
	}
	return fromEvents, digest{keyed.pairs + gaps.pairs, keyed.sum + gaps.sum}, nil
}

// digest sums a hash of each (event, prev) pair: equal digests mean equal sets of pairs, short
// of a 64-bit collision, without holding either set in memory.
type digest struct {
	pairs int64
	sum   uint64
}

// pairDigest digests the pairs of (event ID, prev) rows; with listed, the second column is a
// JSON list of prevs.
func (s *sqlStore) pairDigest(ctx context.Context, tx *sql.Tx, q, roomID string, listed bool) (digest, error) {
	var d digest
	rows, err := tx.QueryContext(ctx, s.d.rebind(q), roomID)
	if err != nil {
		return d, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, second string
		if err := rows.Scan(&id, &second); err != nil {
			return d, err
		}
		prevs := []string{second}
		if listed {
			prevs = nil
			if err := json.Unmarshal([]byte(second), &prevs); err != nil {
				return d, fmt.Errorf("event %s: %w", id, err)
			}
		}
		for _, p := range prevs {
			h := fnv.New64a()
			h.Write([]byte(id + "\x00" + p))
			d.pairs++
			d.sum += h.Sum64()
		}
	}
	return d, rows.Err()
}

// collect reads (id, min, max) rows into into.
func (s *sqlStore) collect(ctx context.Context, tx *sql.Tx, into map[string]depthRange, q string, args ...any) error {
	rows, err := tx.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var r depthRange
		if err := rows.Scan(&id, &r.min, &r.max); err != nil {
			return err
		}
		into[id] = r
	}
	return rows.Err()
}

// compareSets reports IDs missing from or extra in have, and differing child depths.
func compareSets(add func(string, ...any), what string, want, have map[string]depthRange) {
	var missing, extra, wrong []string
	for _, id := range slices.Sorted(maps.Keys(want)) {
		h, ok := have[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case h != want[id]:
			wrong = append(wrong, fmt.Sprintf("%s child depths %d..%d, want %d..%d", id, h.min, h.max, want[id].min, want[id].max))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	if len(missing) > 0 {
		add("%s missing: %s", what, sample(missing))
	}
	if len(extra) > 0 {
		add("%s that should not be: %s", what, sample(extra))
	}
	if len(wrong) > 0 {
		add("%s with wrong depths: %s", what, sample(wrong))
	}
}

// sample lists up to ten items and how many more there are.
func sample(items []string) string {
	if len(items) <= 10 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:10], ", "), len(items)-10)
}

package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// RepairPlan says what RepairRoom does besides rebuilding the room's bookkeeping from its rows.
// The store cannot tell a sound event from a damaged one (it does not verify events); the
// caller that re-verified them says which rows go.
type RepairPlan struct {
	// Delete are events whose rows failed re-verification. Each becomes a gap again where a
	// held event names it, so the resolver fetches it anew.
	Delete []string
	// Unredact are events flagged redacted whose JSON is the full copy: the flag goes.
	Unredact []string
}

// RepairResult says what RepairRoom changed.
type RepairResult struct {
	// RoomCreated: the room had events but no row; the row was made from them.
	RoomCreated bool
	Deleted     int
	Unredacted  int
	// StaleEdges counts the edges of events not held (their rows lost or deleted), removed.
	StaleEdges int
	// EdgesRebuilt: the edges disagreed with the events' prev events and were written anew.
	EdgesRebuilt bool
	// GapsAdded are missing events that held events name, made backward extremities again
	// (due now); GapsRemoved counts backward extremities that were held or named by no one.
	GapsAdded      []string
	GapsRemoved    int
	ForwardAdded   int
	ForwardRemoved int
	// Unreferenced counts events lost or deleted that no held event names (the newest, say):
	// no gap marks them, and the next sync finds them again from the peers' heads.
	Unreferenced int
	// Renumbered counts events given the arrival number they lacked.
	Renumbered int
	// StateInvalidated counts events whose state (and rejection) was cleared, to be computed
	// again: descendants of lost events, and users of state groups that were wrong.
	StateInvalidated int
	// StateRowsRemoved counts state groups, entries and boundary states removed as wrong.
	StateRowsRemoved int
	// Counters are the room's counters that were corrected, as "event count 400 → 118".
	Counters []string
}

// Changed reports whether the repair changed anything.
func (r RepairResult) Changed() bool {
	return r.RoomCreated || r.Deleted > 0 || r.Unredacted > 0 || r.StaleEdges > 0 || r.EdgesRebuilt ||
		len(r.GapsAdded) > 0 || r.GapsRemoved > 0 || r.ForwardAdded > 0 || r.ForwardRemoved > 0 ||
		r.Renumbered > 0 || r.StateInvalidated > 0 || r.StateRowsRemoved > 0 || len(r.Counters) > 0
}

// RepairRoom rebuilds the room's bookkeeping from its event rows, in one transaction that
// holds the room's row (so writers of the room wait, and see it whole): it deletes the
// events of plan.Delete and clears the flags of plan.Unredact; removes the edges of events
// not held; rebuilds the edges from the events' prev events if they disagree; rebuilds the
// forward and backward extremities (a missing event that a held event names is a gap again,
// due now; known gaps keep their attempts); clears the state of every event that descends
// from a lost event or uses a state group that is wrong, so that it is computed again; and
// recounts the counters. It never deletes an event that plan.Delete does not name. A room
// with events but no row gets one.
func RepairRoom(ctx context.Context, st Store, roomID string, plan RepairPlan) (RepairResult, error) {
	s, err := sqlStoreOf(st)
	if err != nil {
		return RepairResult{}, err
	}
	var res RepairResult
	if _, err := st.Room(ctx, roomID); errors.Is(err, ErrNotFound) {
		res.RoomCreated = true
	} else if err != nil {
		return res, fmt.Errorf("repair room %s: %w", roomID, err)
	}
	err = s.inRoomTx(ctx, roomID, true, func(tx *sql.Tx, room *roomRow) error {
		res = RepairResult{RoomCreated: res.RoomCreated}
		r := &repair{s: s, tx: tx, roomID: roomID, room: room, res: &res, now: time.Now().UnixMilli()}
		return r.run(ctx, plan)
	})
	if err != nil {
		return RepairResult{}, fmt.Errorf("repair room %s: %w", roomID, err)
	}
	return res, nil
}

// repair is one RepairRoom transaction.
type repair struct {
	s      *sqlStore
	tx     *sql.Tx
	roomID string
	room   *roomRow
	res    *RepairResult
	now    int64
}

func (r *repair) run(ctx context.Context, plan RepairPlan) error {
	deleted, err := r.deleteEvents(ctx, plan.Delete)
	if err != nil {
		return err
	}
	if err := r.unredact(ctx, plan.Unredact); err != nil {
		return err
	}
	lost, err := r.removeStaleEdges(ctx)
	if err != nil {
		return err
	}
	if err := r.rebuildEdgesIfWrong(ctx); err != nil {
		return err
	}
	gaps, err := r.rebuildBackward(ctx)
	if err != nil {
		return err
	}
	lostHeads, err := r.rebuildForward(ctx)
	if err != nil {
		return err
	}
	if _, err := r.tx.ExecContext(ctx, r.s.d.rebind(`DELETE FROM gap_attempts WHERE room_id = ? AND NOT EXISTS
		(SELECT 1 FROM backward_extremities b WHERE b.room_id = gap_attempts.room_id AND b.event_id = gap_attempts.event_id)`),
		r.roomID); err != nil {
		return fmt.Errorf("remove the peer answers of events that are no gap: %w", err)
	}
	unreferenced := map[string]bool{}
	for _, id := range slices.Concat(deleted, lost, lostHeads) {
		if _, gap := gaps[id]; !gap {
			unreferenced[id] = true
		}
	}
	r.res.Unreferenced = len(unreferenced)
	if err := r.numberUnnumbered(ctx); err != nil {
		return err
	}
	// The state of what descends from an event no longer held was computed with it.
	if err := r.invalidateState(ctx, slices.Concat(deleted, r.res.GapsAdded)); err != nil {
		return err
	}
	return r.recount(ctx)
}

// deleteEvents deletes the rows of ids in the room and returns those it deleted.
func (r *repair) deleteEvents(ctx context.Context, ids []string) ([]string, error) {
	var deleted []string
	err := r.s.queryIn(ctx, r.tx, `DELETE FROM events WHERE room_id = ? AND event_id IN `, []any{r.roomID}, ids,
		` RETURNING event_id`, func(rows *sql.Rows) error {
			var id string
			err := rows.Scan(&id)
			deleted = append(deleted, id)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("delete %d events: %w", len(ids), err)
	}
	r.res.Deleted = len(deleted)
	return deleted, nil
}

// unredact clears the redacted flag of ids.
func (r *repair) unredact(ctx context.Context, ids []string) error {
	n, err := r.s.execIn(ctx, r.tx, `UPDATE events SET redacted = ? WHERE room_id = ? AND redacted = ? AND event_id IN `,
		[]any{false, r.roomID, true}, ids, "")
	if err != nil {
		return fmt.Errorf("clear the redacted flag of %d events: %w", len(ids), err)
	}
	r.res.Unredacted = int(n)
	return nil
}

// removeStaleEdges removes the edges of events the room does not hold and returns those
// events: rows lost, whose edges stayed.
func (r *repair) removeStaleEdges(ctx context.Context) ([]string, error) {
	lost := map[string]bool{}
	for _, table := range []string{"event_edges", "gap_edges"} {
		rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(`DELETE FROM `+table+` WHERE room_id = ? AND NOT EXISTS
			(SELECT 1 FROM events e WHERE e.event_id = `+table+`.event_id AND e.room_id = `+table+`.room_id)
			RETURNING event_id`), r.roomID)
		if err != nil {
			return nil, fmt.Errorf("remove the edges of events not held: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("remove the edges of events not held: %w", err)
			}
			lost[id] = true
			r.res.StaleEdges++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("remove the edges of events not held: %w", err)
		}
	}
	return slices.Sorted(maps.Keys(lost)), nil
}

// rebuildEdgesIfWrong writes the room's edges anew from the events' prev events when the two
// disagree (an edge lost or added on its own, or a prev lost: its children's edges name it
// by a key that is gone, and must name it by ID in gap_edges), or when an edge is in the
// wrong table.
func (r *repair) rebuildEdgesIfWrong(ctx context.Context) error {
	fromEvents, fromEdges, err := r.s.edgeDigests(ctx, r.tx, r.roomID)
	if err != nil {
		return err
	}
	faults, err := r.s.misplacedEdges(ctx, r.tx, r.roomID)
	if err != nil || (fromEvents == fromEdges && !faults.any()) {
		return err
	}
	var edges []edge
	nids := map[string]int64{}
	rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(`SELECT event_id, event_nid, prev_events FROM events WHERE room_id = ?`), r.roomID)
	if err != nil {
		return fmt.Errorf("read prev events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, prevJSON string
		var nid int64
		var prevs []string
		if err := rows.Scan(&id, &nid, &prevJSON); err != nil {
			return fmt.Errorf("read prev events: %w", err)
		}
		if err := json.Unmarshal([]byte(prevJSON), &prevs); err != nil {
			return fmt.Errorf("prev events of %s: %w", id, err)
		}
		nids[id] = nid
		for _, p := range slices.Compact(slices.Sorted(slices.Values(prevs))) {
			edges = append(edges, edge{id, p})
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read prev events: %w", err)
	}
	rows.Close()
	var keyed, gaps []edge
	for _, e := range edges {
		if _, held := nids[e.prev]; held {
			keyed = append(keyed, e)
		} else {
			gaps = append(gaps, e)
		}
	}
	for _, table := range []string{"event_edges", "gap_edges"} {
		if _, err := r.tx.ExecContext(ctx, r.s.d.rebind(`DELETE FROM `+table+` WHERE room_id = ?`), r.roomID); err != nil {
			return fmt.Errorf("remove edges: %w", err)
		}
	}
	if err := r.s.insertRows(ctx, r.tx, "event_edges", []string{"room_id", "prev_nid", "event_id"}, len(keyed),
		func(i int, args []any) []any { return append(args, r.roomID, nids[keyed[i].prev], keyed[i].event) }); err != nil {
		return fmt.Errorf("write edges: %w", err)
	}
	if err := r.s.insertRows(ctx, r.tx, "gap_edges", []string{"room_id", "prev_event_id", "event_id"}, len(gaps),
		func(i int, args []any) []any { return append(args, r.roomID, gaps[i].prev, gaps[i].event) }); err != nil {
		return fmt.Errorf("write the edges of gaps: %w", err)
	}
	r.res.EdgesRebuilt = true
	return nil
}

// gapRow is a backward extremity's place: its children's depths and newest timestamp.
type gapRow struct {
	depths depthRange
	ts     int64
}

// rebuildBackward makes the backward extremities what the rows imply, keeping the attempts
// of those that stay, and returns them.
func (r *repair) rebuildBackward(ctx context.Context) (map[string]gapRow, error) {
	depths, times := map[string]depthRange{}, map[string]depthRange{}
	if err := r.s.collect(ctx, r.tx, depths, recomputeBackward, r.roomID); err != nil {
		return nil, fmt.Errorf("recompute backward extremities: %w", err)
	}
	if err := r.s.collect(ctx, r.tx, times, recomputeBackwardTS, r.roomID); err != nil {
		return nil, fmt.Errorf("recompute backward extremity timestamps: %w", err)
	}
	want := make(map[string]gapRow, len(depths))
	for id, d := range depths {
		want[id] = gapRow{d, times[id].min}
	}
	have := map[string]gapRow{}
	rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(`SELECT event_id, min_child_depth, max_child_depth, max_child_ts
		FROM backward_extremities WHERE room_id = ?`), r.roomID)
	if err != nil {
		return nil, fmt.Errorf("read backward extremities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var g gapRow
		if err := rows.Scan(&id, &g.depths.min, &g.depths.max, &g.ts); err != nil {
			return nil, fmt.Errorf("read backward extremities: %w", err)
		}
		have[id] = g
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read backward extremities: %w", err)
	}
	rows.Close()

	var extra, added []string
	for _, id := range slices.Sorted(maps.Keys(have)) {
		w, ok := want[id]
		switch {
		case !ok:
			extra = append(extra, id)
		case w != have[id]:
			if _, err := r.tx.ExecContext(ctx, r.s.d.rebind(`UPDATE backward_extremities
				SET min_child_depth = ?, max_child_depth = ?, max_child_ts = ? WHERE room_id = ? AND event_id = ?`),
				w.depths.min, w.depths.max, w.ts, r.roomID, id); err != nil {
				return nil, fmt.Errorf("update backward extremity %s: %w", id, err)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if _, ok := have[id]; !ok {
			added = append(added, id)
		}
	}
	if _, err := r.s.execIn(ctx, r.tx, `DELETE FROM backward_extremities WHERE room_id = ? AND event_id IN `,
		[]any{r.roomID}, extra, ""); err != nil {
		return nil, fmt.Errorf("remove backward extremities: %w", err)
	}
	if err := r.s.insertRows(ctx, r.tx, "backward_extremities",
		[]string{"room_id", "event_id", "first_seen", "min_child_depth", "max_child_depth", "max_child_ts"},
		len(added), func(i int, args []any) []any {
			g := want[added[i]]
			return append(args, r.roomID, added[i], r.now, g.depths.min, g.depths.max, g.ts)
		}); err != nil {
		return nil, fmt.Errorf("add backward extremities: %w", err)
	}
	r.res.GapsAdded, r.res.GapsRemoved = added, len(extra)
	return want, nil
}

// rebuildForward makes the forward extremities what the rows imply, and returns those it
// removed that the room does not hold: lost heads.
func (r *repair) rebuildForward(ctx context.Context) ([]string, error) {
	want, have := map[string]depthRange{}, map[string]depthRange{}
	if err := r.s.collect(ctx, r.tx, want, recomputeForward, r.roomID); err != nil {
		return nil, fmt.Errorf("recompute forward extremities: %w", err)
	}
	if err := r.s.collect(ctx, r.tx, have, `SELECT event_id, 0, 0 FROM forward_extremities WHERE room_id = ?`, r.roomID); err != nil {
		return nil, fmt.Errorf("read forward extremities: %w", err)
	}
	var extra, missing []string
	for _, id := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if _, ok := have[id]; !ok {
			missing = append(missing, id)
		}
	}
	held := map[string]bool{}
	err := r.s.queryIn(ctx, r.tx, `SELECT event_id FROM events WHERE room_id = ? AND event_id IN `, []any{r.roomID}, extra, "",
		func(rows *sql.Rows) error {
			var id string
			err := rows.Scan(&id)
			held[id] = true
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("look up forward extremities: %w", err)
	}
	if _, err := r.s.execIn(ctx, r.tx, `DELETE FROM forward_extremities WHERE room_id = ? AND event_id IN `,
		[]any{r.roomID}, extra, ""); err != nil {
		return nil, fmt.Errorf("remove forward extremities: %w", err)
	}
	if err := r.s.insertRows(ctx, r.tx, "forward_extremities", []string{"room_id", "event_id"}, len(missing),
		func(i int, args []any) []any { return append(args, r.roomID, missing[i]) }); err != nil {
		return nil, fmt.Errorf("add forward extremities: %w", err)
	}
	r.res.ForwardAdded, r.res.ForwardRemoved = len(missing), len(extra)
	return slices.DeleteFunc(extra, func(id string) bool { return held[id] }), nil
}

// numberUnnumbered gives events without an arrival number the next ones, topologically.
func (r *repair) numberUnnumbered(ctx context.Context) error {
	ids, err := r.s.columnOf(ctx, r.tx, `SELECT event_id FROM events WHERE room_id = ? AND seq <= 0 ORDER BY depth, event_id`, r.roomID)
	if err != nil {
		return fmt.Errorf("look for events without an arrival number: %w", err)
	}
	// Numbers at or below the largest held would collide with the unique index.
	var largest int64
	if err := r.tx.QueryRowContext(ctx, r.s.d.rebind(`SELECT COALESCE(MAX(seq), 0) FROM events WHERE room_id = ?`),
		r.roomID).Scan(&largest); err != nil {
		return fmt.Errorf("read the last arrival number: %w", err)
	}
	r.room.eventSeq = max(r.room.eventSeq, largest)
	for _, id := range ids {
		r.room.eventSeq++
		if _, err := r.tx.ExecContext(ctx, r.s.d.rebind(`UPDATE events SET seq = ? WHERE event_id = ?`), r.room.eventSeq, id); err != nil {
			return fmt.Errorf("number event %s: %w", id, err)
		}
	}
	r.res.Renumbered = len(ids)
	return nil
}

// recount sets the room's counters from its rows. The last arrival number and state group
// number only grow: numbers handed out are spent even if their rows are gone.
func (r *repair) recount(ctx context.Context) error {
	var truth roomRow
	var lastSeq, lastGroup int64
	for _, q := range []struct {
		what, sql string
		into      []any
	}{
		{"count events", `SELECT COUNT(*), COALESCE(SUM(CASE WHEN redacted THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN rejected <> '' THEN 1 ELSE 0 END), 0), COALESCE(MIN(depth), 0), COALESCE(MAX(depth), 0),
			COALESCE(MAX(seq), 0) FROM events WHERE room_id = ?`,
			[]any{&truth.events, &truth.redacted, &truth.rejected, &truth.minDepth, &truth.maxDepth, &lastSeq}},
		{"count forward extremities", `SELECT COUNT(*) FROM forward_extremities WHERE room_id = ?`, []any{&truth.forward}},
		{"count backward extremities", `SELECT COUNT(*), COALESCE(SUM(CASE WHEN unfillable THEN 1 ELSE 0 END), 0)
			FROM backward_extremities WHERE room_id = ?`, []any{&truth.backward, &truth.unfillable}},
		{"read the last state group", `SELECT COALESCE(MAX(group_no), 0) FROM state_groups WHERE room_id = ?`, []any{&lastGroup}},
	} {
		if err := r.tx.QueryRowContext(ctx, r.s.d.rebind(q.sql), r.roomID).Scan(q.into...); err != nil {
			return fmt.Errorf("%s: %w", q.what, err)
		}
	}
	for _, c := range counterNames {
		kept, t := c.of(r.room), *c.of(&truth)
		if *kept != t {
			r.res.Counters = append(r.res.Counters, fmt.Sprintf("%s %d → %d", c.name, *kept, t))
			*kept = t
		}
	}
	if lastSeq > r.room.eventSeq {
		r.res.Counters = append(r.res.Counters, fmt.Sprintf("last arrival number %d → %d", r.room.eventSeq, lastSeq))
		r.room.eventSeq = lastSeq
	}
	if lastGroup > r.room.stateGroupSeq {
		r.res.Counters = append(r.res.Counters, fmt.Sprintf("last state group %d → %d", r.room.stateGroupSeq, lastGroup))
		r.room.stateGroupSeq = lastGroup
	}
	return nil
}

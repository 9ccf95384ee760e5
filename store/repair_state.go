package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// invalidateState clears the state of the events whose state cannot be trusted, and of their
// descendants, so that the resolver computes it again once their ancestry is complete:
// children of gone (events no longer held), events whose state group is missing or wrong,
// and rejected events found in a state. Wrong state rows go: groups that are deltas from a
// missing group or hold a rejected event (with the groups built on them), their entries, and
// the boundary states on them, which the resolver asks a peer for again.
func (r *repair) invalidateState(ctx context.Context, gone []string) error {
	f, err := r.s.stateFaults(ctx, r.tx, r.roomID)
	if err != nil {
		return err
	}
	held := slices.Concat(f.missingGroupEvents, f.rejectedInState)
	wrong, err := r.wrongGroups(ctx, f)
	if err != nil {
		return err
	}
	brokenBoundaries := slices.Clone(f.brokenBoundaries)
	if len(wrong) > 0 {
		users, boundaries, err := r.usersOfGroups(ctx, wrong)
		if err != nil {
			return err
		}
		held = append(held, users...)
		brokenBoundaries = append(brokenBoundaries, boundaries...)
		if err := r.removeGroups(ctx, wrong); err != nil {
			return err
		}
	}
	n, err := r.s.execIn(ctx, r.tx, `DELETE FROM boundary_states WHERE room_id = ? AND event_id IN `,
		[]any{r.roomID}, brokenBoundaries, "")
	if err != nil {
		return fmt.Errorf("remove boundary states: %w", err)
	}
	r.res.StateRowsRemoved += int(n)
	res, err := r.tx.ExecContext(ctx, r.s.d.rebind(`DELETE FROM state_entries WHERE room_id = ? AND NOT EXISTS
		(SELECT 1 FROM state_groups g WHERE g.room_id = state_entries.room_id AND g.group_no = state_entries.group_no)`), r.roomID)
	if err != nil {
		return fmt.Errorf("remove stray state entries: %w", err)
	}
	n, _ = res.RowsAffected()
	r.res.StateRowsRemoved += int(n)

	// A boundary state stands for the state after its event: what descends from it goes too.
	descendants, err := r.descendants(ctx, slices.Concat(gone, held, brokenBoundaries))
	if err != nil {
		return err
	}
	n, err = r.s.execIn(ctx, r.tx, `UPDATE events SET state_before = NULL, state_after = NULL, rejected = ''
		WHERE room_id = ? AND (state_before IS NOT NULL OR state_after IS NOT NULL OR rejected <> '') AND event_id IN `,
		[]any{r.roomID}, slices.Concat(held, descendants), "")
	if err != nil {
		return fmt.Errorf("clear the state of %d events: %w", len(held)+len(descendants), err)
	}
	r.res.StateInvalidated += int(n)
	// A rejection without a state would be counted twice when the state is computed again.
	res, err = r.tx.ExecContext(ctx, r.s.d.rebind(`UPDATE events SET rejected = '' WHERE room_id = ? AND rejected <> ''
		AND state_before IS NULL`), r.roomID)
	if err != nil {
		return fmt.Errorf("clear rejections without a state: %w", err)
	}
	n, _ = res.RowsAffected()
	r.res.StateInvalidated += int(n)
	return nil
}

// wrongGroups are the state groups that cannot be read right: deltas from a missing group,
// groups that hold a rejected event, and every group built on one of them.
func (r *repair) wrongGroups(ctx context.Context, f stateFaults) (map[int64]bool, error) {
	if len(f.brokenGroups) == 0 && len(f.rejectedInState) == 0 {
		return nil, nil
	}
	wrong := map[int64]bool{}
	for _, g := range f.brokenGroups {
		wrong[g] = true
	}
	err := r.scanInts(ctx, `SELECT DISTINCT s.group_no, 0 FROM state_entries s
		JOIN events e ON e.event_id = s.event_id AND e.room_id = s.room_id
		WHERE s.room_id = ? AND e.rejected <> ''`, func(g, _ int64) { wrong[g] = true })
	if err != nil {
		return nil, fmt.Errorf("find the groups of rejected events: %w", err)
	}
	builtOn := map[int64][]int64{}
	err = r.scanInts(ctx, `SELECT group_no, prev_group FROM state_groups WHERE room_id = ? AND prev_group IS NOT NULL`,
		func(g, prev int64) { builtOn[prev] = append(builtOn[prev], g) })
	if err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	for queue := slices.Collect(maps.Keys(wrong)); len(queue) > 0; queue = queue[1:] {
		for _, g := range builtOn[queue[0]] {
			if !wrong[g] {
				wrong[g] = true
				queue = append(queue, g)
			}
		}
	}
	return wrong, nil
}

// usersOfGroups returns the held events whose state is one of groups, and the boundary
// states (by event ID) on one of them.
func (r *repair) usersOfGroups(ctx context.Context, groups map[int64]bool) (events, boundaries []string, err error) {
	rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(`SELECT event_id, COALESCE(state_before, 0), COALESCE(state_after, 0)
		FROM events WHERE room_id = ? AND state_before IS NOT NULL`), r.roomID)
	if err != nil {
		return nil, nil, fmt.Errorf("read the state of events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var before, after int64
		if err := rows.Scan(&id, &before, &after); err != nil {
			return nil, nil, fmt.Errorf("read the state of events: %w", err)
		}
		if groups[before] || groups[after] {
			events = append(events, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the state of events: %w", err)
	}
	rows.Close()
	all, err := r.boundaryGroups(ctx)
	if err != nil {
		return nil, nil, err
	}
	for id, b := range all {
		if groups[b.Group] {
			boundaries = append(boundaries, id)
		}
	}
	return events, boundaries, nil
}

// boundaryGroups reads the room's boundary states through the transaction (SQLite's readers
// would not see what it changed).
func (r *repair) boundaryGroups(ctx context.Context) (map[string]BoundaryState, error) {
	out := map[string]BoundaryState{}
	rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(`SELECT event_id, group_no FROM boundary_states WHERE room_id = ?`), r.roomID)
	if err != nil {
		return nil, fmt.Errorf("read boundary states: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b BoundaryState
		if err := rows.Scan(&b.EventID, &b.Group); err != nil {
			return nil, fmt.Errorf("read boundary states: %w", err)
		}
		out[b.EventID] = b
	}
	return out, rows.Err()
}

// removeGroups deletes state groups with their entries.
func (r *repair) removeGroups(ctx context.Context, groups map[int64]bool) error {
	nos := slices.Sorted(maps.Keys(groups))
	for start := 0; start < len(nos); start += maxInList {
		chunk := nos[start:min(len(nos), start+maxInList)]
		args := []any{r.roomID}
		for _, g := range chunk {
			args = append(args, g)
		}
		in := "(" + strings.Repeat("?,", len(chunk)-1) + "?)"
		for _, table := range []string{"state_entries", "state_groups"} {
			res, err := r.tx.ExecContext(ctx, r.s.d.rebind(`DELETE FROM `+table+` WHERE room_id = ? AND group_no IN `+in), args...)
			if err != nil {
				return fmt.Errorf("remove wrong state groups from %s: %w", table, err)
			}
			n, _ := res.RowsAffected()
			r.res.StateRowsRemoved += int(n)
		}
	}
	return nil
}

// descendants returns the held events that descend from any of from (held or not), through
// the edges, with a recursive query per slice of from.
func (r *repair) descendants(ctx context.Context, from []string) ([]string, error) {
	from = slices.Compact(slices.Sorted(slices.Values(from)))
	found := map[string]bool{}
	for start := 0; start < len(from); start += maxInList {
		chunk := from[start:min(len(from), start+maxInList)]
		ids := make([]any, len(chunk))
		for i, id := range chunk {
			ids[i] = id
		}
		args := slices.Concat([]any{r.roomID}, ids, []any{r.roomID}, ids, []any{r.roomID})
		// UNION, not UNION ALL: a merge reached twice is walked once, so the walk ends. The
		// walk starts from the children of from, held (event_edges) or not (gap_edges),
		// and goes on through the keys of the events it reaches.
		in := `(` + strings.Repeat("?,", len(chunk)-1) + `?)`
		q := `WITH RECURSIVE d(event_id) AS (
			SELECT g.event_id FROM gap_edges g WHERE g.room_id = ? AND g.prev_event_id IN ` + in + `
			UNION
			SELECT g.event_id FROM events p JOIN event_edges g ON g.room_id = p.room_id AND g.prev_nid = p.event_nid
				WHERE p.room_id = ? AND p.event_id IN ` + in + `
			UNION
			SELECT g.event_id FROM d JOIN events p ON p.event_id = d.event_id
				JOIN event_edges g ON g.room_id = p.room_id AND g.prev_nid = p.event_nid WHERE p.room_id = ?)
			SELECT event_id FROM d`
		rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(q), args...)
		if err != nil {
			return nil, fmt.Errorf("find descendants: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("find descendants: %w", err)
			}
			found[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("find descendants: %w", err)
		}
	}
	return slices.Sorted(maps.Keys(found)), nil
}

// scanInts runs a query of two integer columns with the room ID as its argument.
func (r *repair) scanInts(ctx context.Context, q string, fn func(a, b int64)) error {
	rows, err := r.tx.QueryContext(ctx, r.s.d.rebind(q), r.roomID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a, b int64
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		fn(a, b)
	}
	return rows.Err()
}

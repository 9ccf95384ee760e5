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

var eventColumns = []string{"event_id", "room_id", "depth", "origin_server_ts", "type", "state_key",
	"sender", "origin", "prev_events", "raw", "redacted", "received_at", "seq"}

// InsertEvents stores the batch and updates the extremities in one transaction that holds the
// room's row (see inRoomTx). Which events are new is decided under that lock, so a batch
// inserted twice, or by two writers at once, is stored once; a batch held already only reads.
func (s *sqlStore) InsertEvents(ctx context.Context, roomID string, events []Event) (InsertResult, error) {
	batch, repeats, err := dedupeBatch(roomID, events)
	if err != nil {
		return InsertResult{}, fmt.Errorf("insert events into %s: %w", roomID, err)
	}
	if len(batch) == 0 {
		return InsertResult{}, nil
	}
	var res InsertResult
	err = s.inRoomTx(ctx, roomID, true, func(tx *sql.Tx, room *roomRow) error {
		var err error
		res, err = s.insertBatch(ctx, s.stmts.in(tx), roomID, room, batch)
		return err
	})
	if err != nil {
		return InsertResult{}, fmt.Errorf("insert %d events into %s: %w", len(events), roomID, err)
	}
	res.Duplicates += repeats
	return res, nil
}

// dedupeBatch rejects a batch with an event of another room (or without an ID or JSON) and
// keeps one copy of each event ID, the full one when the batch has both forms. The copies it
// returns have their prev events as a sorted set; the caller's events are not modified.
func dedupeBatch(roomID string, events []Event) (batch []Event, repeats int, err error) {
	if roomID == "" {
		return nil, 0, errors.New("empty room ID")
	}
	index := make(map[string]int, len(events))
	batch = make([]Event, 0, len(events))
	for _, e := range events {
		switch {
		case e.ID == "":
			return nil, 0, fmt.Errorf("an event at depth %d has no ID", e.Depth)
		case e.RoomID != roomID:
			return nil, 0, fmt.Errorf("event %s belongs to room %q: %w", e.ID, e.RoomID, ErrConflict)
		case len(e.Raw) == 0:
			return nil, 0, fmt.Errorf("event %s has no JSON", e.ID)
		case slices.Contains(e.PrevEvents, ""):
			return nil, 0, fmt.Errorf("event %s has an empty prev event ID", e.ID)
		}
		e.PrevEvents = slices.Compact(slices.Sorted(slices.Values(e.PrevEvents)))
		if i, ok := index[e.ID]; ok {
			repeats++
			if batch[i].Redacted && !e.Redacted {
				batch[i] = e
			}
			continue
		}
		index[e.ID] = len(batch)
		batch = append(batch, e)
	}
	return batch, repeats, nil
}

// insertBatch sorts the batch into new events, upgrades of redacted copies and duplicates,
// then writes the new ones and their extremity changes.
func (s *sqlStore) insertBatch(ctx context.Context, tx querier, roomID string, room *roomRow, batch []Event) (InsertResult, error) {
	var res InsertResult
	held, err := s.heldEvents(ctx, tx, batch)
	if err != nil {
		return res, err
	}
	fresh := make([]Event, 0, len(batch))
	now := time.Now().UnixMilli()
	for _, e := range batch {
		h, ok := held[e.ID]
		switch {
		case !ok:
			fresh = append(fresh, e)
		case h.roomID != roomID:
			return res, fmt.Errorf("event %s is held in room %s: %w", e.ID, h.roomID, ErrConflict)
		case h.redacted && !e.Redacted:
			// Redaction keeps the ID, depth, prev events and the other columns, so only
			// the JSON changes; the DAG and the extremities do not. The full copy is a new
			// arrival: an export that took the redacted copy takes the content next time.
			room.eventSeq++
			if _, err := tx.ExecContext(ctx, s.d.rebind(
				`UPDATE events SET raw = ?, redacted = ?, received_at = ?, seq = ? WHERE event_id = ?`),
				e.Raw, false, now, room.eventSeq, e.ID); err != nil {
				return res, fmt.Errorf("upgrade redacted event %s: %w", e.ID, err)
			}
			room.redacted--
			res.Upgraded++
		default:
			res.Duplicates++
		}
	}
	if len(fresh) == 0 {
		return res, nil
	}
	nids, err := s.insertNewEvents(ctx, tx, room, fresh, now)
	if err != nil {
		return res, err
	}
	for id, h := range held {
		if h.roomID == roomID {
			nids[id] = h.nid
		}
	}
	if err := s.updateExtremities(ctx, tx, roomID, room, fresh, nids, now); err != nil {
		return res, err
	}
	res.New = len(fresh)
	return res, nil
}

// heldEvent is how an event is held already.
type heldEvent struct {
	roomID   string
	redacted bool
	nid      int64
}

// heldEvents looks up which events of the batch, and which of the prevs it names outside
// itself, are held: all in one statement, by ID alone. (With the room in the WHERE clause,
// SQLite's planner would prefer the (room_id, depth) index and scan the whole room; the
// callers compare the room.)
func (s *sqlStore) heldEvents(ctx context.Context, q querier, batch []Event) (map[string]heldEvent, error) {
	ids := eventIDs(batch)
	inBatch := make(map[string]bool, len(batch))
	for _, id := range ids {
		inBatch[id] = true
	}
	for _, e := range batch {
		for _, p := range e.PrevEvents {
			if !inBatch[p] {
				inBatch[p] = true
				ids = append(ids, p)
			}
		}
	}
	held := make(map[string]heldEvent)
	err := s.queryIn(ctx, q, `SELECT event_id, room_id, redacted, event_nid FROM events WHERE event_id IN `, nil,
		ids, "", func(rows *sql.Rows) error {
			var id string
			var h heldEvent
			if err := rows.Scan(&id, &h.roomID, &h.redacted, &h.nid); err != nil {
				return err
			}
			held[id] = h
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("look up held events: %w", err)
	}
	return held, nil
}

// insertNewEvents writes the rows of events not held before and returns the keys they got.
func (s *sqlStore) insertNewEvents(ctx context.Context, tx querier, room *roomRow, fresh []Event, now int64) (map[string]int64, error) {
	prevJSON := make([]string, len(fresh))
	for i, e := range fresh {
		b, err := json.Marshal(append([]string{}, e.PrevEvents...)) // [] rather than null
		if err != nil {
			return nil, fmt.Errorf("encode prev events of %s: %w", e.ID, err)
		}
		prevJSON[i] = string(b)
	}
	seqs := arrivalNumbers(fresh, room)
	nids := make(map[string]int64, len(fresh))
	if err := s.insertRowsReturning(ctx, tx, "events", eventColumns, len(fresh), func(i int, args []any) []any {
		e := &fresh[i]
		return append(args, e.ID, e.RoomID, e.Depth, e.OriginServerTS, e.Type, e.StateKey,
			e.Sender, e.Origin, prevJSON[i], e.Raw, e.Redacted, now, seqs[i])
	}, "event_id, event_nid", func(rows *sql.Rows) error {
		var id string
		var nid int64
		err := rows.Scan(&id, &nid)
		nids[id] = nid
		return err
	}); err != nil {
		return nil, err
	}

	if room.events == 0 {
		room.minDepth, room.maxDepth = fresh[0].Depth, fresh[0].Depth
	}
	for _, e := range fresh {
		room.minDepth = min(room.minDepth, e.Depth)
		room.maxDepth = max(room.maxDepth, e.Depth)
		if e.Redacted {
			room.redacted++
		}
	}
	room.events += int64(len(fresh))
	return nids, nil
}

// depthRange is the depths of the children that reference a prev event.
type depthRange struct{ min, max int64 }

func (r depthRange) widen(o depthRange) depthRange {
	return depthRange{min(r.min, o.min), max(r.max, o.max)}
}

// updateExtremities writes the edges and applies what the new events change, with the rows
// of fresh already written (nids holds their keys and those of the held events of the room
// they name):
//   - a new event that was a backward extremity (a hole) is one no more;
//   - each prev of a new event: if held, it is no forward extremity any more; if not, it is
//     a backward extremity (new, or known with one more child);
//   - a new event becomes a forward extremity if no held event lists it as a prev.
func (s *sqlStore) updateExtremities(ctx context.Context, tx querier, roomID string, room *roomRow, fresh []Event,
	nids map[string]int64, now int64) error {
	freshIDs := eventIDs(fresh)
	isFresh := make(map[string]bool, len(fresh))
	for _, id := range freshIDs {
		isFresh[id] = true
	}

	// A room without gaps has no gap a new event fills, nor edges naming a missing event:
	// a room that is live, or converged, skips the statements that look for them.
	var mayFill []string
	if room.backward > 0 {
		mayFill = freshIDs
	}
	var filled []string
	err := s.queryIn(ctx, tx, `DELETE FROM backward_extremities WHERE room_id = ? AND event_id IN `,
		[]any{roomID}, mayFill, ` RETURNING event_id, unfillable`, func(rows *sql.Rows) error {
			var id string
			var unfillable bool
			if err := rows.Scan(&id, &unfillable); err != nil {
				return err
			}
			filled = append(filled, id)
			room.backward--
			if unfillable {
				room.unfillable--
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("remove filled backward extremities: %w", err)
	}
	// Only the filled gaps can have peer answers: most batches fill none and skip this.
	if _, err := s.execIn(ctx, tx, `DELETE FROM gap_attempts WHERE room_id = ? AND event_id IN `,
		[]any{roomID}, filled, ""); err != nil {
		return fmt.Errorf("remove the peer answers of filled gaps: %w", err)
	}

	children := make(map[string]depthRange)
	childTS := make(map[string]int64)
	for _, e := range fresh {
		for _, p := range e.PrevEvents {
			r := depthRange{e.Depth, e.Depth}
			if old, ok := children[p]; ok {
				r = r.widen(old)
			}
			children[p] = r
			childTS[p] = max(childTS[p], e.OriginServerTS)
		}
	}
	// Prevs in the batch are held; only the others need a look.
	var outside []string
	for _, p := range slices.Sorted(maps.Keys(children)) {
		if !isFresh[p] {
			outside = append(outside, p)
		}
	}
	// nids has every held event of the room that a new event names (see heldEvents).
	var heldOutside []string
	for _, p := range outside {
		if _, ok := nids[p]; ok {
			heldOutside = append(heldOutside, p)
		}
	}
	n, err := s.execIn(ctx, tx, `DELETE FROM forward_extremities WHERE room_id = ? AND event_id IN `,
		[]any{roomID}, heldOutside, "")
	if err != nil {
		return fmt.Errorf("remove superseded forward extremities: %w", err)
	}
	room.forward -= n

	if err := s.addBackwardExtremities(ctx, tx, roomID, room, outside, heldOutside, children, childTS, now); err != nil {
		return err
	}

	// A new event is a forward extremity unless a new event refers to it, or a held one,
	// which named it while it was missing.
	named, err := s.writeEdges(ctx, tx, roomID, fresh, mayFill, nids)
	if err != nil {
		return err
	}
	var unreferenced []string
	for _, id := range freshIDs {
		if _, ok := children[id]; !ok && !named[id] {
			unreferenced = append(unreferenced, id)
		}
	}
	if err := s.insertRows(ctx, tx, "forward_extremities", []string{"room_id", "event_id"}, len(unreferenced),
		func(i int, args []any) []any { return append(args, roomID, unreferenced[i]) }); err != nil {
		return fmt.Errorf("add forward extremities: %w", err)
	}
	room.forward += int64(len(unreferenced))
	return nil
}

// addBackwardExtremities records the prevs (outside the batch) that are not held, with the
// depths and newest timestamp of the children that reference them.
func (s *sqlStore) addBackwardExtremities(ctx context.Context, tx querier, roomID string, room *roomRow,
	outside, heldOutside []string, children map[string]depthRange, childTS map[string]int64, now int64) error {
	held := make(map[string]bool, len(heldOutside))
	for _, id := range heldOutside {
		held[id] = true
	}
	missing := slices.DeleteFunc(slices.Clone(outside), func(id string) bool { return held[id] })
	type knownRow struct {
		depths depthRange
		ts     int64
	}
	known := make(map[string]knownRow)
	err := s.queryIn(ctx, tx, `SELECT event_id, min_child_depth, max_child_depth, max_child_ts FROM backward_extremities
		WHERE room_id = ? AND event_id IN `, []any{roomID}, missing, "", func(rows *sql.Rows) error {
		var id string
		var k knownRow
		err := rows.Scan(&id, &k.depths.min, &k.depths.max, &k.ts)
		known[id] = k
		return err
	})
	if err != nil {
		return fmt.Errorf("look up backward extremities: %w", err)
	}
	var added []string
	for _, p := range missing {
		old, ok := known[p]
		if !ok {
			added = append(added, p)
			continue
		}
		r, ts := old.depths.widen(children[p]), max(old.ts, childTS[p])
		if r != old.depths || ts != old.ts {
			if _, err := tx.ExecContext(ctx, s.d.rebind(`UPDATE backward_extremities
				SET min_child_depth = ?, max_child_depth = ?, max_child_ts = ? WHERE room_id = ? AND event_id = ?`),
				r.min, r.max, ts, roomID, p); err != nil {
				return fmt.Errorf("update backward extremity %s: %w", p, err)
			}
		}
	}
	if err := s.insertRows(ctx, tx, "backward_extremities",
		[]string{"room_id", "event_id", "first_seen", "min_child_depth", "max_child_depth", "max_child_ts"},
		len(added), func(i int, args []any) []any {
			r := children[added[i]]
			return append(args, roomID, added[i], now, r.min, r.max, childTS[added[i]])
		}); err != nil {
		return fmt.Errorf("add backward extremities: %w", err)
	}
	room.backward += int64(len(added))
	return nil
}

func eventIDs(events []Event) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

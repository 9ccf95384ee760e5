package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// undoEventKeys takes a store back to the schema before integerEventKeys, as a roomsync of
// that time left it: events keyed by their ID, every edge in event_edges by the prev's ID,
// the migration unrecorded. The tests of older migrations start from there.
func undoEventKeys(tb testing.TB, s *sqlStore) {
	tb.Helper()
	stmts := []string{
		`CREATE TABLE events_by_id (
			event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, depth BIGINT NOT NULL,
			origin_server_ts BIGINT NOT NULL, type TEXT NOT NULL, state_key TEXT, sender TEXT NOT NULL,
			origin TEXT NOT NULL, prev_events TEXT NOT NULL, raw {{BLOB}} NOT NULL, redacted BOOLEAN NOT NULL,
			received_at BIGINT NOT NULL, state_before BIGINT, state_after BIGINT,
			rejected TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL DEFAULT 0)`,
		`INSERT INTO events_by_id SELECT event_id, room_id, depth, origin_server_ts, type, state_key, sender,
			origin, prev_events, raw, redacted, received_at, state_before, state_after, rejected, seq FROM events`,
		`CREATE TABLE event_edges_by_id (room_id TEXT NOT NULL, prev_event_id TEXT NOT NULL, event_id TEXT NOT NULL,
			PRIMARY KEY (room_id, prev_event_id, event_id)){{WITHOUT_ROWID}}`,
		`INSERT INTO event_edges_by_id SELECT g.room_id, p.event_id, g.event_id FROM event_edges g
			JOIN events p ON p.event_nid = g.prev_nid`,
		`INSERT INTO event_edges_by_id SELECT room_id, prev_event_id, event_id FROM gap_edges`,
		`DROP TABLE events`,
		`DROP TABLE event_edges`,
		`DROP TABLE gap_edges`,
		`ALTER TABLE events_by_id RENAME TO events`,
		`ALTER TABLE event_edges_by_id RENAME TO event_edges`,
		`CREATE INDEX events_room_depth ON events (room_id, depth, event_id)`,
		`CREATE INDEX events_room_redacted ON events (room_id, redacted, depth, event_id)`,
		`CREATE INDEX events_room_without_state ON events (room_id, depth, event_id) WHERE state_before IS NULL`,
		`CREATE UNIQUE INDEX events_room_seq ON events (room_id, seq)`,
		`DELETE FROM schema_migrations WHERE version >= 9`,
	}
	for _, q := range stmts {
		if _, err := s.wdb.ExecContext(context.Background(), s.d.ddl(q)); err != nil {
			tb.Fatalf("take the store back before integer event keys: %s: %v", q, err)
		}
	}
}

// TestEventKeysMigration: a store from before integer event keys keeps all it held when it is
// opened: every column of every event, the edges (split between held prevs and gaps), the
// extremities, counters and state rows; the rooms check clean; the events are keyed in
// arrival order room by room; and inserts go on from there, filling the gaps.
func TestEventKeysMigration(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			u := b.newURL(t)
			s := openTest(t, u)
			events := forkyDAG(room, 500, 120, 21)
			var held, missing []Event
			for i, e := range events {
				if i%37 == 5 {
					missing = append(missing, e)
				} else {
					held = append(held, e)
				}
			}
			// Newest first, a backfill answer at a time, with a redacted copy among them.
			for end := len(held); end > 0; end -= 90 {
				batch := slices.Clone(held[max(0, end-90):end])
				if end == len(held) {
					batch[3].Redacted = true
				}
				mustInsert(t, s, batch)
			}
			first, err := s.AllocateStateGroups(ctx, room, 1)
			if err != nil {
				t.Fatal(err)
			}
			var states []EventState
			for i, e := range held[:100] {
				states = append(states, EventState{EventID: e.ID, Before: first, After: first})
				if i == 40 {
					states[i].Rejected = "auth_events: a test"
				}
			}
			group := StateGroup{No: first, Entries: map[StateKey]string{{Type: "m.room.create"}: events[0].ID}}
			if err := s.SaveState(ctx, room, []StateGroup{group}, states); err != nil {
				t.Fatal(err)
			}
			if _, err := s.InsertEvents(ctx, otherRoom, newDAG(otherRoom, 64, 5).grow(60, 0.17, 0.2)); err != nil {
				t.Fatal(err)
			}
			before := keysSnapshot(t, s)
			undoEventKeys(t, s)
			s.Close()

			start := time.Now()
			s = openTest(t, u)
			t.Logf("migrated %d events in %v", len(held)+60, time.Since(start))
			if after := keysSnapshot(t, s); after != before {
				t.Fatalf("the migration changed the store:\n%s", firstDifference(before, after))
			}
			for _, r := range []string{room, otherRoom} {
				if problems, err := CheckRoom(ctx, s, r); err != nil || len(problems) > 0 {
					t.Fatalf("%s after the migration: %q, %v", r, problems, err)
				}
			}
			rows, err := s.db.QueryContext(ctx, `SELECT room_id, seq, event_nid FROM events ORDER BY event_nid`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			last := map[string]int64{}
			for rows.Next() {
				var r string
				var seq, nid int64
				if err := rows.Scan(&r, &seq, &nid); err != nil {
					t.Fatal(err)
				}
				if seq <= last[r] {
					t.Fatalf("event %d of %s has arrival number %d after %d: keys not in arrival order", nid, r, seq, last[r])
				}
				last[r] = seq
			}
			mustInsert(t, s, missing)
			all := newModel()
			all.add(events...)
			checkAgainstModel(t, s, room, all)
		})
	}
}

// otherRoom is the second room of TestEventKeysMigration's store.
const otherRoom = "!other:example.org"

// keysSnapshot renders what the migration must keep, free of the event keys it hands out:
// every event column but the key, the edges as (event, prev) ID pairs with their table's
// kind, and every other table a room's DAG and state live in.
func keysSnapshot(t *testing.T, s *sqlStore) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT event_id, room_id, depth, origin_server_ts, type, state_key, sender, origin, prev_events, raw,
			redacted, received_at, state_before, state_after, rejected, seq FROM events ORDER BY event_id`,
		`SELECT 'held', g.room_id, g.event_id, p.event_id FROM event_edges g JOIN events p ON p.event_nid = g.prev_nid
		UNION ALL SELECT 'gap', room_id, event_id, prev_event_id FROM gap_edges ORDER BY 1, 2, 3, 4`,
		`SELECT * FROM rooms ORDER BY room_id`,
		`SELECT * FROM forward_extremities ORDER BY room_id, event_id`,
		`SELECT * FROM backward_extremities ORDER BY room_id, event_id`,
		`SELECT * FROM state_groups ORDER BY room_id, group_no`,
		`SELECT * FROM state_entries ORDER BY room_id, group_no, type, state_key`,
	} {
		rows, err := s.db.QueryContext(t.Context(), q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if raw, ok := v.([]byte); ok {
					v = string(raw)
				}
				fmt.Fprintf(&b, " %v", v)
			}
			b.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

// firstDifference shows the first line where two snapshots differ.
func firstDifference(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines, then %d", len(la), len(lb))
}

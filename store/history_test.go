package store

import (
	"context"
	"testing"
)

// TestChildTimestamps checks the newest-child timestamp kept for each backward extremity (what
// a history bounded by time compares against), on both backends, through inserts that widen
// it, and through the schema migration that adds it to an existing store.
func TestChildTimestamps(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			url := b.newURL(t)

			// A store at schema version 1, with a hole, as an older roomsync left it: written
			// now, then taken back to version 1 (the column dropped, the migration unrecorded).
			s, err := Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			old := makeEvent("!r", "$old", 10, []string{"$hole1"}, 16)
			old.OriginServerTS = 1_000
			if _, err := s.InsertEvents(ctx, "!r", []Event{old}); err != nil {
				t.Fatal(err)
			}
			undoEventKeys(t, s.(*sqlStore))
			for _, stmt := range []string{
				`ALTER TABLE backward_extremities DROP COLUMN max_child_ts`,
				`DROP TABLE server_keys`,
				`DROP TABLE memberships`,
				`DROP INDEX events_room_redacted`,
				`DROP INDEX events_room_without_state`,
				`ALTER TABLE events DROP COLUMN state_before`,
				`ALTER TABLE events DROP COLUMN state_after`,
				`ALTER TABLE events DROP COLUMN rejected`,
				`ALTER TABLE rooms DROP COLUMN rejected_count`,
				`ALTER TABLE rooms DROP COLUMN state_group_seq`,
				`DROP TABLE state_groups`,
				`DROP TABLE state_entries`,
				`DROP TABLE boundary_states`,
				`DROP TABLE server_key_responses`,
				`DROP TABLE gap_attempts`,
				`DROP INDEX events_room_seq`,
				`ALTER TABLE events DROP COLUMN seq`,
				`ALTER TABLE rooms DROP COLUMN event_seq`,
				`DELETE FROM schema_migrations WHERE version >= 2`,
			} {
				if _, err := s.(*sqlStore).wdb.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			_ = s.Close()

			s, err = Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.CheckConsistency(ctx, "!r"); err != nil {
				t.Fatalf("after migration: %v", err)
			}
			a := makeEvent("!r", "$a", 20, []string{"$hole2"}, 16)
			a.OriginServerTS = 5_000
			c := makeEvent("!r", "$c", 21, []string{"$hole1"}, 16)
			c.OriginServerTS = 7_000
			if _, err := s.InsertEvents(ctx, "!r", []Event{a, c}); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckConsistency(ctx, "!r"); err != nil {
				t.Fatal(err)
			}
			all, err := s.BackwardExtremities(ctx, "!r", BackwardFilter{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, e := range all {
				got[e.EventID] = e.MaxChildTS
			}
			if got["$hole1"] != 7_000 || got["$hole2"] != 5_000 {
				t.Errorf("child timestamps %v, want $hole1 7000 (widened past the migrated 1000), $hole2 5000", got)
			}
			recent, err := s.BackwardExtremities(ctx, "!r", BackwardFilter{ChildTSAtLeast: 6_000})
			if err != nil {
				t.Fatal(err)
			}
			if len(recent) != 1 || recent[0].EventID != "$hole1" {
				t.Errorf("ChildTSAtLeast 6000 selected %+v, want $hole1 only", recent)
			}
		})
	}
}

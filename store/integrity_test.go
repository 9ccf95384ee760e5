package store

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/internal/storetest"
)

// TestCheckDatabase: a fresh store passes; a dropped table, a dropped index and events whose
// room row is gone are each reported, on both backends.
func TestCheckDatabase(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range []struct {
				name, damage string
				check        func(t *testing.T, c DatabaseCheck)
			}{
				{"sound", "", func(t *testing.T, c DatabaseCheck) {
					if !c.OK() || c.SchemaVersion != migrations[len(migrations)-1].version || c.Method == "" {
						t.Errorf("a sound store: %+v", c)
					}
				}},
				{"events dropped", "DROP TABLE events", func(t *testing.T, c DatabaseCheck) {
					if !slices.Equal(c.MissingTables, []string{"events"}) || !slices.Contains(c.Schema, "table events is missing") {
						t.Errorf("events dropped: %+v", c)
					}
					// Its indexes went with it: only the table is reported.
					for _, p := range c.Schema {
						if strings.Contains(p, "index") {
							t.Errorf("an index of a missing table reported: %q", p)
						}
					}
				}},
				{"index dropped", "DROP INDEX events_room_seq", func(t *testing.T, c DatabaseCheck) {
					if len(c.MissingTables) > 0 || !slices.Contains(c.Schema, "index events_room_seq on events is missing") {
						t.Errorf("index dropped: %+v", c)
					}
				}},
				{"room row lost", "DELETE FROM rooms", func(t *testing.T, c DatabaseCheck) {
					if !slices.Equal(c.OrphanRooms, []string{room}) || c.OK() {
						t.Errorf("room row lost: %+v", c)
					}
				}},
			} {
				t.Run(c.name, func(t *testing.T) {
					s := openTest(t, b.newURL(t))
					mustInsert(t, s, linearChain(room, 20, 100))
					if c.damage != "" {
						execSQL(t, s, c.damage)
					}
					got, err := CheckDatabase(t.Context(), s, false)
					if err != nil {
						t.Fatal(err)
					}
					c.check(t, got)
				})
			}
		})
	}
}

// TestCheckDatabaseFindsDamagedPages: garbage written over a page of the events table while
// the store is closed is found by quick_check and by integrity_check.
func TestCheckDatabaseFindsDamagedPages(t *testing.T) {
	path := strings.TrimPrefix(sqliteTestURL(t), "sqlite://")
	s := openTest(t, "sqlite://"+path)
	mustInsert(t, s, linearChain(room, 300, 1000))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	storetest.DamageSQLitePage(t, path, "events")

	ro, err := OpenReadOnly(t.Context(), "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, thorough := range []bool{false, true} {
		c, err := CheckDatabase(t.Context(), ro, thorough)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Damaged) == 0 {
			t.Errorf("thorough=%t: no damage found: %+v", thorough, c)
		}
		t.Logf("%s: %q", c.Method, c.Damaged)
	}
}

// TestCheckRoomCounters: counters that agree pass; rows deleted behind the store's back, and
// extremities naming the wrong events, are reported; a missing room is ErrNotFound.
func TestCheckRoomCounters(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			chain := linearChain(room, 40, 100)
			for _, c := range []struct {
				name, damage string
				want         []string
			}{
				{"sound", "", nil},
				{"rows deleted", `DELETE FROM events WHERE depth > 30`, []string{
					"event count is 30, the rows say 20", "max depth is 40, the rows say 30",
					"1 forward extremities are events the store does not hold"}},
				{"gap held", `INSERT INTO backward_extremities (room_id, event_id, first_seen, min_child_depth, max_child_depth)
					VALUES ('` + room + `', '` + chain[20].ID + `', 0, 1, 1)`, []string{
					"backward extremity count is 1, the rows say 2", "1 backward extremities are events the store holds"}},
				{"number reused", `UPDATE rooms SET event_seq = 3`, []string{"the last arrival number is 3, the rows say 30"}},
				{"redacted", `UPDATE events SET redacted = TRUE WHERE depth = 20`, []string{"redacted count is 0, the rows say 1"}},
			} {
				t.Run(c.name, func(t *testing.T) {
					s := openTest(t, b.newURL(t))
					mustInsert(t, s, chain[10:])
					if c.damage != "" {
						execSQL(t, s, c.damage)
					}
					got, err := CheckRoomCounters(t.Context(), s, room)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got, c.want) {
						t.Errorf("problems %q, want %q", got, c.want)
					}
					if all, err := CheckRoom(t.Context(), s, room); err != nil || (len(all) == 0) != (len(c.want) == 0) {
						t.Errorf("CheckRoom = %q, %v", all, err)
					}
				})
			}
			s := openTest(t, b.newURL(t))
			if _, err := CheckRoomCounters(context.Background(), s, "!nowhere:example.org"); err == nil {
				t.Error("a missing room: no error")
			}
		})
	}
}

// TestQuickCheck reports each damaged room under its ID and leaves the sound ones out; a
// dropped table is damage to every room.
func TestQuickCheck(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			other := "!other:example.org"
			mustInsert(t, s, linearChain(room, 30, 100))
			if _, err := s.InsertEvents(t.Context(), other, newDAG(other, 100, 7).grow(30, 0, 0)); err != nil {
				t.Fatal(err)
			}
			d, err := QuickCheck(t.Context(), s)
			if err != nil || !d.None() || len(d.Unchecked) > 0 {
				t.Fatalf("a sound store: %+v, %v", d, err)
			}
			execSQL(t, s, `DELETE FROM events WHERE room_id = '`+room+`' AND depth > 10`)
			d, err = QuickCheck(t.Context(), s)
			if err != nil || d.None() || len(d.Of(room)) == 0 || len(d.Of(other)) != 0 {
				t.Fatalf("one room damaged: %+v, %v", d, err)
			}
			execSQL(t, s, `DROP TABLE events`)
			d, err = QuickCheck(t.Context(), s)
			if err != nil || len(d.Of(other)) == 0 || !strings.Contains(strings.Join(d.Database, "\n"), "table events is missing") {
				t.Fatalf("events dropped: %+v, %v", d, err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if d, err := QuickCheck(ctx, s); err != nil || !d.None() || d.Unchecked[""] == "" {
				t.Fatalf("out of time: %+v, %v; want the database unchecked, not damaged", d, err)
			}
		})
	}
}

package store

import (
	"strings"
	"testing"
)

// TestCheckConsistencyFindsDamage damages a consistent store in each way the checker must
// notice, straight through SQL, and expects each to be reported.
func TestCheckConsistencyFindsDamage(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			chain := linearChain(room, 30, 100)
			for _, c := range []struct {
				name, damage, want string
			}{
				{"lost forward extremity", `DELETE FROM forward_extremities`, "forward extremities missing"},
				{"stale forward extremity", `INSERT INTO forward_extremities (room_id, event_id) VALUES ('` + room + `', '` + chain[15].ID + `')`,
					"forward extremities that should not be"},
				{"lost backward extremity", `DELETE FROM backward_extremities`, "backward extremities missing"},
				{"wrong child depth", `UPDATE backward_extremities SET max_child_depth = 99`, "wrong depths"},
				{"lost edge", `DELETE FROM event_edges WHERE event_id = '` + chain[20].ID + `'`, "edges disagree"},
				{"edge to a held event kept as a gap's", `INSERT INTO gap_edges (room_id, prev_event_id, event_id)
					VALUES ('` + room + `', '` + chain[19].ID + `', '` + chain[20].ID + `');
					DELETE FROM event_edges WHERE event_id = '` + chain[20].ID + `'`, "name a held event as missing"},
				{"edge to a key not held", `UPDATE event_edges SET prev_nid = prev_nid + 1000000 WHERE event_id = '` + chain[20].ID + `'`,
					"name by key a prev event the room does not hold"},
				{"edge of a gap lost", `DELETE FROM gap_edges`, "backward extremities that should not be"},
				{"wrong event count", `UPDATE rooms SET event_count = 7`, "event count is 7"},
				{"wrong unfillable count", `UPDATE rooms SET unfillable_count = 1`, "unfillable extremity count is 1"},
			} {
				t.Run(c.name, func(t *testing.T) {
					s := openTest(t, b.newURL(t))
					mustInsert(t, s, chain[10:])
					if err := s.CheckConsistency(t.Context(), room); err != nil {
						t.Fatalf("before the damage: %v", err)
					}
					for _, q := range strings.Split(c.damage, ";") {
						if _, err := s.wdb.ExecContext(t.Context(), q); err != nil {
							t.Fatal(err)
						}
					}
					err := s.CheckConsistency(t.Context(), room)
					if err == nil || !strings.Contains(err.Error(), c.want) {
						t.Fatalf("CheckConsistency = %v, want a report of %q", err, c.want)
					}
				})
			}
		})
	}
}

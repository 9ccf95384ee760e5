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
				{"wrong event count", `UPDATE rooms SET event_count = 7`, "event count is 7"},
				{"wrong unfillable count", `UPDATE rooms SET unfillable_count = 1`, "unfillable extremity count is 1"},
			} {
				t.Run(c.name, func(t *testing.T) {
					s := openTest(t, b.newURL(t))
					mustInsert(t, s, chain[10:])
					if err := s.CheckConsistency(t.Context(), room); err != nil {
						t.Fatalf("before the damage: %v", err)
					}
					if _, err := s.wdb.ExecContext(t.Context(), c.damage); err != nil {
						t.Fatal(err)
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

package store

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// growingTables are the tables whose rows grow with a room's history: a statement of a sync
// pass must reach them through an index, and never read all of a room's rows. (gap_edges,
// like the extremity tables, grows with the room's gaps only.)
var growingTables = []string{"events", "event_edges", "state_groups", "state_entries"}

// TestPassQueryPlans runs what a sync pass asks of the store (inserts in both orders with
// gaps, duplicates and an upgrade; the extremity, gap, state, membership and key reads and
// writes) on each backend, records every distinct statement, and explains each with the
// arguments it ran with. It fails on a statement that scans a growing table: on SQLite a
// SCAN of one, or a SEARCH bounded by the room alone without a LIMIT (all of a room's rows);
// on PostgreSQL, with sequential scans disabled, a Seq Scan of one or an index scan without
// an index condition.
func TestPassQueryPlans(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			rec := &recorder{}
			s := openRecording(t, b.newURL(t), rec)
			passWorkload(t, s)
			explained := 0
			for _, st := range rec.statements() {
				if !isDML(st.query) {
					continue
				}
				explained++
				var problems []string
				if s.d == sqliteDialect {
					problems = sqlitePlanProblems(t, s, st)
				} else {
					problems = postgresPlanProblems(t, s, st)
				}
				for _, p := range problems {
					t.Errorf("%s\n  in %s", p, oneLine(st.query))
				}
			}
			if explained < 40 {
				t.Fatalf("only %d statements explained: the workload no longer runs what a pass does", explained)
			}
			t.Logf("%d statements explained", explained)
		})
	}
}

// TestPlanChecksCatchScans: the checks of TestPassQueryPlans report statements that read a
// whole room or table, on each backend.
func TestPlanChecksCatchScans(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := openTest(t, b.newURL(t))
			mustInsert(t, s, forkyDAG(room, 50, 100, 3))
			for _, q := range []string{
				`SELECT COUNT(*) FROM events WHERE room_id = ?`,
				`SELECT g.prev_nid FROM event_edges g WHERE g.event_id = ?`,
				`SELECT e.event_id FROM events e JOIN event_edges g ON g.event_id = e.event_id WHERE e.origin = ?`,
			} {
				st := recordedStatement{s.d.rebind(q), []any{room}}
				problems := sqlitePlanProblems
				if s.d == postgresDialect {
					problems = postgresPlanProblems
				}
				if p := problems(t, s, st); len(p) == 0 {
					t.Errorf("no problem found in %s", q)
				}
			}
		})
	}
}

// passWorkload calls the store as sync passes do, over a forked room of 1,200 events with gaps.
func passWorkload(t *testing.T, s *sqlStore) {
	t.Helper()
	ctx := t.Context()
	events := forkyDAG(room, 1200, 200, 11)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.EnsureRoom(ctx, room, "10", events[0].ID))
	// The newest events first, then older ones a backfill answer at a time, leaving gaps,
	// then a live batch, duplicates, and a redacted copy completed later.
	for _, batch := range batches(events[900:1100], 60, 1) {
		mustInsert(t, s, batch)
	}
	for end := 900; end > 100; end -= 100 {
		mustInsert(t, s, events[end-95:end])
	}
	mustInsert(t, s, events[1100:])
	mustInsert(t, s, events[1000:1050])
	redacted := events[50]
	redacted.Redacted = true
	mustInsert(t, s, []Event{redacted})
	mustInsert(t, s, []Event{events[50], events[51]})

	_, err := s.Room(ctx, room)
	must(err)
	_, err = s.ForwardExtremities(ctx, room)
	must(err)
	now := time.Now()
	gaps, err := s.BackwardExtremities(ctx, room, BackwardFilter{DueBy: now, SkipUnfillable: true, Limit: 5})
	must(err)
	if len(gaps) < 2 {
		t.Fatalf("the workload left %d gaps, want some", len(gaps))
	}
	for _, f := range []BackwardFilter{{}, {DueBy: now, StaleBefore: now.Add(-time.Hour), Limit: 5},
		{ChildDepthAtLeast: 10, ChildTSAtLeast: 1, Limit: 5}} {
		_, err = s.BackwardExtremities(ctx, room, f)
		must(err)
	}
	peers := []PeerAttempt{{Peer: "a.example", Endpoint: "backfill", Outcome: "not_found"}}
	must(s.RecordAttemptFailure(ctx, room, gaps[0].EventID, "not found", now.Add(time.Minute), peers...))
	must(s.MarkUnfillable(ctx, room, gaps[1].EventID, "nobody has it", now.Add(time.Hour), peers...))
	_, err = s.GapAttempts(ctx, room, []string{gaps[0].EventID, gaps[1].EventID})
	must(err)
	_, err = s.ReferencingEvents(ctx, room, []string{gaps[0].EventID, events[10].ID}, 5)
	must(err)
	ids := eventIDs(events[500:600])
	_, err = s.HasEvents(ctx, ids)
	must(err)
	_, err = s.Events(ctx, ids)
	must(err)
	_, err = s.EventsInDepthRange(ctx, room, 10, 40, 50)
	must(err)

	// State: the first page of what lacks it, computed and saved; a boundary state.
	page, err := s.EventsWithoutState(ctx, room, nil, 100)
	must(err)
	last := page[len(page)-1].Position()
	_, err = s.EventsWithoutState(ctx, room, &last, 100)
	must(err)
	first, err := s.AllocateStateGroups(ctx, room, 3)
	must(err)
	whole := StateGroup{No: first, Entries: map[StateKey]string{{Type: "m.room.create"}: events[0].ID}}
	delta := StateGroup{No: first + 1, PrevGroup: first, Chain: 1,
		Entries: map[StateKey]string{{Type: "m.room.name"}: events[1].ID}}
	var states []EventState
	for i, e := range page {
		states = append(states, EventState{EventID: e.ID, Before: first, After: first + int64(i%2)})
	}
	must(s.SaveState(ctx, room, []StateGroup{whole, delta}, states))
	_, err = s.StateGroup(ctx, room, first+1)
	must(err)
	_, err = s.EventStates(ctx, ids)
	must(err)
	boundary := StateGroup{No: first + 2, Entries: map[StateKey]string{{Type: "m.room.create"}: events[0].ID}}
	must(s.SaveBoundaryState(ctx, room, gaps[0].EventID, boundary, "a.example"))
	_, err = s.BoundaryStates(ctx, room)
	must(err)

	must(s.SetMembership(ctx, Membership{RoomID: room, UserID: "@roomsync:b.example", State: MembershipJoined}))
	_, err = s.Membership(ctx, room, "@roomsync:b.example")
	must(err)
	_, err = s.RedactedEvents(ctx, room, nil, 50)
	must(err)
	must(s.SaveServerKeys(ctx, []ServerKey{{ServerName: "a.example", KeyID: "ed25519:a", Key: "k", ValidUntil: now}}))
	_, err = s.ServerKeys(ctx, "a.example")
	must(err)
	must(s.SaveServerKeyResponse(ctx, ServerKeyResponse{ServerName: "a.example", KeyIDs: []string{"ed25519:a"},
		Raw: []byte(`{}`), ValidUntil: now}))
	_, err = s.ServerKeyResponses(ctx, "a.example")
	must(err)
}

func isDML(q string) bool {
	head := strings.ToUpper(strings.Fields(q)[0])
	return head == "SELECT" || head == "INSERT" || head == "UPDATE" || head == "DELETE" || head == "WITH"
}

func oneLine(q string) string { return strings.Join(strings.Fields(q), " ") }

// sqlitePlanProblems explains st with EXPLAIN QUERY PLAN and reports its scans of growing
// tables, under their names or aliases.
func sqlitePlanProblems(t *testing.T, s *sqlStore, st recordedStatement) []string {
	t.Helper()
	rows, err := s.wdb.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+st.query, st.args...)
	if err != nil {
		t.Fatalf("explain %s: %v", oneLine(st.query), err)
	}
	defer rows.Close()
	names := growingNames(st.query)
	limited := strings.Contains(strings.ToUpper(st.query), "LIMIT")
	var problems []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(detail)
		if len(fields) < 2 || !names[fields[1]] {
			continue
		}
		switch {
		case fields[0] == "SCAN":
			problems = append(problems, "full scan: "+detail)
		case fields[0] == "SEARCH" && strings.HasSuffix(detail, "(room_id=?)") && !limited:
			problems = append(problems, "all of a room's rows, without a limit: "+detail)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return problems
}

// tableAlias matches a growing table named in a statement, with the alias that follows it.
var tableAlias = regexp.MustCompile(`\b(` + strings.Join(growingTables, "|") + `)\b(?:\s+(?:AS\s+)?([a-z]\w*))?`)

// growingNames are the names the statement gives growing tables: theirs and their aliases.
func growingNames(q string) map[string]bool {
	names := map[string]bool{}
	for _, m := range tableAlias.FindAllStringSubmatch(q, -1) {
		names[m[1]] = true
		if m[2] != "" && !sqlWords[strings.ToUpper(m[2])] {
			names[m[2]] = true
		}
	}
	return names
}

// sqlWords may follow a table name without being its alias.
var sqlWords = map[string]bool{"WHERE": true, "JOIN": true, "ON": true, "SET": true, "USING": true,
	"VALUES": true, "LEFT": true, "INNER": true, "GROUP": true, "ORDER": true, "LIMIT": true, "AND": true}

// postgresPlanProblems explains st with sequential scans disabled, so that one shows only
// where no index serves, and reports reads of all of a growing table (a Seq Scan, or an
// index scan whose condition leaves the index's first column free) or of all of a room's
// rows in one (a condition on room_id alone, with no Limit above).
func postgresPlanProblems(t *testing.T, s *sqlStore, st recordedStatement) []string {
	t.Helper()
	ctx := t.Context()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // only explained
	if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	indexes := map[string][2]string{} // index → table, first column
	rows, err := tx.QueryContext(ctx, `SELECT c.relname, t.relname, a.attname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var index, table, column string
		if err := rows.Scan(&index, &table, &column); err != nil {
			t.Fatal(err)
		}
		indexes[index] = [2]string{table, column}
	}
	rows.Close()
	var out []byte
	if err := tx.QueryRowContext(ctx, "EXPLAIN (FORMAT JSON) "+st.query, st.args...).Scan(&out); err != nil {
		t.Fatalf("explain %s: %v", oneLine(st.query), err)
	}
	var plans []struct{ Plan pgPlan }
	if err := json.Unmarshal(out, &plans); err != nil {
		t.Fatal(err)
	}
	var problems []string
	for _, p := range plans {
		p.Plan.walk(false, func(n pgPlan, limited bool) {
			table, first := n.Relation, ""
			if n.Index != "" {
				table, first = indexes[n.Index][0], indexes[n.Index][1]
			}
			if !slices.Contains(growingTables, table) {
				return
			}
			bound := condColumns.FindAllStringSubmatch(n.IndexCond, -1)
			columns := map[string]bool{}
			for _, m := range bound {
				columns[m[1]] = true
			}
			switch {
			case n.NodeType == "Seq Scan":
				problems = append(problems, "Seq Scan on "+table)
			case n.Index == "":
			case !columns[first]:
				problems = append(problems, fmt.Sprintf("%s of all of %s (%s)", n.NodeType, n.Index, n.IndexCond))
			case len(columns) == 1 && first == "room_id" && !limited:
				problems = append(problems, fmt.Sprintf("%s of a whole room on %s (%s), without a limit", n.NodeType, n.Index, n.IndexCond))
			}
		})
	}
	return problems
}

// condColumns finds the columns an index condition bounds: "(room_id = $1)", "(depth >= $2)".
var condColumns = regexp.MustCompile(`\(?(\w+) (?:=|<|>|<=|>=) `)

// pgPlan is a node of PostgreSQL's EXPLAIN (FORMAT JSON).
type pgPlan struct {
	NodeType  string   `json:"Node Type"`
	Relation  string   `json:"Relation Name"`
	Index     string   `json:"Index Name"`
	IndexCond string   `json:"Index Cond"`
	Plans     []pgPlan `json:"Plans"`
}

// walk calls fn with each node and whether a Limit is above it.
func (p pgPlan) walk(limited bool, fn func(n pgPlan, limited bool)) {
	fn(p, limited)
	for _, c := range p.Plans {
		c.walk(limited || p.NodeType == "Limit", fn)
	}
}

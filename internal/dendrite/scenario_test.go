package dendrite

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestPlanRounds(t *testing.T) {
	plan := planRounds(60, 3, 7)
	if len(plan) != 60 {
		t.Fatalf("%d rounds planned, want 60", len(plan))
	}
	if again := planRounds(60, 3, 7); !reflect.DeepEqual(plan, again) {
		t.Error("the same seed planned two different schedules")
	}
	if other := planRounds(60, 3, 8); reflect.DeepEqual(plan, other) {
		t.Error("seeds 7 and 8 planned the same schedule")
	}
	// Every block of numActions rounds holds each action once.
	for start := 0; start+int(numActions) <= len(plan); start += int(numActions) {
		seen := map[action]bool{}
		for _, r := range plan[start : start+int(numActions)] {
			seen[r.Action] = true
		}
		if len(seen) != int(numActions) {
			t.Errorf("rounds %d-%d hold %d kinds of change, want %d", start, start+int(numActions)-1, len(seen), numActions)
		}
	}
	toggles := []int{}
	for i, r := range plan {
		for s, tg := range r.Target {
			if tg < 0 || tg >= 3 {
				t.Errorf("round %d: target %d of server %d out of range", i, tg, s)
			}
		}
		if r.Action == actRules {
			toggles = append(toggles, r.Toggler)
		}
	}
	for i, tg := range toggles {
		if tg != i%2 {
			t.Errorf("join rule toggles by server %v, want them to alternate from A", toggles)
			break
		}
	}
	if got := planRounds(0, 3, 1); len(got) != 0 {
		t.Errorf("planRounds(0) = %v", got)
	}
	if got := planRounds(-1, 3, 1); len(got) != 0 {
		t.Errorf("planRounds(-1) = %v", got)
	}
}

func TestNextRuleAndHistory(t *testing.T) {
	if nextJoinRule("public") != "invite" || nextJoinRule("invite") != "public" {
		t.Error("the join rule does not toggle between public and invite")
	}
	h := "shared"
	var cycle []string
	for range 4 {
		h = nextHistory(h)
		cycle = append(cycle, h)
	}
	if want := []string{"joined", "invited", "shared", "joined"}; !reflect.DeepEqual(cycle, want) {
		t.Errorf("history visibility after shared: %v, want %v", cycle, want)
	}
	if nextHistory("world_readable") != "shared" {
		t.Error("an unknown visibility does not go back to shared")
	}
}

func TestPowerLevels(t *testing.T) {
	admins := [2]string{"@a-admin:a", "@b-admin:b"}
	users := []string{"@a-1:a", "@a-2:a", "@a-3:a"}
	seen := map[string]bool{}
	for r := range 202 {
		for side := range 2 {
			pl := powerLevels(r, side, admins, "@a-mod:a", users)
			levels := pl["users"].(map[string]int)
			if levels[admins[0]] != 100 || levels[admins[1]] != 100 || levels["@a-mod:a"] != 50 {
				t.Fatalf("round %d, side %d: admins or moderator moved: %v", r, side, levels)
			}
			for _, u := range users {
				if l := levels[u]; l < 0 || l >= pl["kick"].(int) {
					t.Fatalf("round %d: %s at %d, not below the kick level", r, u, l)
				}
			}
			events := pl["events"].(map[string]int)
			for typ, l := range events {
				if l < 0 || l > 100 {
					t.Fatalf("round %d: %s needs %d, beyond the admins' 100", r, typ, l)
				}
			}
			// Consecutive versions from one side differ, or Dendrite would send no event.
			key := fmt.Sprint(side, levels, events)
			if r < 101 && seen[key] {
				t.Fatalf("round %d, side %d repeats an earlier content", r, side)
			}
			seen[key] = true
		}
	}
	// Without a moderator (a server that has none), no empty user ID gets a level.
	if _, ok := powerLevels(1, 1, admins, "", nil)["users"].(map[string]int)[""]; ok {
		t.Error("an empty moderator got a level")
	}
}

func TestRaced(t *testing.T) {
	forbidden := fmt.Errorf("kick x: %w", &matrixError{Status: 403, ErrCode: "M_FORBIDDEN"})
	if !raced(forbidden) {
		t.Error("a wrapped 403 is not a refusal")
	}
	for _, err := range []error{nil, errors.New("connection refused"),
		&matrixError{Status: 500, ErrCode: "M_UNKNOWN"}, &matrixError{Status: 400, ErrCode: "M_BAD_JSON"}} {
		if raced(err) {
			t.Errorf("raced(%v) = true", err)
		}
	}
	notBanned := fmt.Errorf("unban: %w", &matrixError{Status: 400, ErrCode: "M_UNKNOWN", Message: "can only /unban users that are banned"})
	if !unbanRaced(notBanned) || unbanRaced(&matrixError{Status: 400, ErrCode: "M_BAD_JSON", Message: "missing user_id"}) {
		t.Error("unbanRaced does not tell an unban of an unbanned user from a bad request")
	}
}

func TestNoteCounts(t *testing.T) {
	bl := &builder{made: map[string]int{}, refused: map[string]int{}, logf: func(string, ...any) {}}
	if err := bl.note("kick", nil); err != nil {
		t.Fatal(err)
	}
	if err := bl.note("kick", &matrixError{Status: 403}); err != nil {
		t.Fatalf("a refusal stopped the build: %v", err)
	}
	if err := bl.note("join", &matrixError{Status: 502}); err == nil {
		t.Error("a 502 did not stop the build")
	}
	if bl.made["kick"] != 1 || bl.refused["kick"] != 1 || bl.made["join"]+bl.refused["join"] != 0 {
		t.Errorf("made %v, refused %v", bl.made, bl.refused)
	}
}

func TestMissingFromAndSample(t *testing.T) {
	a := map[string]string{"$1": "m.room.message", "$2": "m.room.member", "$3": "m.room.topic"}
	b := map[string]string{"$2": "m.room.member"}
	if got, want := missingFrom(a, b), []string{"$1 (m.room.message)", "$3 (m.room.topic)"}; !reflect.DeepEqual(got, want) {
		t.Errorf("missingFrom = %v, want %v", got, want)
	}
	if got := missingFrom(b, a); len(got) != 0 {
		t.Errorf("missingFrom(b, a) = %v", got)
	}
	if sample(nil) != "none" || sample([]string{"x"}) != "x" {
		t.Error("sample of a short list")
	}
	if got := sample([]string{"1", "2", "3", "4", "5", "6", "7"}); got != "1, 2, 3, 4, 5 and 2 more" {
		t.Errorf("sample = %q", got)
	}
}

func TestLocalpart(t *testing.T) {
	if got := localpart("@b-admin:127.0.0.1:8448"); got != "b-admin" {
		t.Errorf("localpart = %q", got)
	}
}

package resolver

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// TestPeerSetUnimplemented: a peer that answers that it has no such endpoint is not asked it
// for an hour, then is asked once more; an answer clears the mark, and an answer that is not
// about the endpoint ("not found", no answer at all) neither sets nor clears it.
func TestPeerSetUnimplemented(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	s := NewPeerSet([]string{"dendrite.test", "synapse.test"})
	s.now = func() time.Time { return clock }
	httpErr := func(status int, code string) error {
		e := mautrix.HTTPError{Response: &http.Response{StatusCode: status}}
		if code != "" {
			e.RespError = &mautrix.RespError{ErrCode: code, StatusCode: status}
		}
		return e
	}
	unrecognized := httpErr(http.StatusNotFound, "M_UNRECOGNIZED")
	const ts = "timestamp_to_event"

	steps := []struct {
		name    string
		peer    string
		err     error // recorded for peer at ts, unless noRecord
		advance time.Duration
		want    map[string]bool // Unimplemented(peer, ts) after the step
	}{
		{"nothing known: every peer is asked", "", nil, 0, map[string]bool{"dendrite.test": false, "synapse.test": false}},
		{"404 M_UNRECOGNIZED marks that peer only", "dendrite.test", unrecognized, 0, map[string]bool{"dendrite.test": true, "synapse.test": false}},
		{"404 M_NOT_FOUND is an answer about the room", "synapse.test", httpErr(http.StatusNotFound, "M_NOT_FOUND"), 0, map[string]bool{"dendrite.test": true, "synapse.test": false}},
		{"still marked 59 minutes on", "", nil, 59 * time.Minute, map[string]bool{"dendrite.test": true}},
		{"no answer says nothing either way", "dendrite.test", errors.New("dial tcp: connection refused"), 0, map[string]bool{"dendrite.test": true}},
		{"asked again after the hour", "", nil, time.Minute, map[string]bool{"dendrite.test": false}},
		{"the same answer: another hour", "dendrite.test", unrecognized, 0, map[string]bool{"dendrite.test": true}},
		{"another hour on", "", nil, time.Hour, map[string]bool{"dendrite.test": false}},
		{"upgraded: an answer clears the mark", "dendrite.test", nil, 0, map[string]bool{"dendrite.test": false}},
		{"and it stays asked", "", nil, 2 * time.Hour, map[string]bool{"dendrite.test": false}},
		{"unknown peers are ignored", "zzz", unrecognized, 0, map[string]bool{"zzz": false}},
	}
	for _, st := range steps {
		if st.peer != "" {
			s.RecordUnimplemented(st.peer, ts, st.err)
		}
		clock = clock.Add(st.advance)
		for peer, want := range st.want {
			if got := s.Unimplemented(peer, ts); got != want {
				t.Fatalf("%s: Unimplemented(%s, %s) = %v, want %v", st.name, peer, ts, got, want)
			}
		}
	}
	if s.Unimplemented("synapse.test", "make_join") || s.Unimplemented("dendrite.test", "make_join") {
		t.Error("a mark on timestamp_to_event holds for make_join too")
	}
}

package resolver

import "testing"

// The history visibility decision for a server already admitted to the room: what each
// visibility shows to a server whose users were joined, invited or absent at the event.
func TestVisibleTo(t *testing.T) {
	cases := []struct {
		visibility string
		absent     bool
		invited    bool
		joined     bool
	}{
		{visibilityWorldReadable, true, true, true},
		{visibilityShared, true, true, true},
		{visibilityInvited, false, true, true},
		{visibilityJoined, false, false, true},
		// Unknown values are shared, as Synapse and Dendrite read them.
		{"", true, true, true},
		{"members_only_please", true, true, true},
	}
	for _, tc := range cases {
		for m, want := range map[serverMembership]bool{serverAbsent: tc.absent, serverInvited: tc.invited, serverJoined: tc.joined} {
			if got := visibleTo(tc.visibility, m); got != want {
				t.Errorf("visibleTo(%q, %d) = %t, want %t", tc.visibility, m, got, want)
			}
		}
	}
}

package controllers

import (
	"strings"
	"testing"
	"time"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

func TestValidatePeerURL(t *testing.T) {
	cases := []struct {
		url     string
		wantErr string // empty: valid
	}{
		{"https://matrix.example.org", ""},
		{"https://matrix.example.org:8448", ""},
		{"https://matrix.example.org:8448/", ""},
		{"http://synapse.matrix.svc.cluster.local:8008", ""},
		{"https://127.0.0.1:8448", ""},
		{"https://[::1]:8448", ""},
		{"https://[::1:8448", "missing ']'"},
		{"https://exa mple.org", "invalid character"},
		{"https://", "has no host"},
		{"https://:8448", "has no host"},
		{"https://user:pw@example.org", "credentials"},
		{"https://example.org/?x=1", "query or fragment"},
		{"https://example.org/#frag", "query or fragment"},
		{"https://example.org:0", "out of range"},
		{"https://example.org:70000", "out of range"},
		{"ftp://example.org", "scheme must be https or http"},
	}
	for _, tc := range cases {
		err := validatePeerURL(tc.url)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("validatePeerURL(%q) = %v, want valid", tc.url, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("validatePeerURL(%q) accepted an invalid URL", tc.url)
		case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("validatePeerURL(%q) = %v, want it to mention %q", tc.url, err, tc.wantErr)
		}
	}
}

func TestValidateSpecReportsEveryBadPeer(t *testing.T) {
	spec := &roomsyncv1alpha1.RoomSyncSpec{Peers: []roomsyncv1alpha1.Peer{
		{ServerName: "a.example.org", URL: "https://exa mple.org"},
		{ServerName: "b.example.org"},
		{ServerName: "c.example.org", URL: "https://[::1"},
	}}
	err := validateSpec(spec)
	if err == nil {
		t.Fatal("validateSpec accepted two bad URLs")
	}
	for _, want := range []string{"spec.peers[0].url", "spec.peers[2].url", "a.example.org", "c.example.org"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "spec.peers[1]") {
		t.Errorf("error %q blames a peer without a URL", err)
	}
}

func TestJitterStaysWithinTenPercent(t *testing.T) {
	d := 5 * time.Minute
	for range 1000 {
		got := jitter(d)
		if got < d-d/10 || got > d+d/10 {
			t.Fatalf("jitter(%v) = %v, outside ±10%%", d, got)
		}
	}
	if jitter(0) != 0 {
		t.Error("jitter(0) != 0")
	}
}

func TestRoomStatusesFollowTheSpec(t *testing.T) {
	now := roomsyncv1alpha1.RoomStatus{ID: "!kept:x", Events: 42, Converged: true}
	got := roomStatusesForSpec(
		[]roomsyncv1alpha1.Room{{ID: "!new:x"}, {ID: "!kept:x"}},
		[]roomsyncv1alpha1.RoomStatus{{ID: "!gone:x", Events: 7}, now},
	)
	if len(got) != 2 || got[0].ID != "!new:x" || got[0].Events != 0 || got[1] != now {
		t.Errorf("roomStatusesForSpec = %+v", got)
	}
	s := summarize([]roomsyncv1alpha1.RoomStatus{
		{Events: 10, Gaps: 2, Unfillable: 1},
		{Events: 5, Converged: true},
	})
	want := roomsyncv1alpha1.Summary{Rooms: 2, ConvergedRooms: 1, Events: 15, Gaps: 2, Unfillable: 1}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
}

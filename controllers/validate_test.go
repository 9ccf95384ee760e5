package controllers

import (
	"reflect"
	"strings"
	"testing"
	"time"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

// The rules themselves are tested in api/v1alpha1 (rules_test.go), beside the CRD they mirror.
func TestValidateSpecReportsEveryProblem(t *testing.T) {
	spec := &roomsyncv1alpha1.RoomSyncSpec{
		Rooms: []roomsyncv1alpha1.Room{{ID: "!ok:example.org"}, {ID: "!bad\x01:example.org"}},
		Peers: []roomsyncv1alpha1.Peer{
			{ServerName: "a.example.org", URL: "https://exa mple.org"},
			{ServerName: "b.example.org"},
			{ServerName: "c.example.org", URL: "https://[::1"},
			{ServerName: "d.example.org:99999"},
			{ServerName: "e.example.org", URL: "http://e.example.org:8008", InsecureSkipTLSVerify: true},
			{ServerName: "f.example.org", InsecureSkipTLSVerify: true},
		},
	}
	err := validateSpec(spec)
	if err == nil {
		t.Fatal("validateSpec accepted a bad spec")
	}
	for _, want := range []string{
		"spec.rooms[1].id", `"!bad\x01:example.org"`,
		"spec.peers[0].url", "a.example.org", "spec.peers[2].url", "c.example.org",
		"spec.peers[3].serverName", "port must be at most 65535",
		"spec.peers[4] (peer e.example.org): " + roomsyncv1alpha1.InsecurePlainHTTPMessage,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	for _, clean := range []string{"spec.rooms[0]", "spec.peers[1]", "spec.peers[5]"} {
		if strings.Contains(err.Error(), clean) {
			t.Errorf("error %q blames %s, which is valid", err, clean)
		}
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
	if len(got) != 2 || got[0].ID != "!new:x" || got[0].Events != 0 || !reflect.DeepEqual(got[1], now) {
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

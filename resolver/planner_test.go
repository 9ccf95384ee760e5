package resolver_test

import (
	"context"
	"testing"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
)

// TestPlannerDecisions checks which requests a pass chooses for each situation, by counting
// what the fixture peer was asked. Each case syncs a first part of a linear room, then lets
// the peer grow (or fail) and runs one more pass.
func TestPlannerDecisions(t *testing.T) {
	cases := []struct {
		name      string
		events    int
		firstPart int // events the peer holds for the first sync; 0 skips it
		faults    []fixturepeer.Fault
		noTS      bool
		hist      resolver.History
		// want are exact request counts of the second pass, by endpoint; -1 means "any".
		want          map[fixturepeer.Endpoint]int64
		wantConverged bool
	}{
		{
			name: "fresh room: heads from make_join, the rest by backfill, no gme", events: 450,
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointEvent: 1,
				fixturepeer.EndpointMissingEvents: 0, fixturepeer.EndpointBackfill: 5,
			},
			wantConverged: true,
		},
		{
			name: "a few new events: /event for the head, one gme closes the gap", events: 320, firstPart: 310,
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointEvent: 1,
				fixturepeer.EndpointMissingEvents: 1, fixturepeer.EndpointBackfill: 0,
			},
			wantConverged: true,
		},
		{
			name: "a gap larger than the gme cap: gme, then backfill for the rest", events: 600, firstPart: 300,
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointEvent: 1,
				fixturepeer.EndpointMissingEvents: 1, fixturepeer.EndpointBackfill: 3,
			},
			wantConverged: true,
		},
		{
			name: "make_join refused: heads from timestamp_to_event", events: 250,
			faults: []fixturepeer.Fault{{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointMakeJoin, Status: 403, ErrCode: "M_FORBIDDEN"}},
			// The room version then comes from the create event among the head's auth events.
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointTimestampToEvent: 1, fixturepeer.EndpointBackfill: 3,
			},
			wantConverged: true,
		},
		{
			name: "history bound: backfill stops at minDepth", events: 1000, hist: resolver.History{MinDepth: 800},
			// /event: the head, then the event the history begins after, whose state
			// (/state) is where the room state begins.
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointEvent: 2, fixturepeer.EndpointBackfill: 2,
				fixturepeer.EndpointState: 1,
			},
			wantConverged: true,
		},
		{
			name: "nothing new: heads only", events: 200, firstPart: 200,
			want: map[fixturepeer.Endpoint]int64{
				fixturepeer.EndpointMakeJoin: 1, fixturepeer.EndpointEvent: 0,
				fixturepeer.EndpointMissingEvents: 0, fixturepeer.EndpointBackfill: 0,
			},
			wantConverged: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 40, Events: tc.events, Linear: true})
			opts := []fixturepeer.Option{}
			if tc.firstPart > 0 {
				opts = append(opts, fixturepeer.WithHold(fixturepeer.HoldIndexes(0, tc.firstPart)))
			}
			peer := fixturepeer.Start(t, room, opts...)
			h := newHarness(t, room, []*fixturepeer.Peer{peer})
			if tc.firstPart > 0 {
				if r, err := h.res.SyncRoom(context.Background(), string(room.ID), resolver.History{}); err != nil || !r.Converged {
					t.Fatalf("first sync: %+v, %v", r, err)
				}
				peer.SetHold(fixturepeer.HoldAll())
			}
			peer.SetFaults(tc.faults...)
			peer.ResetCounts()
			r, _ := h.res.SyncRoom(context.Background(), string(room.ID), tc.hist)
			for ep, want := range tc.want {
				if got := peer.Count(ep); got != want {
					t.Errorf("%s: %d requests, want %d (all: %v)", ep, got, want, peer.Counts())
				}
			}
			if r.Converged != tc.wantConverged {
				t.Errorf("converged = %t, want %t (%+v)", r.Converged, tc.wantConverged, r)
			}
		})
	}
}

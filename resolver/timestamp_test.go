package resolver_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
)

// TestTimestampToEventAskedOnceOfAPeerWithout: a peer refusing make_join is asked
// /timestamp_to_event for the room's newest event; a peer that answers that it has no such
// endpoint (Dendrite v0.13.8, for a room it does not hold: make_join 500, then 404
// M_UNRECOGNIZED) is not asked again at the next passes, of this room or another. In a soak
// run it was asked 3,528 times in ten minutes. A 404 M_NOT_FOUND ("no such room") is an
// answer of an endpoint the peer has, and is asked at every pass.
func TestTimestampToEventAskedOnceOfAPeerWithout(t *testing.T) {
	const passes = 6
	makeJoin500 := fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointMakeJoin, Status: http.StatusInternalServerError}
	tsFault := func(status int) fixturepeer.Option {
		return fixturepeer.WithFaults(fixturepeer.Fault{Kind: fixturepeer.FaultError, Endpoint: fixturepeer.EndpointTimestampToEvent, Status: status, ErrCode: "M_UNRECOGNIZED"})
	}
	cases := []struct {
		name     string
		opts     []fixturepeer.Option
		twoRooms bool // alternate the passes between two rooms the peer does not hold
		want     int64
	}{
		{"Dendrite v0.13.8: 404 M_UNRECOGNIZED", []fixturepeer.Option{fixturepeer.WithoutTimestampToEvent(), fixturepeer.WithFaults(makeJoin500)}, false, 1},
		{"one answer serves every room", []fixturepeer.Option{fixturepeer.WithoutTimestampToEvent(), fixturepeer.WithFaults(makeJoin500)}, true, 1},
		{"make_join 404 M_NOT_FOUND, then 404 M_UNRECOGNIZED", []fixturepeer.Option{fixturepeer.WithoutTimestampToEvent()}, false, 1},
		{"405 M_UNRECOGNIZED", []fixturepeer.Option{tsFault(http.StatusMethodNotAllowed)}, false, 1},
		{"older Synapse: 400 M_UNRECOGNIZED", []fixturepeer.Option{tsFault(http.StatusBadRequest)}, false, 1},
		{"404 M_NOT_FOUND is an answer: asked every pass", nil, false, passes},
	}
	held := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 61, Events: 20})
	rooms := []*fixturepeer.Room{
		fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 62, Events: 20}),
		fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 63, Events: 20}),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The peer holds another room: the synced rooms are unknown to it.
			peer := fixturepeer.Start(t, held, tc.opts...)
			h := newHarness(t, held, []*fixturepeer.Peer{peer})
			for i := range passes {
				room := rooms[0]
				if tc.twoRooms {
					room = rooms[i%2]
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				r, _ := h.res.SyncRoom(ctx, string(room.ID), resolver.History{})
				cancel()
				if r.PeersAnswered != 0 {
					t.Fatalf("pass %d: %+v; want no heads from a peer without the room", i+1, r)
				}
			}
			if n := peer.Count(fixturepeer.EndpointTimestampToEvent); n != tc.want {
				t.Errorf("timestamp_to_event asked %d times in %d passes, want %d (make_join %d)",
					n, passes, tc.want, peer.Count(fixturepeer.EndpointMakeJoin))
			}
		})
	}
}

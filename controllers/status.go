package controllers

import (
	"math"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
)

// roomStatusesForSpec returns one status entry per spec room, in spec order, keeping what was
// known of rooms that stay and dropping rooms no longer named.
func roomStatusesForSpec(rooms []roomsyncv1alpha1.Room, known []roomsyncv1alpha1.RoomStatus) []roomsyncv1alpha1.RoomStatus {
	byID := make(map[string]roomsyncv1alpha1.RoomStatus, len(known))
	for _, st := range known {
		byID[st.ID] = st
	}
	out := make([]roomsyncv1alpha1.RoomStatus, 0, len(rooms))
	for _, room := range rooms {
		st, ok := byID[room.ID]
		if !ok {
			st = roomsyncv1alpha1.RoomStatus{ID: room.ID}
		}
		out = append(out, st)
	}
	return out
}

// peerStatusesForSpec keeps what was known of the peers still named, in spec order. A peer
// gets an entry once it has been contacted: before that nothing honest can be said of it.
func peerStatusesForSpec(peers []roomsyncv1alpha1.Peer, known []roomsyncv1alpha1.PeerStatus) []roomsyncv1alpha1.PeerStatus {
	byName := make(map[string]roomsyncv1alpha1.PeerStatus, len(known))
	for _, st := range known {
		byName[st.ServerName] = st
	}
	var out []roomsyncv1alpha1.PeerStatus
	for _, peer := range peers {
		if st, ok := byName[peer.ServerName]; ok {
			out = append(out, st)
		}
	}
	return out
}

// summarize adds up the rooms for the printer columns.
func summarize(rooms []roomsyncv1alpha1.RoomStatus) roomsyncv1alpha1.Summary {
	s := roomsyncv1alpha1.Summary{Rooms: int32(len(rooms))}
	for _, room := range rooms {
		if room.Converged {
			s.ConvergedRooms++
		}
		s.Events += room.Events
		s.Gaps += room.Gaps
		s.Unfillable += room.Unfillable
	}
	return s
}

// applyResults writes the pass results into the room statuses (spec order is kept).
func applyResults(obj *roomsyncv1alpha1.RoomSync, results []resolver.RoomResult, now metav1.Time) {
	byID := make(map[string]resolver.RoomResult, len(results))
	for _, r := range results {
		byID[r.RoomID] = r
	}
	for i := range obj.Status.Rooms {
		st := &obj.Status.Rooms[i]
		r, ok := byID[st.ID]
		if !ok {
			continue
		}
		if r.RoomVersion != "" {
			st.RoomVersion = r.RoomVersion
		}
		// A pass that failed before reading the room back leaves what was known of it.
		if r.Room.ID != "" {
			st.Events = r.Room.Events
			st.ForwardExtremities = int32(min(r.Room.ForwardExtremities, math.MaxInt32))
			st.EarliestDepth = r.Room.MinDepth
			st.LatestDepth = r.Room.MaxDepth
			st.Gaps = int64(r.Gaps + len(r.UnknownHeads))
			st.Unfillable = int64(r.Unfillable)
			st.Redacted = r.Room.Redacted
			st.Rejected = r.Room.Rejected
			st.StateFrom = nil
			for _, f := range r.StateFrom[:min(len(r.StateFrom), maxStateFrom)] {
				st.StateFrom = append(st.StateFrom, truncate(f, 256))
			}
			st.WaitingFor = nil
			for _, w := range r.WaitingFor[:min(len(r.WaitingFor), maxWaitingFor)] {
				st.WaitingFor = append(st.WaitingFor, truncate(w, 256))
			}
		}
		if r.Membership != "" {
			st.Membership, st.MembershipReason = r.Membership, truncate(r.MembershipReason, 512)
		}
		st.Converged = r.Converged
		st.LastSyncTime = &now
		st.LastError = ""
		if r.Err != nil {
			st.LastError = truncate(r.Err.Error(), 512)
		}
	}
}

// maxWaitingFor is the schema's bound on status.rooms[].waitingFor.
const maxWaitingFor = 16

// maxStateFrom bounds status.rooms[].stateFrom, as the CRD does.
const maxStateFrom = 5

// applyPeers writes the resolver's view of the peers into the peer statuses.
func applyPeers(obj *roomsyncv1alpha1.RoomSync, peers []resolver.PeerStatus) {
	out := make([]roomsyncv1alpha1.PeerStatus, 0, len(peers))
	for _, p := range peers {
		st := roomsyncv1alpha1.PeerStatus{ServerName: p.ServerName, Healthy: p.Healthy, LastError: truncate(p.LastError, 512)}
		if !p.LastContact.IsZero() {
			t := metav1.NewTime(p.LastContact)
			st.LastContact = &t
		}
		out = append(out, st)
	}
	obj.Status.Peers = out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

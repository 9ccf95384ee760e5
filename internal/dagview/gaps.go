package dagview

import (
	"context"
	"fmt"

	"github.com/roomsync/roomsync/store"
)

// Gaps returns the room's gaps (all of them, or as many as filter.Limit) with the events that
// reference them (up to maxRefs each) and each peer's latest answer: the forensics behind
// the GAPS column of `kubectl get rms`. The deepest gaps come first, as the store orders them.
func Gaps(ctx context.Context, st store.Store, roomID string, filter store.BackwardFilter, maxRefs int) ([]Gap, error) {
	exts, err := st.BackwardExtremities(ctx, roomID, filter)
	if err != nil {
		return nil, fmt.Errorf("read the gaps of %s: %w", roomID, err)
	}
	if len(exts) == 0 {
		return nil, nil
	}
	ids := make([]string, len(exts))
	for i, b := range exts {
		ids[i] = b.EventID
	}
	refs, err := st.ReferencingEvents(ctx, roomID, ids, max(maxRefs, 1))
	if err != nil {
		return nil, fmt.Errorf("read the gaps of %s: %w", roomID, err)
	}
	answers, err := st.GapAttempts(ctx, roomID, ids)
	if err != nil {
		return nil, fmt.Errorf("read the gaps of %s: %w", roomID, err)
	}
	out := make([]Gap, len(exts))
	for i, b := range exts {
		out[i] = Gap{
			EventID: b.EventID, BelowDepth: b.MinChildDepth, ReferencedBy: refs[b.EventID], FirstSeen: b.FirstSeen,
			Attempts: b.Attempts, LastError: b.LastError, LastAttemptAt: b.LastAttemptAt, NextAttemptAt: b.NextAttemptAt,
			Unfillable: b.Unfillable, UnfillableReason: b.UnfillableReason, Peers: answers[b.EventID],
		}
	}
	return out, nil
}

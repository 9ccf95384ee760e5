package dagview

import (
	"context"
	"errors"
	"fmt"

	"github.com/roomsync/roomsync/store"
)

// Options choose what of a room Build draws. The zero value draws the whole room.
type Options struct {
	// Around, with Depth, draws only the events within Depth depths of this event (held, or a
	// gap: then of the depth below its children).
	Around string
	Depth  int64
	// MaxEvents stops the picture after this many events (0: no limit): a bound on the work
	// of one request of the rooms page.
	MaxEvents int
	// MaxReferences bounds the children listed per gap; default 5.
	MaxReferences int
}

// errEnough stops the stream at Options.MaxEvents.
var errEnough = errors.New("enough events")

// Build reads the room's DAG from the store, a page at a time, and folds it (see folder).
func Build(ctx context.Context, st store.Store, roomID string, opts Options) (*Graph, error) {
	gaps, err := st.BackwardExtremities(ctx, roomID, store.BackwardFilter{})
	if err != nil {
		return nil, fmt.Errorf("draw the DAG of %s: %w", roomID, err)
	}
	var minDepth, maxDepth int64
	if opts.Around != "" {
		center, err := centerDepth(ctx, st, opts.Around, gaps)
		if err != nil {
			return nil, fmt.Errorf("draw the DAG of %s around %s: %w", roomID, opts.Around, err)
		}
		minDepth, maxDepth = max(center-opts.Depth, 0), center+opts.Depth
		// StreamDAG reads maxDepth 0 as no bound; depths start at 1, so 0 only ever means a
		// window below every event.
		maxDepth = max(maxDepth, 1)
	}
	f := newFolder(roomID, gaps)
	err = st.StreamDAG(ctx, roomID, minDepth, maxDepth, func(e store.DAGEvent) error {
		if opts.MaxEvents > 0 && f.g.Events >= opts.MaxEvents {
			return errEnough
		}
		f.add(e)
		return nil
	})
	switch {
	case errors.Is(err, errEnough):
		f.g.Truncated = true
	case err != nil:
		return nil, fmt.Errorf("draw the DAG of %s: %w", roomID, err)
	}
	g := f.g
	g.Around, g.MinDepth, g.MaxDepth = opts.Around, minDepth, maxDepth
	if err := addGapDetails(ctx, st, g, max(opts.MaxReferences, 0)); err != nil {
		return nil, fmt.Errorf("draw the DAG of %s: %w", roomID, err)
	}
	return g, nil
}

// centerDepth is the depth a picture around id is centred on.
func centerDepth(ctx context.Context, st store.Store, id string, gaps []store.BackwardExtremity) (int64, error) {
	events, err := st.Events(ctx, []string{id})
	if err != nil {
		return 0, err
	}
	if e, ok := events[id]; ok {
		return e.Depth, nil
	}
	for _, b := range gaps {
		if b.EventID == id {
			return b.MinChildDepth - 1, nil
		}
	}
	return 0, fmt.Errorf("the store holds no event %s and it is no gap: %w", id, store.ErrNotFound)
}

// addGapDetails fills in the gap nodes' children and the peers' answers.
func addGapDetails(ctx context.Context, st store.Store, g *Graph, maxRefs int) error {
	if maxRefs == 0 {
		maxRefs = 5
	}
	var ids []string
	byID := map[string]*Gap{}
	for i := range g.Nodes {
		if gap := g.Nodes[i].Gap; gap != nil {
			ids = append(ids, gap.EventID)
			byID[gap.EventID] = gap
		}
	}
	if len(ids) == 0 {
		return nil
	}
	refs, err := st.ReferencingEvents(ctx, g.RoomID, ids, maxRefs)
	if err != nil {
		return err
	}
	answers, err := st.GapAttempts(ctx, g.RoomID, ids)
	if err != nil {
		return err
	}
	for id, gap := range byID {
		gap.ReferencedBy, gap.Peers = refs[id], answers[id]
	}
	return nil
}

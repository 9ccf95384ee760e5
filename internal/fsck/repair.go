package fsck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// ErrBeyondRepair is returned (wrapped) by Repair for a store whose damage a repair of rows
// cannot undo (see Report.BeyondRepair).
var ErrBeyondRepair = errors.New("beyond repair")

// Repair repairs each room rep found wrong, in a transaction of its own (store.RepairRoom):
// the events that failed re-verification go and become gaps, misflagged ones lose the flag,
// and the bookkeeping is rebuilt from the rows; then the room is checked again. It refuses a
// store that rep says is beyond repair, and touches nothing in the clean rooms. rep is
// updated with what was done and what remains.
func Repair(ctx context.Context, st store.Store, rep *Report) error {
	if rep.BeyondRepair != "" {
		return fmt.Errorf("%w: %s", ErrBeyondRepair, rep.BeyondRepair)
	}
	start := time.Now()
	for i := range rep.Rooms {
		room := &rep.Rooms[i]
		if room.Clean {
			continue
		}
		var plan store.RepairPlan
		for _, b := range room.BadEvents {
			switch resolver.RecheckVerdict(b.Verdict) {
			case resolver.EventCorrupt:
				plan.Delete = append(plan.Delete, b.EventID)
			case resolver.EventMisflagged:
				plan.Unredact = append(plan.Unredact, b.EventID)
			}
		}
		res, err := store.RepairRoom(ctx, st, room.RoomID, plan)
		if err != nil {
			return err
		}
		remaining, err := store.CheckRoom(ctx, st, room.RoomID)
		if err != nil {
			return fmt.Errorf("check room %s again after its repair: %w", room.RoomID, err)
		}
		room.Repair = repairOf(res, remaining)
		// Rows that could not be read stay unread: the repair rebuilt around them.
		room.Clean = len(remaining) == 0 && !room.unreadable
		if res.RoomCreated {
			rep.Database.RoomsWithoutRow = slices.DeleteFunc(rep.Database.RoomsWithoutRow,
				func(id string) bool { return id == room.RoomID })
		}
	}
	rep.summarize(time.Duration(rep.Summary.Seconds*float64(time.Second)) + time.Since(start))
	return nil
}

func repairOf(res store.RepairResult, remaining []string) *RoomRepair {
	return &RoomRepair{
		Deleted: res.Deleted, Unredacted: res.Unredacted, StaleEdges: res.StaleEdges, EdgesRebuilt: res.EdgesRebuilt,
		GapsAdded: len(res.GapsAdded), GapsRemoved: res.GapsRemoved,
		ForwardAdded: res.ForwardAdded, ForwardRemoved: res.ForwardRemoved, Unreferenced: res.Unreferenced,
		Renumbered: res.Renumbered, StateInvalidated: res.StateInvalidated, StateRowsRemoved: res.StateRowsRemoved,
		Counters: append([]string{}, res.Counters...), Remaining: append([]string{}, remaining...),
	}
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/roomsync/roomsync/store"
)

// damagedRooms checks the counters of each of rooms the store holds against its rows
// (store.CheckRoomCounters) and names on stderr those that disagree, or cannot be read:
// sync leaves them alone, since writing on top of lost rows fails ("rows exist already") or
// spreads the damage, and no pass over them could honestly be called converged.
func damagedRooms(ctx context.Context, st store.Store, rooms []string, stderr io.Writer) map[string]bool {
	damaged := map[string]bool{}
	for _, room := range rooms {
		problems, err := store.CheckRoomCounters(ctx, st, room)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // nothing stored yet
		case err != nil && ctx.Err() != nil:
			return damaged
		case err != nil:
			problems = []string{err.Error()}
		case len(problems) == 0:
			continue
		}
		damaged[room] = true
		fmt.Fprintf(stderr, "roomsync: %s: the store's counters disagree with its rows (%s): not synced, not converged.\n%s\n",
			room, strings.Join(problems, "; "), fsckHint)
	}
	return damaged
}

// withoutRooms returns rooms without those in drop.
func withoutRooms(rooms []string, drop map[string]bool) []string {
	return slices.DeleteFunc(slices.Clone(rooms), func(r string) bool { return drop[r] })
}

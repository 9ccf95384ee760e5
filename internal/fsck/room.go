package fsck

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// checkRoom checks one room: its rows against each other, then every event verified again.
// What the room's rows fail to give (a damaged page, JSON that does not decode) is a problem
// of the room; only the context's end and the like are errors.
func checkRoom(ctx context.Context, st store.Store, roomID string, keys resolver.KeyFunc, workers int) (Room, error) {
	r := Room{RoomID: roomID, Problems: []string{}, BadEvents: []BadEvent{}}
	info, err := st.Room(ctx, roomID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		r.Problems = append(r.Problems, "the room's events are held but it has no row")
	case err != nil:
		if ctx.Err() != nil {
			return r, err
		}
		r.Problems = append(r.Problems, "reading the room failed: "+err.Error())
	default:
		r.RoomVersion = info.Version
		problems, err := store.CheckRoom(ctx, st, roomID)
		if err != nil {
			if ctx.Err() != nil {
				return r, err
			}
			problems = []string{"checking the room's rows failed: " + err.Error()}
		}
		r.Problems = append(r.Problems, problems...)
	}
	if err := verifyEvents(ctx, st, &r, keys, workers); err != nil {
		if ctx.Err() != nil {
			return r, err
		}
		r.unreadable = true
		r.Problems = append(r.Problems, "reading the room's events failed: "+err.Error())
	}
	r.Clean = len(r.Problems) == 0 && len(r.BadEvents) == 0
	return r, nil
}

// verifyEvents streams the room's events to workers that verify each again
// (resolver.RecheckEvent) and records the verdicts in r.
func verifyEvents(ctx context.Context, st store.Store, r *Room, keys resolver.KeyFunc, workers int) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	events := make(chan store.Event, 4*workers)
	var mu sync.Mutex
	servers := map[string]bool{}
	for range workers {
		g.Go(func() error {
			for ev := range events {
				v := resolver.RecheckEvent(gctx, r.RoomVersion, ev, keys)
				mu.Lock()
				switch v.Verdict {
				case resolver.EventSound:
					r.Verified++
				case resolver.EventUnverifiable:
					r.Unverifiable++
					if v.Server != "" {
						servers[v.Server] = true
					}
				default:
					r.BadEvents = append(r.BadEvents, BadEvent{EventID: ev.ID, Verdict: string(v.Verdict), Problem: v.Detail})
				}
				mu.Unlock()
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(events)
		return st.StreamEvents(gctx, r.RoomID, func(ev store.Event) error {
			r.Events++ // this goroutine alone counts; read after Wait
			select {
			case events <- ev:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
	})
	err := g.Wait()
	slices.SortFunc(r.BadEvents, func(a, b BadEvent) int { return cmp.Compare(a.EventID, b.EventID) })
	r.UnverifiableServers = slices.Sorted(maps.Keys(servers))
	return err
}

package fsck

import (
	"fmt"
	"io"
	"strings"
)

// maxListed bounds the bad events listed per room in the text report; --json lists all.
const maxListed = 20

// WriteText writes the report for people: the database, each room (its problems, its events'
// verdicts, what the repair did), a summary, and what to do next.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	p.line("database: %s, schema version %d: %s", r.Database.Check, r.Database.SchemaVersion, okOr(len(r.Database.Problems)+len(r.Database.RoomsWithoutRow)))
	for _, problem := range r.Database.Problems {
		p.line("  %s", problem)
	}
	if n := len(r.Database.RoomsWithoutRow); n > 0 {
		p.line("  events are held for %d rooms without a room row: %s", n, strings.Join(r.Database.RoomsWithoutRow, ", "))
	}
	for _, room := range r.Rooms {
		r.writeRoom(p, room)
	}
	s := r.Summary
	verdict := "clean"
	if !s.Clean {
		verdict = "PROBLEMS FOUND"
		if s.RoomsRepaired > 0 {
			verdict = "PROBLEMS REMAIN"
		}
	}
	p.line("summary: %s, %s (%d verified, %d unverifiable here, %d bad); %d with problems, %d repaired; %.1fs: %s",
		plural(s.Rooms, "room"), plural(int(s.Events), "event"), s.Verified, s.Unverifiable, s.BadEvents,
		s.RoomsWithProblems, s.RoomsRepaired, s.Seconds, verdict)
	switch {
	case r.BeyondRepair != "":
		p.line("fsck cannot repair this store: %s", r.BeyondRepair)
	case r.NeedsRepair() && s.RoomsRepaired == 0:
		p.line("next: stop the writers of the store (the manager, syncs) and run fsck again with --repair")
	case s.RoomsRepaired > 0 && r.gapsAdded() > 0:
		p.line("next: sync the repaired rooms (roomsync sync, or the manager: restart it or annotate the RoomSyncs with %s) to fetch the %s the repair turned into gaps",
			"reconcile.roomsync.io/requestedAt", plural(r.gapsAdded(), "event"))
	}
	return p.err
}

func (r *Report) writeRoom(p *printer, room Room) {
	version := room.RoomVersion
	if version == "" {
		version = "unknown"
	}
	p.line("room %s (version %s): %s: %s", room.RoomID, version, plural(int(room.Events), "event"), okOr(len(room.Problems)+len(room.BadEvents)))
	for _, problem := range room.Problems {
		p.line("  %s", problem)
	}
	line := fmt.Sprintf("  events: %d verified, %d unverifiable here", room.Verified, room.Unverifiable)
	if len(room.UnverifiableServers) > 0 {
		line += " (the store keeps no key of " + strings.Join(room.UnverifiableServers, ", ") + ")"
	}
	p.line("%s, %d bad", line, len(room.BadEvents))
	for i, b := range room.BadEvents {
		if i == maxListed {
			p.line("  … and %d more bad events (--json lists them all)", len(room.BadEvents)-maxListed)
			break
		}
		p.line("  %s %s: %s", b.Verdict, b.EventID, b.Problem)
	}
	if rp := room.Repair; rp != nil {
		var done []string
		add := func(n int, what string) {
			if n > 0 {
				done = append(done, fmt.Sprintf("%s: %d", what, n))
			}
		}
		add(rp.Deleted, "bad events deleted")
		add(rp.Unredacted, "wrong redacted flags cleared")
		add(rp.StaleEdges, "edges of lost or deleted events removed")
		add(rp.GapsAdded, "missing events made gaps again (the next sync fetches them)")
		add(rp.GapsRemoved, "stale gaps removed")
		add(rp.ForwardAdded+rp.ForwardRemoved, "forward extremities corrected")
		add(rp.Unreferenced, "lost events no held event names (the next sync finds them from the peers' heads)")
		add(rp.Renumbered, "events given an arrival number")
		add(rp.StateInvalidated, "events whose state is computed again")
		add(rp.StateRowsRemoved, "wrong state rows removed")
		if rp.EdgesRebuilt {
			done = append(done, "edges rebuilt from the events")
		}
		if len(rp.Counters) > 0 {
			done = append(done, "counters: "+strings.Join(rp.Counters, ", "))
		}
		if len(done) == 0 {
			done = append(done, "nothing to change")
		}
		p.line("  repaired: %s", strings.Join(done, "; "))
		if room.Clean {
			p.line("  after the repair: clean")
		}
		for _, problem := range rp.Remaining {
			p.line("  still wrong: %s", problem)
		}
	}
}

func (r *Report) gapsAdded() int {
	n := 0
	for _, room := range r.Rooms {
		if room.Repair != nil {
			n += room.Repair.GapsAdded
		}
	}
	return n
}

func okOr(problems int) string {
	if problems == 0 {
		return "ok"
	}
	return plural(problems, "problem")
}

// plural is "1 room", "2 rooms"; nouns ending in y take "ies".
func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// printer writes lines and keeps the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// roomReport is `inspect --json`: one object per room, a stable contract for scripts.
type roomReport struct {
	RoomID      string `json:"room_id"`
	RoomVersion string `json:"room_version"`
	Events      int64  `json:"events"`
	Redacted    int64  `json:"redacted"`
	// Rejected counts the events that broke the authorization rules.
	Rejected            int64    `json:"rejected"`
	ForwardExtremities  []string `json:"forward_extremities"`
	BackwardExtremities []string `json:"backward_extremities"`
	// Converged: no backward extremity other than those the history bound (--min-depth,
	// --since) excludes, and counters that agree with the rows.
	Converged bool `json:"converged"`
	// Problems say how the room's counters disagree with its rows (store.CheckRoomCounters);
	// absent when they agree. A room with problems is not converged, whatever its counters
	// say.
	Problems []string `json:"problems,omitempty"`
}

// inspectFlags are inspect's flags, as parseInspectFlags read them.
type inspectFlags struct {
	storeURL, roomID, stateAt     string
	asJSON, eventIDs, check, gaps bool
	dag                           dagFlags
	hist                          resolver.History
}

// parseInspectFlags reads and checks inspect's flags, touching no file. When done is true,
// inspect ends at once with code: help was shown, or the input was bad and stderr says why.
func parseInspectFlags(args []string, stderr io.Writer) (f *inspectFlags, fs *flag.FlagSet, code int, done bool) {
	f = &inspectFlags{}
	fs = flag.NewFlagSet("roomsync inspect", flag.ContinueOnError)
	fs.StringVar(&f.storeURL, "store", "", "Event store URL (as for sync).")
	fs.StringVar(&f.roomID, "room", "", "The room ID to inspect.")
	fs.BoolVar(&f.asJSON, "json", false, "Print one JSON object: room_id, room_version, events, redacted, rejected, forward_extremities, backward_extremities, converged.")
	fs.StringVar(&f.stateAt, "state-at", "", "Print the room state before this event (type, state key, event ID, and membership for members), and the rule the event broke if it was rejected; with --json, as one JSON object.")
	fs.BoolVar(&f.eventIDs, "event-ids", false, "Print the stored event IDs one a line, in topological order (depth, then ID).")
	fs.BoolVar(&f.check, "check", false, "Check the room's bookkeeping (extremities, counters) against its events and edges; exit 1 and list every difference if they disagree.")
	fs.BoolVar(&f.gaps, "gaps", false, "Print each gap (missing event) with its depth, the events that reference it, its attempts, what each peer answered, the last error and the next retry; with --json, as one JSON object.")
	f.dag.bind(fs)
	fs.Int64Var(&f.hist.MinDepth, "min-depth", 0, "History bound of the sync: backward extremities below it do not count against converged.")
	var since timeFlag
	fs.Var(&since, "since", "History bound of the sync by time (RFC 3339), as for --min-depth.")
	if code, done := parseArgs(fs, args, stderr); done {
		return f, fs, code, true
	}
	switch {
	case f.storeURL == "" || f.roomID == "":
		fmt.Fprintln(stderr, "roomsync inspect: --store and --room are required")
		return f, fs, ExitBadInput, true
	case countTrue(f.eventIDs, f.check, f.gaps, f.dag.on, f.stateAt != "") > 1,
		f.asJSON && (f.eventIDs || f.check || f.dag.on):
		fmt.Fprintln(stderr, "roomsync inspect: --event-ids, --check, --gaps, --dag and --state-at exclude each other; --json goes alone or with --gaps or --state-at")
		return f, fs, ExitBadInput, true
	}
	if err := f.dag.validate(); err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return f, fs, ExitBadInput, true
	}
	f.hist.Since = since.Time
	return f, fs, ExitOK, false
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	f, fs, code, done := parseInspectFlags(args, stderr)
	if done {
		return code
	}

	// Read-only: inspecting must not create a store on a mistyped path, nor migrate one.
	ctx := context.Background()
	st, err := store.OpenReadOnly(ctx, f.storeURL)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer st.Close()

	room, err := st.Room(ctx, f.roomID)
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(stderr, "roomsync inspect: the store holds no room %s\n", f.roomID)
		return ExitFailed
	} else if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}

	if f.stateAt != "" {
		return printStateAt(ctx, st, f.roomID, f.stateAt, f.asJSON, stdout, stderr)
	}
	if f.gaps {
		return printGaps(ctx, st, f.roomID, f.asJSON, stdout, stderr)
	}
	if f.dag.on {
		return drawDAG(ctx, st, f.roomID, f.dag, stdout, stderr)
	}
	if f.check {
		if err := st.CheckConsistency(ctx, f.roomID); err != nil {
			fmt.Fprintf(stderr, "roomsync inspect: %v\n%s\n", err, fsckHint)
			return ExitFailed
		}
		fmt.Fprintf(stdout, "room %s: %d events, extremities and counters consistent\n", f.roomID, room.Events)
		return ExitOK
	}
	if f.eventIDs {
		err := st.StreamEvents(ctx, f.roomID, func(ev store.Event) error {
			_, err := fmt.Fprintln(stdout, ev.ID)
			return err
		})
		if err != nil {
			fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
			return ExitFailed
		}
		return ExitOK
	}

	report, err := buildReport(ctx, st, room, f.hist)
	if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n%s\n", err, fsckHint)
		return ExitFailed
	}
	code = ExitOK
	if len(report.Problems) > 0 {
		fmt.Fprintf(stderr, "roomsync inspect: room %s: the store's counters disagree with its rows (%s): its figures cannot be trusted.\n%s\n",
			f.roomID, strings.Join(report.Problems, "; "), fsckHint)
		code = ExitFailed
	}
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return ExitFailed
		}
		return code
	}
	fmt.Fprintf(stdout, "room:                 %s\n", report.RoomID)
	fmt.Fprintf(stdout, "room version:         %s\n", report.RoomVersion)
	fmt.Fprintf(stdout, "events:               %d (%d redacted, %d rejected)\n", report.Events, report.Redacted, report.Rejected)
	fmt.Fprintf(stdout, "depths:               %d to %d\n", room.MinDepth, room.MaxDepth)
	fmt.Fprintf(stdout, "forward extremities:  %d %s\n", len(report.ForwardExtremities), abbreviate(report.ForwardExtremities))
	fmt.Fprintf(stdout, "backward extremities: %d %s (%d unfillable)\n", len(report.BackwardExtremities), abbreviate(report.BackwardExtremities), room.UnfillableExtremities)
	fmt.Fprintf(stdout, "converged:            %t\n", report.Converged)
	for _, p := range report.Problems {
		fmt.Fprintf(stdout, "inconsistent:         %s\n", p)
	}
	return code
}

func buildReport(ctx context.Context, st store.Store, room store.Room, hist resolver.History) (roomReport, error) {
	forward, err := st.ForwardExtremities(ctx, room.ID)
	if err != nil {
		return roomReport{}, err
	}
	backward, err := st.BackwardExtremities(ctx, room.ID, store.BackwardFilter{})
	if err != nil {
		return roomReport{}, err
	}
	// Every hole is listed; only those within the history bound stand against converged.
	withinBound, err := st.BackwardExtremities(ctx, room.ID, hist.BackwardFilter())
	if err != nil {
		return roomReport{}, err
	}
	// The figures above are counters and extremity rows: worth nothing if the rows they
	// count are gone.
	problems, err := store.CheckRoomCounters(ctx, st, room.ID)
	if err != nil {
		return roomReport{}, err
	}
	report := roomReport{
		RoomID:              room.ID,
		RoomVersion:         room.Version,
		Events:              room.Events,
		Redacted:            room.Redacted,
		Rejected:            room.Rejected,
		ForwardExtremities:  append([]string{}, forward...),
		BackwardExtremities: []string{},
		Converged:           len(withinBound) == 0 && room.Events > 0 && len(problems) == 0,
		Problems:            problems,
	}
	for _, b := range backward {
		report.BackwardExtremities = append(report.BackwardExtremities, b.EventID)
	}
	return report, nil
}

func abbreviate(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	if len(ids) <= 3 {
		return "[" + strings.Join(ids, " ") + "]"
	}
	return "[" + strings.Join(ids[:3], " ") + " …]"
}

func countTrue(flags ...bool) int {
	n := 0
	for _, f := range flags {
		if f {
			n++
		}
	}
	return n
}

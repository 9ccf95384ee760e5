package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomsync/roomsync/internal/fsck"
	"github.com/roomsync/roomsync/store"
)

// fsckHint is what other commands say when a store's counters disagree with its rows.
const fsckHint = "roomsync fsck --store URL --room ROOM checks it; --repair rebuilds what the rows allow"

// fsckFlags are fsck's flags, as parseFsckFlags read them.
type fsckFlags struct {
	storeURL       string
	repair, asJSON bool
	opts           fsck.Options
}

// parseFsckFlags reads and checks fsck's flags, touching no file. When done is true, fsck
// ends at once with code: help was shown, or the input was bad and stderr says why.
func parseFsckFlags(args []string, stderr io.Writer) (f *fsckFlags, fs *flag.FlagSet, code int, done bool) {
	f = &fsckFlags{}
	fs = flag.NewFlagSet("roomsync fsck", flag.ContinueOnError)
	fs.StringVar(&f.storeURL, "store", "", "Event store URL (as for sync).")
	fs.StringVar(&f.opts.Room, "room", "", "Check only this room; default: every room.")
	fs.BoolVar(&f.repair, "repair", false, "Repair what the rows allow, a transaction per room: delete the events that fail verification, make the events they and any lost rows leave missing gaps again (the next sync fetches them), rebuild counters, extremities and edges, and clear the state computed from lost events. Stop the store's writers (the manager, syncs) first. Exit 0 when the store is clean afterwards.")
	fs.BoolVar(&f.asJSON, "json", false, "Print the report as one JSON object: database, rooms (problems, verified, unverifiable, bad_events, repair, clean), summary, beyond_repair.")
	fs.BoolVar(&f.opts.Thorough, "integrity-check", false, "SQLite: run PRAGMA integrity_check, which also compares every index with its table (slower), instead of quick_check.")
	fs.IntVar(&f.opts.Workers, "workers", 0, "Events verified at once; 0: one per CPU.")
	if code, done := parseArgs(fs, args, stderr); done {
		return f, fs, code, true
	}
	switch {
	case f.storeURL == "":
		fmt.Fprintln(stderr, "roomsync fsck: --store is required")
		return f, fs, ExitBadInput, true
	case f.opts.Workers < 0:
		fmt.Fprintln(stderr, "roomsync fsck: --workers must not be negative")
		return f, fs, ExitBadInput, true
	}
	if f.opts.Room != "" {
		if err := checkRoomFlag(f.opts.Room); err != nil {
			return f, fs, badInput(stderr, fs, err), true
		}
	}
	return f, fs, ExitOK, false
}

func runFsck(args []string, stdout, stderr io.Writer) int {
	f, fs, code, done := parseFsckFlags(args, stderr)
	if done {
		return code
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The check reads only: a mistyped path creates no store, and nothing is migrated.
	ro, err := store.OpenReadOnly(ctx, f.storeURL)
	if err != nil {
		return openFailed(stderr, err)
	}
	rep, err := fsck.Check(ctx, ro, f.opts)
	ro.Close()
	switch {
	case errors.Is(err, fsck.ErrNoRoom):
		return badInput(stderr, fs, err)
	case err != nil:
		fmt.Fprintf(stderr, "roomsync fsck: %v\n", err)
		return ExitFailed
	}
	if f.repair && rep.NeedsRepair() && rep.BeyondRepair == "" {
		if err := repairStore(ctx, f.storeURL, rep); err != nil {
			fmt.Fprintf(stderr, "roomsync fsck: %v\n", err)
			return ExitFailed
		}
	}

	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil || !rep.Summary.Clean {
		return ExitFailed
	}
	return ExitOK
}

// repairStore opens the store for writing and repairs what rep found.
func repairStore(ctx context.Context, storeURL string, rep *fsck.Report) error {
	rw, err := store.Open(ctx, storeURL)
	if err != nil {
		return err
	}
	defer rw.Close()
	return fsck.Repair(ctx, rw, rep)
}

// openFailed reports a store fsck cannot open: a database too damaged to open is a finding
// (exit 1), anything else is bad input, as for inspect.
func openFailed(stderr io.Writer, err error) int {
	if store.IsDamage(err) {
		fmt.Fprintf(stderr, "roomsync fsck: %v\nThe database is too damaged to open, which fsck cannot repair. "+
			"Restore it from a backup, or move it aside and let roomsync sync (or the manager) fetch the rooms again from their peers.\n", err)
		return ExitFailed
	}
	fmt.Fprintf(stderr, "roomsync fsck: %v\n", err)
	return ExitBadInput
}

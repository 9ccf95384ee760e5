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

func runFsck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomsync fsck", flag.ContinueOnError)
	storeURL := fs.String("store", "", "Event store URL (as for sync).")
	room := fs.String("room", "", "Check only this room; default: every room.")
	repair := fs.Bool("repair", false, "Repair what the rows allow, a transaction per room: delete the events that fail verification, make the events they and any lost rows leave missing gaps again (the next sync fetches them), rebuild counters, extremities and edges, and clear the state computed from lost events. Stop the store's writers (the manager, syncs) first. Exit 0 when the store is clean afterwards.")
	asJSON := fs.Bool("json", false, "Print the report as one JSON object: database, rooms (problems, verified, unverifiable, bad_events, repair, clean), summary, beyond_repair.")
	thorough := fs.Bool("integrity-check", false, "SQLite: run PRAGMA integrity_check, which also compares every index with its table (slower), instead of quick_check.")
	workers := fs.Int("workers", 0, "Events verified at once; 0: one per CPU.")
	if code, done := parseArgs(fs, args, stderr); done {
		return code
	}
	switch {
	case *storeURL == "":
		fmt.Fprintln(stderr, "roomsync fsck: --store is required")
		return ExitBadInput
	case *workers < 0:
		fmt.Fprintln(stderr, "roomsync fsck: --workers must not be negative")
		return ExitBadInput
	}
	if *room != "" {
		if err := checkRoomFlag(*room); err != nil {
			return badInput(stderr, fs, err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The check reads only: a mistyped path creates no store, and nothing is migrated.
	ro, err := store.OpenReadOnly(ctx, *storeURL)
	if err != nil {
		return openFailed(stderr, err)
	}
	rep, err := fsck.Check(ctx, ro, fsck.Options{Room: *room, Thorough: *thorough, Workers: *workers})
	ro.Close()
	switch {
	case errors.Is(err, fsck.ErrNoRoom):
		return badInput(stderr, fs, err)
	case err != nil:
		fmt.Fprintf(stderr, "roomsync fsck: %v\n", err)
		return ExitFailed
	}
	if *repair && rep.NeedsRepair() && rep.BeyondRepair == "" {
		if err := repairStore(ctx, *storeURL, rep); err != nil {
			fmt.Fprintf(stderr, "roomsync fsck: %v\n", err)
			return ExitFailed
		}
	}

	if *asJSON {
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

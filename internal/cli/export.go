package cli

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/store"
)

// exportFlags are export's flags, as parseExportFlags read them.
type exportFlags struct {
	storeURL, out string
	opts          export.Options
}

// parseExportFlags reads and checks export's flags, touching no file but to look whether --out
// may be written. When done is true, export ends at once with code: help was shown, or the
// input was bad and stderr says why.
func parseExportFlags(args []string, stderr io.Writer) (f *exportFlags, fs *flag.FlagSet, code int, done bool) {
	f = &exportFlags{}
	fs = flag.NewFlagSet("roomsync export", flag.ContinueOnError)
	fs.StringVar(&f.storeURL, "store", "", "Event store URL (as for sync).")
	roomID := fs.String("room", "", "The room ID to export.")
	format := fs.String("format", string(export.FormatPDUs), "pdus (the signed PDUs as stored, NDJSON), events (client-server events, NDJSON) or text (a transcript).")
	since := fs.String("since", "", "Only events sent at or after this time: RFC 3339 (2024-01-02T15:04:05Z) or Unix milliseconds.")
	until := fs.String("until", "", "Only events sent before this time (RFC 3339 or Unix milliseconds).")
	after := fs.String("after", "", "The cursor an earlier export printed: only the events stored since, in the order they arrived.")
	fs.StringVar(&f.out, "out", "", "Write to this file instead of stdout (gzip when it ends in .gz); it appears only once the export is complete.")
	if code, done := parseArgs(fs, args, stderr); done {
		return f, fs, code, true
	}
	if f.storeURL == "" || *roomID == "" {
		fmt.Fprintln(stderr, "roomsync export: --store and --room are required")
		return f, fs, ExitBadInput, true
	}
	f.opts = export.Options{RoomID: *roomID, After: *after}
	var err error
	if f.opts.Format, err = export.ParseFormat(*format); err != nil {
		return f, fs, badInput(stderr, fs, fmt.Errorf("--format: %w", err)), true
	}
	if f.opts.Since, err = parseTimeFlag("--since", *since); err != nil {
		return f, fs, badInput(stderr, fs, err), true
	}
	if f.opts.Until, err = parseTimeFlag("--until", *until); err != nil {
		return f, fs, badInput(stderr, fs, err), true
	}
	if err := checkOutPath(f.out); err != nil {
		return f, fs, badInput(stderr, fs, err), true
	}
	return f, fs, ExitOK, false
}

func runExport(args []string, stdout, stderr io.Writer) int {
	f, fs, code, done := parseExportFlags(args, stderr)
	if done {
		return code
	}
	opts := f.opts

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Read-only, as inspect: a mistyped path creates nothing, and an export never writes.
	st, err := store.OpenReadOnly(ctx, f.storeURL)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer st.Close()
	opts.Progress = func(p export.Progress) { reportProgress(stderr, p) }
	ex, err := export.New(ctx, st, opts)
	if errors.Is(err, export.ErrBadInput) {
		return badInput(stderr, fs, err)
	} else if err != nil {
		fmt.Fprintf(stderr, "roomsync export: %v\n", err)
		return ExitFailed
	}

	if f.out == "" {
		_, err = ex.Run(ctx, stdout)
	} else {
		err = exportToFile(ctx, ex, f.out)
		if errors.Is(err, errOutFile) {
			return badInput(stderr, fs, err)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "roomsync export: %v\n", err)
		return ExitFailed
	}
	// Last, and only after a complete export: a script keeps this line for --after.
	fmt.Fprintf(stderr, "cursor: %s\n", ex.Cursor())
	return ExitOK
}

// parseTimeFlag reads --since or --until; empty is no bound.
func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := export.ParseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// errOutFile marks a --out that cannot be written: bad input, not a failed export.
var errOutFile = errors.New("--out")

// checkOutPath refuses a --out that names a directory or sits in a directory that does
// not exist, before the store is opened.
func checkOutPath(path string) error {
	if path == "" {
		return nil
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%w %s: a directory, not a file", errOutFile, path)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w %s: no directory %s", errOutFile, path, filepath.Dir(path))
	}
	return nil
}

// exportToFile writes the export to a temporary file beside path and renames it to path
// once complete, so that a job picking up path never reads half an export, and a failed
// export leaves nothing behind. Gzip when path ends in .gz. The file is readable by its
// owner only: an export holds a room's history.
func exportToFile(ctx context.Context, ex *export.Export, path string) (err error) {
	dir, base := filepath.Split(path)
	tmp, err := os.CreateTemp(dir, "."+base+".*.partial")
	if err != nil {
		return fmt.Errorf("%w %s: %w", errOutFile, path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var w io.Writer = tmp
	var zw *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		zw = gzip.NewWriter(tmp)
		w = zw
	}
	if _, err := ex.Run(ctx, w); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%w %s: %w", errOutFile, path, err)
	}
	return nil
}

func reportProgress(stderr io.Writer, p export.Progress) {
	rate := float64(p.Events) / max(p.Elapsed.Seconds(), 1e-9)
	if p.Done {
		fmt.Fprintf(stderr, "roomsync export: %d events in %s (%.0f events/s)\n", p.Events, p.Elapsed.Round(time.Millisecond), rate)
		return
	}
	fmt.Fprintf(stderr, "roomsync export: %d events so far (%.0f events/s)\n", p.Events, rate)
}

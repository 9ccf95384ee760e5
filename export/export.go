// Package export writes what the store holds of a room out of it, for legal hold, search,
// analytics or another tool: the signed PDUs as received, the events in the client-server
// format, or a readable transcript. `roomsync export` and the manager's
// /rooms/{roomId}/export endpoint both call it, so they give the same bytes.
//
// An export streams: it pages through the store and holds one page at a time, whatever the
// room's size. It covers exactly the events that had arrived when it started (see
// store.SequencedEvent) and ends with a Cursor; an export after that cursor covers exactly
// what arrived since, wherever it sits in the DAG, so a nightly job exports each event once
// (and again only when what the export says of it changed: its full copy replaced a
// redacted one, or it was found rejected).
//
// It imports no Kubernetes package.
package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/roomsync/roomsync/store"
)

// ErrBadInput is matched (errors.Is) by every error that is the request's fault: an unknown
// format, room or cursor, a bad time range. Other errors are the store's or the writer's.
var ErrBadInput = errors.New("bad export request")

// ErrUnknownRoom is matched, besides ErrBadInput, when the store holds no such room.
var ErrUnknownRoom = errors.New("unknown room")

// inputError is an error in the request, with a message meant for its user.
type inputError struct {
	msg         string
	unknownRoom bool
}

func (e *inputError) Error() string { return e.msg }

func (e *inputError) Is(target error) bool {
	return target == ErrBadInput || (e.unknownRoom && target == ErrUnknownRoom)
}

func badInput(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

// pageSize is how many events one store read returns: large enough that the per-page
// queries do not matter, small enough that a page of large events stays a few MiB.
const pageSize = 500

// progressEvents is how many events pass between progress reports at most; reports also
// come every Options.ProgressEvery.
const progressEvents = 100_000

// Options describe one export.
type Options struct {
	RoomID string
	Format Format
	// Since and Until bound origin_server_ts, half open: Since <= ts < Until, so that
	// consecutive ranges share no event. Zero leaves that side open.
	Since, Until time.Time
	// After is the cursor of an earlier export of the room: only what arrived since, in
	// arrival order. Empty exports the whole room in topological order (depth, event ID).
	After string
	// Progress, when set, hears how far the export got, every ProgressEvery (5 s when
	// zero) or 100,000 events, and once at the end with Done set.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Progress is how far an export got.
type Progress struct {
	Events  int64
	Elapsed time.Duration
	Done    bool
}

// Export is one export, checked and ready to run.
type Export struct {
	st     store.Store
	opts   Options
	query  store.EventQuery
	cursor Cursor
	enc    encoder
}

// New checks the options against the store and fixes what the export covers: the events
// that arrived up to now (after the cursor, if any). Errors in the options match ErrBadInput.
func New(ctx context.Context, st store.Store, opts Options) (*Export, error) {
	if opts.RoomID == "" {
		return nil, badInput("no room given")
	}
	if opts.Format == "" {
		opts.Format = FormatPDUs
	}
	enc, err := newEncoder(opts.Format, st, opts.RoomID)
	if err != nil {
		return nil, err
	}
	q := store.EventQuery{Limit: pageSize}
	if q.SinceTS, q.UntilTS, err = timeBounds(opts.Since, opts.Until); err != nil {
		return nil, err
	}
	room, err := st.Room(ctx, opts.RoomID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &inputError{msg: fmt.Sprintf("the store holds no room %s", opts.RoomID), unknownRoom: true}
	}
	if err != nil {
		return nil, fmt.Errorf("read room %s: %w", opts.RoomID, err)
	}
	// Everything up to the room's last arrival now, and nothing later: events arriving
	// while the export runs are the next export's, so none is missed or taken twice.
	q.UpToSeq = room.LastSeq
	if opts.After != "" {
		after, err := ParseCursor(opts.After)
		if err != nil {
			return nil, err
		}
		switch {
		case after.RoomID != opts.RoomID:
			return nil, badInput("the cursor is for room %s, not %s", after.RoomID, opts.RoomID)
		case after.Seq > room.LastSeq:
			return nil, badInput("the cursor is ahead of what the store holds of %s (%d arrivals, the cursor says %d): "+
				"it comes from another store, or this store was restored from an older copy", opts.RoomID, room.LastSeq, after.Seq)
		}
		q.ByArrival, q.AfterSeq = true, after.Seq
	}
	return &Export{st: st, opts: opts, query: q, enc: enc,
		cursor: Cursor{RoomID: opts.RoomID, Seq: room.LastSeq}}, nil
}

// timeBounds turns the time range into the store's milliseconds, rounding up so that a
// bound between two milliseconds keeps its meaning (Since <= ts < Until).
func timeBounds(since, until time.Time) (sinceTS, untilTS int64, err error) {
	ceilMillis := func(t time.Time) int64 {
		ms := t.UnixMilli()
		if t.After(time.UnixMilli(ms)) {
			ms++
		}
		return ms
	}
	if !since.IsZero() {
		sinceTS = ceilMillis(since)
	}
	if !until.IsZero() {
		if untilTS = ceilMillis(until); untilTS <= 0 {
			return 0, 0, badInput("until %s selects nothing: it must be after 1970-01-01", until.UTC().Format(time.RFC3339Nano))
		}
	}
	if !since.IsZero() && !until.IsZero() && sinceTS >= untilTS {
		return 0, 0, badInput("since %s is not before until %s: the range is empty",
			since.UTC().Format(time.RFC3339Nano), until.UTC().Format(time.RFC3339Nano))
	}
	return sinceTS, untilTS, nil
}

// Cursor is where the next export resumes once this one has run to its end.
func (e *Export) Cursor() Cursor { return e.cursor }

// Format is the export's format.
func (e *Export) Format() Format { return e.opts.Format }

// Run writes the export to w and returns how many events it wrote. An error leaves w with
// part of the export: its cursor must not be used then.
func (e *Export) Run(ctx context.Context, w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	every := e.opts.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	start := time.Now()
	lastReport, reported := start, int64(0)
	var n int64
	q := e.query
	for {
		page, err := e.st.QueryEvents(ctx, e.opts.RoomID, q)
		if err != nil {
			return n, fmt.Errorf("read the events of %s: %w", e.opts.RoomID, err)
		}
		if err := e.enc.encode(ctx, bw, page); err != nil {
			return n, err
		}
		n += int64(len(page))
		if e.opts.Progress != nil && (time.Since(lastReport) >= every || n-reported >= progressEvents) {
			lastReport, reported = time.Now(), n
			e.opts.Progress(Progress{Events: n, Elapsed: time.Since(start)})
		}
		if len(page) < q.Limit {
			break
		}
		last := page[len(page)-1]
		if q.ByArrival {
			q.AfterSeq = last.Seq
		} else {
			pos := last.Position()
			q.After = &pos
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("write the export: %w", err)
	}
	if e.opts.Progress != nil {
		e.opts.Progress(Progress{Events: n, Elapsed: time.Since(start), Done: true})
	}
	return n, nil
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roomsync/roomsync/internal/dagview"
	"github.com/roomsync/roomsync/store"
)

// maxGapReferences bounds the referencing events listed per gap.
const maxGapReferences = 10

// gapsReport is `inspect --gaps --json`: one object, a stable contract for scripts.
type gapsReport struct {
	RoomID string    `json:"room_id"`
	Gaps   []gapJSON `json:"gaps"`
}

type gapJSON struct {
	EventID          string           `json:"event_id"`
	BelowDepth       int64            `json:"below_depth"`
	ReferencedBy     []string         `json:"referenced_by"`
	FirstSeen        *time.Time       `json:"first_seen"`
	Attempts         int              `json:"attempts"`
	LastError        string           `json:"last_error"`
	LastAttemptAt    *time.Time       `json:"last_attempt_at"`
	NextAttemptAt    *time.Time       `json:"next_attempt_at"` // null: at the next pass
	Unfillable       bool             `json:"unfillable"`
	UnfillableReason string           `json:"unfillable_reason"`
	Peers            []peerAnswerJSON `json:"peers"`
}

type peerAnswerJSON struct {
	Peer     string     `json:"peer"`
	Endpoint string     `json:"endpoint"`
	Outcome  string     `json:"outcome"`
	Error    string     `json:"error"`
	At       *time.Time `json:"at"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// printGaps prints the forensics of every gap of the room.
func printGaps(ctx context.Context, st store.Store, roomID string, asJSON bool, stdout, stderr io.Writer) int {
	gaps, err := dagview.Gaps(ctx, st, roomID, store.BackwardFilter{}, maxGapReferences)
	if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}
	if asJSON {
		report := gapsReport{RoomID: roomID, Gaps: []gapJSON{}}
		for _, g := range gaps {
			j := gapJSON{
				EventID: g.EventID, BelowDepth: g.BelowDepth, ReferencedBy: append([]string{}, g.ReferencedBy...),
				FirstSeen: timeOrNil(g.FirstSeen), Attempts: g.Attempts, LastError: g.LastError,
				LastAttemptAt: timeOrNil(g.LastAttemptAt), NextAttemptAt: timeOrNil(g.NextAttemptAt),
				Unfillable: g.Unfillable, UnfillableReason: g.UnfillableReason, Peers: []peerAnswerJSON{},
			}
			for _, p := range g.Peers {
				j.Peers = append(j.Peers, peerAnswerJSON{Peer: p.Peer, Endpoint: p.Endpoint, Outcome: p.Outcome, Error: p.Error, At: timeOrNil(p.At)})
			}
			report.Gaps = append(report.Gaps, j)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return ExitFailed
		}
		return ExitOK
	}
	writeGapsText(stdout, roomID, gaps, time.Now())
	return ExitOK
}

// writeGapsText prints the gaps for people, the deepest first.
func writeGapsText(w io.Writer, roomID string, gaps []dagview.Gap, now time.Time) {
	fmt.Fprintf(w, "room %s: %d gaps\n", roomID, len(gaps))
	for _, g := range gaps {
		fmt.Fprintf(w, "\ngap %s (missing, below depth %d, its shallowest child's)\n", g.EventID, g.BelowDepth)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  referenced by:\t%s\n", orNone(strings.Join(g.ReferencedBy, " ")))
		fmt.Fprintf(tw, "  first seen:\t%s\n", when(g.FirstSeen, now))
		fmt.Fprintf(tw, "  attempts:\t%d (last %s)\n", g.Attempts, when(g.LastAttemptAt, now))
		if g.Unfillable {
			fmt.Fprintf(tw, "  unfillable:\t%s\n", g.UnfillableReason)
		}
		fmt.Fprintf(tw, "  last error:\t%s\n", orNone(g.LastError))
		next := "at the next pass"
		if !g.NextAttemptAt.IsZero() {
			next = when(g.NextAttemptAt, now)
		}
		fmt.Fprintf(tw, "  next retry:\t%s\n", next)
		_ = tw.Flush()
		if len(g.Peers) == 0 {
			fmt.Fprintln(w, "  peers:         none asked yet")
			continue
		}
		fmt.Fprintln(w, "  peers:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, p := range g.Peers {
			endpoint := "-"
			if p.Endpoint != "" {
				endpoint = "/" + p.Endpoint
			}
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", p.Peer, endpoint, p.Outcome, when(p.At, now), orNone(p.Error))
		}
		_ = tw.Flush()
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// when is a time for people: RFC 3339, and how long ago or ahead.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	switch {
	case d == 0:
		rel = "now"
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}

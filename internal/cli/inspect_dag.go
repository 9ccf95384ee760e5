package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/roomsync/roomsync/internal/dagview"
	"github.com/roomsync/roomsync/store"
)

// dagFlags are inspect's flags for drawing the DAG.
type dagFlags struct {
	on     bool
	format string
	around string
	depth  int64
}

func (d *dagFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&d.on, "dag", false, "Draw the room's DAG (forks, merges, gaps, redacted and rejected events, heads; linear runs folded) on stdout, as --format says.")
	fs.StringVar(&d.format, "format", "svg", "With --dag: svg (drawn by roomsync, no Graphviz needed) or dot (Graphviz DOT text).")
	fs.StringVar(&d.around, "around", "", "With --dag: draw only the events within --depth depths of this event (or gap).")
	fs.Int64Var(&d.depth, "depth", 50, "With --dag --around: how many depths above and below the event to draw.")
}

func (d *dagFlags) validate() error {
	switch {
	case !d.on && (d.around != "" || d.format != "svg"):
		return errors.New("--format and --around take --dag")
	case d.format != "svg" && d.format != "dot":
		return fmt.Errorf("--format %q: want svg or dot", d.format)
	case d.depth < 0:
		return fmt.Errorf("--depth %d: want 0 or more", d.depth)
	}
	return nil
}

// drawDAG writes the room's DAG picture to stdout.
func drawDAG(ctx context.Context, st store.Store, roomID string, d dagFlags, stdout, stderr io.Writer) int {
	g, err := dagview.Build(ctx, st, roomID, dagview.Options{Around: d.around, Depth: d.depth})
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitBadInput
	}
	if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}
	write := dagview.WriteSVG
	if d.format == "dot" {
		write = dagview.WriteDOT
	}
	if err := write(stdout, g); err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}
	if len(g.Nodes) > 3000 && d.around == "" {
		fmt.Fprintf(stderr, "roomsync inspect: %d nodes drawn; --around EVENT_ID --depth N draws a part\n", len(g.Nodes))
	}
	return ExitOK
}

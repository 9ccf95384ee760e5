package dagview

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fixturesync"
	"github.com/roomsync/roomsync/store"
)

// forkedRoomWithGaps syncs a forked fixture room from a peer that withholds two messages, so
// that the store holds the room with those two as gaps. It returns the store and the gaps.
func forkedRoomWithGaps(t testing.TB) (store.Store, *fixturepeer.Room, []id.EventID) {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 41, Events: 260, ForkRate: 0.2, MergeRate: 0.3, LinearRunRate: 0.02, LinearRunLength: 30})
	var withheld []id.EventID
	for _, i := range []int{120, 200} {
		for room.Events[i].Type != "m.room.message" {
			i++
		}
		withheld = append(withheld, room.Events[i].ID)
	}
	peer := fixturepeer.Start(t, room, fixturepeer.WithHold(fixturepeer.HoldAllBut(withheld...)))
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if r := fixturesync.Sync(t, st, room, []*fixturepeer.Peer{peer}, 10); r.Unfillable != 2 {
		t.Fatalf("after the sync: %+v; want the 2 withheld events as unfillable gaps", r)
	}
	return st, room, withheld
}

// The picture of a forked room with two gaps is well-formed SVG that names both gaps (with
// the peer's answer), shows forks and merges, and folds the linear runs.
func TestPictureOfAForkedRoomWithGaps(t *testing.T) {
	st, room, withheld := forkedRoomWithGaps(t)
	ctx := context.Background()
	g, err := Build(ctx, st, string(room.ID), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := st.Room(ctx, string(room.ID))
	if g.Events != int(r.Events) || g.Gaps != 2 || len(g.Nodes) >= g.Events/2 {
		t.Errorf("%d events (store: %d) in %d nodes, %d gaps; want every event, folded, and 2 gaps", g.Events, r.Events, len(g.Nodes), g.Gaps)
	}
	forks, merges := 0, 0
	out, in := map[int]int{}, map[int]int{}
	for _, e := range g.Edges {
		out[e.From]++
		in[e.To]++
	}
	for i := range g.Nodes {
		if out[i] > 1 {
			merges++
		}
		if in[i] > 1 {
			forks++
		}
	}
	if forks == 0 || merges == 0 {
		t.Errorf("%d forks and %d merges drawn; the room has both", forks, merges)
	}

	var svg bytes.Buffer
	if err := WriteSVG(&svg, g); err != nil {
		t.Fatal(err)
	}
	texts, ids := parseSVG(t, svg.Bytes())
	for _, gap := range withheld {
		if !ids["gap-"+string(gap)] {
			t.Errorf("no node for the gap %s", gap)
		}
		if !strings.Contains(texts, "gap "+string(gap)+": missing") || !strings.Contains(texts, "not_found") {
			t.Errorf("the picture does not name the gap %s with the peer's answer", gap)
		}
	}
	if dir := os.Getenv("ROOMSYNC_DAG_OUT"); dir != "" {
		// For a look at the picture: ROOMSYNC_DAG_OUT=/tmp go test -run Picture ./internal/dagview
		_ = os.WriteFile(filepath.Join(dir, "dag-fixture.svg"), svg.Bytes(), 0o644)
	}

	var dot bytes.Buffer
	if err := WriteDOT(&dot, g); err != nil {
		t.Fatal(err)
	}
	for _, gap := range withheld {
		if !strings.Contains(dot.String(), "gap "+string(gap)) {
			t.Errorf("the DOT text does not name the gap %s", gap)
		}
	}
	if n := strings.Count(dot.String(), " -> "); n != len(g.Edges) {
		t.Errorf("%d DOT edges, want %d", n, len(g.Edges))
	}
}

// Around an event, the picture holds only the events within the depth window, and a gap's
// own ID centres it too.
func TestPictureAround(t *testing.T) {
	st, room, withheld := forkedRoomWithGaps(t)
	ctx := context.Background()
	g, err := Build(ctx, st, string(room.ID), Options{Around: string(withheld[0]), Depth: 3})
	if err != nil {
		t.Fatal(err)
	}
	if g.Gaps < 1 || g.MaxDepth-g.MinDepth != 6 {
		t.Errorf("around the gap: %d gaps, depths %d–%d", g.Gaps, g.MinDepth, g.MaxDepth)
	}
	for _, n := range g.Nodes {
		if n.Kind != KindGap && (n.MinDepth < g.MinDepth || n.MaxDepth > g.MaxDepth) {
			t.Errorf("node %s at depths %d–%d outside the window %d–%d", n.First, n.MinDepth, n.MaxDepth, g.MinDepth, g.MaxDepth)
		}
	}
	if _, err := Build(ctx, st, string(room.ID), Options{Around: "$nothing", Depth: 3}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("around an unknown event: %v", err)
	}
	small, err := Build(ctx, st, string(room.ID), Options{MaxEvents: 10})
	if err != nil || !small.Truncated || small.Events != 10 {
		t.Errorf("with MaxEvents 10: %d events, truncated %t, %v", small.Events, small.Truncated, err)
	}
}

// parseSVG decodes the whole document (failing the test on malformed XML) and returns its
// character data and element IDs.
func parseSVG(t *testing.T, doc []byte) (string, map[string]bool) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var texts strings.Builder
	ids := map[string]bool{}
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Space + " " + tok.Name.Local
			}
			for _, a := range tok.Attr {
				if a.Name.Local == "id" {
					ids[a.Value] = true
				}
			}
		case xml.CharData:
			texts.Write(tok)
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Errorf("root element %q, want svg", root)
	}
	return texts.String(), ids
}

package dagview

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/roomsync/roomsync/store"
)

// benchRoom is a room of n events as busy rooms are: long linear stretches, a fork every
// fifty events or so that merges within a few events, and a few holes.
func benchRoom(tb testing.TB, n int) (store.Store, string) {
	tb.Helper()
	const room = "!bench:example.org"
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(tb.TempDir(), "events.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	rng := rand.New(rand.NewPCG(7, 7))
	tips := []string{}
	depth := map[string]int64{}
	var batch []store.Event
	for i := range n {
		id := fmt.Sprintf("$e%07d:example.org", i)
		var prevs []string
		switch {
		case i == 0:
		case len(tips) > 1 && rng.Float64() < 0.3:
			prevs, tips = tips, nil // merge every open branch
		case rng.Float64() < 0.02 && len(tips) < 4:
			prevs = []string{tips[0]} // a sibling of the newest: a fork
		default:
			prevs = []string{tips[len(tips)-1]}
			tips = tips[:len(tips)-1]
		}
		if i > 0 && i%20_000 == 0 {
			prevs = append(prevs, fmt.Sprintf("$hole%d:example.org", i)) // a gap
		}
		d := int64(1)
		for _, p := range prevs {
			d = max(d, depth[p]+1)
		}
		depth[id] = d
		tips = append(tips, id)
		typ := "m.room.message"
		if i == 0 {
			typ = "m.room.create"
		}
		batch = append(batch, store.Event{ID: id, RoomID: room, Depth: d, OriginServerTS: int64(i), Type: typ,
			Sender: "@a:example.org", Origin: "example.org", PrevEvents: prevs, Raw: []byte(`{"content":{"body":"hello"}}`)})
		if len(batch) == 2000 || i == n-1 {
			if _, err := st.InsertEvents(context.Background(), room, batch); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return st, room
}

// BenchmarkDraw100k draws a 100,000-event room from a SQLite store: read, fold, lay out and
// write the SVG. Goal: seconds.
func BenchmarkDraw100k(b *testing.B) {
	st, room := benchRoom(b, 100_000)
	b.ResetTimer()
	var g *Graph
	start := time.Now()
	for b.Loop() {
		var err error
		if g, err = Build(context.Background(), st, room, Options{}); err != nil {
			b.Fatal(err)
		}
		if err := WriteSVG(io.Discard, g); err != nil {
			b.Fatal(err)
		}
	}
	per := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(per, "s/draw")
	b.Logf("%d events in %d nodes (%d gaps) drawn in %.2f s (goal: seconds)", g.Events, len(g.Nodes), g.Gaps, per)
}

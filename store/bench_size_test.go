package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The goal of BenchmarkInsertAtSize: a store that does not slow down as a room grows.
const (
	goalSQLiteEventsPerSec = 20_000
	goalPostgresFactor     = 1.5 // PostgreSQL may be this much slower than SQLite, no more
)

// BenchmarkInsertAtSize measures sustained inserts of 1 KiB events into one room of a forky DAG
// at three sizes, in one run: the first 100,000 events of an empty room, and 100,000 events
// into rooms of 500,000 and 1,000,000 (ROOMSYNC_BENCH_ROOM_EVENTS changes the largest size;
// the middle one is half of it), in batches of 100 (what one /backfill answer brings) and
// 500, each batch the children of what is held; then 100,000 events backfilled into the
// largest room, newest first, each batch filling the gaps the one before left. A window of
// 100,000 events spans a few checkpoints of SQLite's WAL. PostgreSQL is measured at the
// largest size, 50,000 events a window: in each batch size, with the server's durability
// and with synchronous_commit=off, then backfilled. Each figure is printed beside its goal
// and the machine's load, with the CPU time an event took in this process, which other
// processes on a busy machine do not inflate as they do the wall time.
//
// The large SQLite rooms are built once with large batches and kept, checkpointed, under the
// temp dir (roomsync-bench/, named by schema version and page size), so that a rerun only
// copies them; each measurement starts from a fresh copy so that it sees the same room.
// PostgreSQL's room is built in each run (its databases live and die with the test server),
// once for all its windows.
func BenchmarkInsertAtSize(b *testing.B) {
	size := benchRoomSize(b)
	sqliteAt := map[int]float64{} // batch size → events/s at the largest size
	for _, batch := range []int{100, 500} {
		b.Run(fmt.Sprintf("sqlite/batch=%d", batch), func(b *testing.B) {
			c := openRoomCache(b)
			first := insertWindow(b, openTest(b, sqliteTestURL(b)), 0, 100_000, batch)
			b.ReportMetric(first, "events/s@0-100k")
			for _, at := range []int{size / 2, size} {
				rate := insertWindow(b, openTest(b, c.sqliteRoomAt(b, at)), at, 100_000, batch)
				b.ReportMetric(rate, fmt.Sprintf("events/s@%s", count(at)))
				sqliteAt[batch] = rate
			}
			b.Logf("goal: SQLite ≥ %d events/s at %s events (batch %d): %s; %s",
				goalSQLiteEventsPerSec, count(size), batch, verdict(sqliteAt[batch], goalSQLiteEventsPerSec), loadAverage())
		})
	}
	b.Run("sqlite/backfill/batch=100", func(b *testing.B) {
		g := newDAG(room, 1024, benchSeed)
		g.skip(size)
		rate := insertBackfill(b, openTest(b, openRoomCache(b).sqliteRoomAt(b, size)), g, size, 100_000, 100)
		b.ReportMetric(rate, fmt.Sprintf("events/s@%s", count(size)))
		b.Logf("SQLite backfilling into %s events (batch 100): %.0f events/s; %s", count(size), rate, loadAverage())
	})
	// PostgreSQL's room is one database for every window, dropped when the benchmark ends;
	// it is built by the first sub-benchmark that runs, and each window grows it.
	var pgURL string
	if os.Getenv(postgresEnv) != "" {
		pgURL = postgresTestURL(b)
	}
	pg := &pgRoom{size: size}
	b.Cleanup(pg.close)
	for _, w := range []struct {
		name  string
		batch int
		async bool
	}{{"batch=100", 100, false}, {"batch=500", 500, false}, {"async-commit/batch=100", 100, true},
		{"async-commit/batch=500", 500, true}, {"backfill/batch=100", 100, false}} {
		b.Run("postgres/"+w.name, func(b *testing.B) {
			if pgURL == "" {
				postgresTestURL(b) // skips, or fails in CI
			}
			s := pg.store(b, pgURL, w.async)
			pg.checkpoint(b)
			var rate float64
			if strings.HasPrefix(w.name, "backfill") {
				rate = insertBackfill(b, s, pg.dag, pg.at, 50_000, w.batch)
			} else {
				rate = insertWindowFrom(b, s, pg.dag, pg.at, 50_000, w.batch)
			}
			pg.at += 50_000
			b.ReportMetric(rate, fmt.Sprintf("events/s@%s", count(size)))
			if lite, ok := sqliteAt[w.batch]; ok && !strings.HasPrefix(w.name, "backfill") {
				b.Logf("goal: PostgreSQL%s ≥ SQLite/%.1f = %.0f events/s at %s events (batch %d): %s; %s",
					map[bool]string{true: " with synchronous_commit=off"}[w.async], goalPostgresFactor,
					lite/goalPostgresFactor, count(size), w.batch, verdict(rate, lite/goalPostgresFactor), loadAverage())
			}
		})
	}
}

// pgRoom is BenchmarkInsertAtSize's PostgreSQL room, with a store of the default durability
// and one whose commits do not wait for the WAL to reach the disk (synchronous_commit=off,
// which a store URL may ask for: the database stays consistent, and a crash of the server
// loses at most the last commits, as a crash of the machine does on SQLite).
type pgRoom struct {
	size        int
	sync, async Store
	dag         *dag
	at          int
}

// checkpoint has the server write out what the room's build or the window before left in its
// WAL, as the SQLite rooms are checkpointed before each window: otherwise a window's figure
// depends on where in the server's checkpoint cycle it falls (11,600 to 19,500 events/s in
// batches of 100 at a million events, in one hour's runs).
func (r *pgRoom) checkpoint(b *testing.B) {
	b.Helper()
	if _, err := r.sync.(*sqlStore).db.ExecContext(b.Context(), "CHECKPOINT"); err != nil {
		b.Logf("no checkpoint before the window (the figure may vary more): %v", err)
	}
}

func (r *pgRoom) store(b *testing.B, u string, async bool) Store {
	b.Helper()
	if r.sync == nil {
		s, err := Open(context.Background(), u)
		if err != nil {
			b.Fatal(err)
		}
		r.sync, r.dag, r.at = s, newDAG(room, 1024, benchSeed), r.size
		took := buildRoom(b, s, r.dag, r.size, benchBuildBatch)
		b.Logf("built a PostgreSQL room of %s events in %v", count(r.size), took.Round(time.Second))
	}
	if !async {
		return r.sync
	}
	if r.async == nil {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		s, err := Open(context.Background(), u+sep+"synchronous_commit=off")
		if err != nil {
			b.Fatal(err)
		}
		r.async = s
	}
	return r.async
}

func (r *pgRoom) close() {
	for _, s := range []Store{r.sync, r.async} {
		if s != nil {
			s.Close()
		}
	}
}

// insertBackfill inserts the next n events of g newest first, a batch at a time, as a
// backfill brings them: each batch fills the gaps the one before left, and leaves new ones.
func insertBackfill(b *testing.B, s Store, g *dag, at, n, batch int) float64 {
	b.Helper()
	events := g.grow(n, 0.17, 0.2)
	var took, cpu time.Duration
	for end := n; end > 0; end -= batch {
		start, startCPU := time.Now(), cpuTime(b)
		if _, err := s.InsertEvents(b.Context(), room, events[max(0, end-batch):end]); err != nil {
			b.Fatalf("backfill at %d events: %v", at+n-end, err)
		}
		took += time.Since(start)
		cpu += cpuTime(b) - startCPU
	}
	r, err := s.Room(b.Context(), room)
	if err != nil || r.BackwardExtremities != 0 {
		b.Fatalf("after the backfill: %d gaps (%v), want none", r.BackwardExtremities, err)
	}
	rate := float64(n) / took.Seconds()
	b.Logf("%s events backfilled into a room of %s in batches of %d: %.0f events/s (%.0f µs CPU an event)",
		count(n), count(at), batch, rate, float64(cpu.Microseconds())/float64(n))
	return rate
}

// loadAverage is the machine's load, for figures measured on a machine others use too.
func loadAverage() string {
	avg, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load average unknown"
	}
	return fmt.Sprintf("load average %s on %d CPUs", strings.Join(strings.Fields(string(avg))[:3], " "), runtime.NumCPU())
}

// benchRoomSize is the largest room of the benchmarks that build rooms of a million events,
// or ROOMSYNC_BENCH_ROOM_EVENTS.
func benchRoomSize(b *testing.B) int {
	v := os.Getenv("ROOMSYNC_BENCH_ROOM_EVENTS")
	if v == "" {
		return 1_000_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 200_000 {
		b.Fatalf("ROOMSYNC_BENCH_ROOM_EVENTS=%q: want a number of at least 200000", v)
	}
	return n
}

// benchSeed and benchBuildBatch fix the cached rooms: a change to either is another room.
const (
	benchSeed       = 1313
	benchBuildBatch = 5000
)

func verdict(got, goal float64) string {
	if got >= goal {
		return fmt.Sprintf("%.0f, met", got)
	}
	return fmt.Sprintf("%.0f, MISSED", got)
}

// count spells 500000 as 500k and 1000000 as 1M.
func count(n int) string {
	switch {
	case n == 0:
		return "0"
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// insertWindow inserts n events into the room of the store at u, which holds the first at
// events of the benchmark's DAG, and returns the events per second.
func insertWindow(b *testing.B, s Store, at, n, batch int) float64 {
	b.Helper()
	g := newDAG(room, 1024, benchSeed)
	g.skip(at)
	return insertWindowFrom(b, s, g, at, n, batch)
}

// insertWindowFrom inserts the next n events of g in batches, timing only the inserts.
func insertWindowFrom(b *testing.B, s Store, g *dag, at, n, batch int) float64 {
	b.Helper()
	var took, cpu time.Duration
	for done := 0; done < n; done += batch {
		events := g.grow(min(batch, n-done), 0.17, 0.2)
		start, startCPU := time.Now(), cpuTime(b)
		if _, err := s.InsertEvents(b.Context(), room, events); err != nil {
			b.Fatalf("insert at %d events: %v", at+done, err)
		}
		took += time.Since(start)
		cpu += cpuTime(b) - startCPU
	}
	rate := float64(n) / took.Seconds()
	b.Logf("%s events into a room of %s in batches of %d: %.0f events/s (%.0f µs CPU an event)",
		count(n), count(at), batch, rate, float64(cpu.Microseconds())/float64(n))
	return rate
}

// buildRoom inserts the next n events of g in batches, untimed but for the total.
func buildRoom(b *testing.B, s Store, g *dag, n, batch int) time.Duration {
	b.Helper()
	start := time.Now()
	for done := 0; done < n; done += batch {
		if _, err := s.InsertEvents(b.Context(), room, g.grow(min(batch, n-done), 0.17, 0.2)); err != nil {
			b.Fatalf("build a room: insert at %d events: %v", done, err)
		}
	}
	return time.Since(start)
}

// roomCache is the directory of the benchmark's cached SQLite rooms, one for each schema
// version and page size: a new migration builds them again.
type roomCache struct{ dir string }

func openRoomCache(b *testing.B) roomCache {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "roomsync-bench",
		fmt.Sprintf("schema-v%d-page%d-seed%d-1KiB-forky", migrations[len(migrations)-1].version, sqlitePageSize, benchSeed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return roomCache{dir}
}

// sqliteRoomAt returns the URL of a fresh copy of the room of the first at events, building
// it first if the cache lacks it (from the largest smaller room the cache holds).
func (c roomCache) sqliteRoomAt(b *testing.B, at int) string {
	b.Helper()
	cached := filepath.Join(c.dir, fmt.Sprintf("sqlite-%d.db", at))
	if _, err := os.Stat(cached); errors.Is(err, fs.ErrNotExist) {
		c.build(b, at, cached)
	} else if err != nil {
		b.Fatal(err)
	}
	copyPath := filepath.Join(b.TempDir(), "events.db")
	if err := copyFile(cached, copyPath); err != nil {
		b.Fatal(err)
	}
	return "sqlite://" + copyPath
}

// build makes the cached room of at events, from the largest smaller one the cache holds.
func (c roomCache) build(b *testing.B, at int, cached string) {
	b.Helper()
	from := 0
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		var n int
		if _, err := fmt.Sscanf(e.Name(), "sqlite-%d.db", &n); err == nil && n < at && n > from &&
			strings.HasSuffix(e.Name(), ".db") {
			from = n
		}
	}
	building := cached + ".building"
	if from > 0 {
		if err := copyFile(filepath.Join(c.dir, fmt.Sprintf("sqlite-%d.db", from)), building); err != nil {
			b.Fatal(err)
		}
	} else {
		_ = os.Remove(building)
	}
	s, err := Open(context.Background(), "sqlite://"+building)
	if err != nil {
		b.Fatal(err)
	}
	g := newDAG(room, 1024, benchSeed)
	g.skip(from)
	took := buildRoom(b, s, g, at-from, benchBuildBatch)
	// Closing the last connection checkpoints the WAL into the file and removes it.
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(building + "-wal"); err == nil {
		b.Fatalf("%s-wal is left after closing the store", building)
	}
	if err := os.Rename(building, cached); err != nil {
		b.Fatal(err)
	}
	b.Logf("built the cached room of %s events from %s in %v (%.0f events/s in batches of %d): %s",
		count(at), count(from), took.Round(time.Second), float64(at-from)/took.Seconds(), benchBuildBatch, cached)
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// cpuTime is the CPU time the process has used so far (user and system), which other
// processes on a busy machine do not inflate as they do the wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

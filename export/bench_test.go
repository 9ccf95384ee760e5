package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/export"
	"github.com/roomsync/roomsync/internal/benchstore"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// BenchmarkExport exports rooms of 100,000 and 1,000,000 events in each format and reports
// events/s and the peak memory of the export alone: resident set (VmHWM, reset before each
// export) and heap growth. The goal is constant memory: the same peaks for both sizes, as an
// export holds one page of events at a time.
//
// The stores are built once, straight through the store (no signing: an export reads what
// is stored), and kept in the temporary directory (roomsync-bench-export-*.db); the million
// takes a minute or two. go test ./export/ -run '^$' -bench BenchmarkExport -benchtime=1x
// (ROOMSYNC_BENCH_EXPORT_EVENTS=10000,20000 for other sizes). Measured on 2 cores, one size
// a process: 100,000 events 47-50 MiB peak RSS, 1,000,000 events 49-51 MiB; 140,000 events/s
// as PDUs, 114,000 as client events, 93,000 as text.
func BenchmarkExport(b *testing.B) {
	sizes := []int{100_000, 1_000_000}
	if v := os.Getenv("ROOMSYNC_BENCH_EXPORT_EVENTS"); v != "" { // e.g. 10000,20000 for a quick look
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("ROOMSYNC_BENCH_EXPORT_EVENTS: %q is not a size", f)
			}
			sizes = append(sizes, n)
		}
	}
	for _, size := range sizes {
		// One store open at a time (closed when its sizes are done), so that the resident
		// set holds one store's caches: SQLite's page cache fills up to its bound (16 MiB a
		// reader connection) whatever the room's size. For figures free of the other size,
		// run one size a process: -bench 'BenchmarkExport/events=1000000$/'.
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) { benchExportSize(b, size) })
	}
}

func benchExportSize(b *testing.B, size int) {
	st := benchExportStore(b, size)
	for _, format := range export.Formats {
		b.Run("format="+string(format), func(b *testing.B) {
			var written int64
			var rss, heap uint64
			for b.Loop() {
				b.StopTimer()
				resetPeakRSS()
				b.StartTimer()
				heap = max(heap, fixturepeer.PeakHeapGrowth(func() {
					ex, err := export.New(context.Background(), st, export.Options{RoomID: benchRoom, Format: format})
					if err != nil {
						b.Fatal(err)
					}
					var out countingDiscard
					n, err := ex.Run(context.Background(), &out)
					if err != nil || n != int64(size) {
						b.Fatalf("exported %d of %d events: %v", n, size, err)
					}
					written = out.n
				}))
				rss = max(rss, peakRSS())
			}
			perExport := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(size)/perExport, "events/s")
			b.ReportMetric(float64(written)/perExport/(1<<20), "MiB/s")
			b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
			b.ReportMetric(float64(heap)/(1<<20), "peak-heap-growth-MiB")
			b.Logf("%s of %d events (%d MiB written): %.0f events/s, peak RSS %.1f MiB, heap growth %.1f MiB (goal: constant memory, the same for any room size)",
				format, size, written>>20, float64(size)/perExport, float64(rss)/(1<<20), float64(heap)/(1<<20))
		})
	}
}

// countingDiscard counts what an export writes and keeps none of it.
type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// resetPeakRSS returns what the process can to the OS and resets VmHWM to the current
// resident set (Linux: "5" to clear_refs), so that the next peak is the export's own.
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS is VmHWM in bytes or, where /proc is missing, the memory the Go runtime holds from
// the OS now (a fallback that misses what SQLite's C runtime maps outside the Go heap).
func peakRSS() uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys
}

const benchRoom = "!bench:origin.bench"

// benchExportStore opens the store of a room of n events, building it first if the
// temporary directory does not hold it yet.
func benchExportStore(b *testing.B, n int) store.Store {
	b.Helper()
	return benchstore.Open(b, "export", benchRoom, n, buildExportRoom)
}

// buildExportRoom writes a room of n PDU-shaped events: a chain that forks and merges every
// hundred events, messages of about 300 bytes, and a member joining or renaming every
// thousand events (naming the member event it replaces, so that the transcript looks it up).
func buildExportRoom(ctx context.Context, st store.Store, n int) error {
	const batch = 5000
	var prev []string
	var sibling string
	members := map[string]string{} // user → its latest member event
	body := strings.Repeat("lorem ipsum dolor sit amet ", 10)
	for done := 0; done < n; done += batch {
		events := make([]store.Event, 0, batch)
		for i := done; i < min(n, done+batch); i++ {
			id := fmt.Sprintf("$bench%d", i)
			ev := store.Event{ID: id, RoomID: benchRoom, Depth: int64(i + 1), OriginServerTS: 1_704_067_200_000 + int64(i)*500,
				Type: "m.room.message", Sender: fmt.Sprintf("@user%d:origin.bench", i%50), Origin: "origin.bench",
				PrevEvents: prev}
			content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d: %s", i, body)}
			var auth []string
			if i%1000 == 0 {
				user := fmt.Sprintf("@user%d:origin.bench", (i/1000)%50)
				ev.Type, ev.Sender, ev.StateKey = "m.room.member", user, &user
				content = map[string]any{"membership": "join", "displayname": fmt.Sprintf("User %d", i)}
				if old, ok := members[user]; ok {
					auth = append(auth, old)
				}
				members[user] = id
			}
			raw, err := json.Marshal(map[string]any{"auth_events": append([]string{}, auth...), "content": content,
				"depth": ev.Depth, "origin_server_ts": ev.OriginServerTS, "prev_events": append([]string{}, prev...),
				"room_id": benchRoom, "sender": ev.Sender, "state_key": ev.StateKey, "type": ev.Type})
			if err != nil {
				return err
			}
			ev.Raw = bytes.ReplaceAll(raw, []byte(`,"state_key":null`), nil)
			events = append(events, ev)
			// A fork every hundred events (two events with the same prevs), merged by the next.
			switch i % 100 {
			case 50:
				sibling = id
			case 51:
				prev = []string{sibling, id}
			default:
				prev = []string{id}
			}
		}
		if _, err := st.InsertEvents(ctx, benchRoom, events); err != nil {
			return err
		}
	}
	return nil
}

package resolver_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// largeRoomEnv sets the events of BenchmarkConvergeLarge's room; the benchmark is skipped
// without it (a million events take minutes): ROOMSYNC_BENCH_LARGE=1000000.
const largeRoomEnv = "ROOMSYNC_BENCH_LARGE"

// peerProcessEnv makes the test binary, run again by BenchmarkConvergeLarge, the fixture peer
// of a room of that many events (TestFixturePeerProcess).
const peerProcessEnv = "ROOMSYNC_FIXTURE_PEER_EVENTS"

// BenchmarkConvergeLarge converges a room of ROOMSYNC_BENCH_LARGE events (a forked DAG,
// 1 KiB bodies) from a fixture peer running in another process into a fresh SQLite store,
// with the resolver's default limits (10,000 events a pass), as the manager would: the
// figures are this process's alone. It reports the peak RSS of the sync (goal: under
// 250 MiB at a million events), its rate, and the cost of a pass over the converged room,
// wall and CPU time (goal: under 50 ms, whatever the room's size).
func BenchmarkConvergeLarge(b *testing.B) {
	events, _ := strconv.Atoi(os.Getenv(largeRoomEnv))
	if events <= 0 {
		b.Skipf("set %s to the room's events (e.g. 1000000) to run it", largeRoomEnv)
	}
	peerURL, peerName, roomID := startPeerProcess(b, events)

	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "large.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ep, err := federation.ParseEndpoint(peerURL, true)
	if err != nil {
		b.Fatal(err)
	}
	client, err := federation.NewClient(federation.Options{ServerName: ourServer, Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]federation.Endpoint{peerName: ep}})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	peers := resolver.NewPeerSet([]string{peerName})
	res, err := resolver.New(resolver.Config{
		Store: st, Client: client, Keys: federation.NewKeyRing(client, peers.Reachable).WithKeyStore(resolver.KeyStoreOf(st)).Key,
		Peers: peers, JoinUserID: "@roomsync:" + ourServer, Log: logr.Discard(),
	})
	if err != nil {
		b.Fatal(err)
	}

	resetPeakRSS(b)
	baseRSS := procStatusKiB(b, "VmRSS")
	start := time.Now()
	stored, passes := 0, 0
	for ; passes < events/1000+100; passes++ {
		r, err := res.SyncRoom(context.Background(), roomID, resolver.History{})
		if err != nil {
			b.Fatalf("pass %d: %v", passes, err)
		}
		stored += r.Stored
		if r.Converged {
			break
		}
		if r.Stored == 0 && r.Err != nil {
			b.Fatalf("pass %d stored nothing: %v", passes, r.Err)
		}
	}
	took := time.Since(start)
	peak := procStatusKiB(b, "VmHWM")
	if stored != events {
		b.Fatalf("stored %d events in %d passes, want %d", stored, passes+1, events)
	}

	// Passes over the converged room: nothing new, so each should cost what one look at the
	// peer and the store's counters costs.
	const repasses = 20
	var wall time.Duration
	cpu0 := cpuTime(b)
	for range repasses {
		t0 := time.Now()
		r, err := res.SyncRoom(context.Background(), roomID, resolver.History{})
		wall += time.Since(t0)
		if err != nil || !r.Converged || r.Stored != 0 {
			b.Fatalf("re-pass: %+v, %v", r, err)
		}
	}
	cpu := cpuTime(b) - cpu0

	b.ReportMetric(float64(events)/took.Seconds(), "events/s")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(wall.Microseconds())/1000/repasses, "re-pass-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/repasses, "re-pass-cpu-ms")
	b.Logf("%d events in %d passes, %s (%.0f events/s); peak RSS %.1f MiB (%.1f MiB before; goal < 250); "+
		"converged re-pass %.1f ms wall, %.1f ms CPU (goal < 50)", events, passes+1, took.Round(time.Second),
		float64(events)/took.Seconds(), float64(peak)/1024, float64(baseRSS)/1024,
		float64(wall.Microseconds())/1000/repasses, float64(cpu.Microseconds())/1000/repasses)
}

// TestFixturePeerProcess is the peer of BenchmarkConvergeLarge in its own process: it
// generates the room, serves it, prints "URL NAME ROOM" and serves until stdin closes.
func TestFixturePeerProcess(t *testing.T) {
	events, _ := strconv.Atoi(os.Getenv(peerProcessEnv))
	if events <= 0 {
		t.Skip("the peer process of BenchmarkConvergeLarge")
	}
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 21, Events: events, BodySize: 1024})
	peer := fixturepeer.Start(t, room)
	fmt.Printf("%s %s %s\n", peer.URL(), peer.ServerName(), room.ID)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startPeerProcess runs TestFixturePeerProcess in a child process and returns its address,
// server name and room; the child ends with the benchmark (its stdin is closed, then it is
// killed by its PID if it lingers).
func startPeerProcess(b *testing.B, events int) (url, name, roomID string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFixturePeerProcess$", "-test.v=false")
	// GODEBUG (a GC trace, say) is for the process measured, not the peer's.
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", peerProcessEnv, events), "GODEBUG=")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && strings.HasPrefix(f[0], "https://") {
				line <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		return f[0], f[1], f[2]
	case <-time.After(30 * time.Minute):
		b.Fatal("the fixture peer process did not start within 30 minutes")
	}
	return "", "", ""
}

// resetPeakRSS restarts the kernel's peak-RSS count (VmHWM) of this process from its RSS now.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("reset the peak RSS: %v", err)
	}
}

// procStatusKiB reads a "kB" field of /proc/self/status.
func procStatusKiB(b *testing.B, field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

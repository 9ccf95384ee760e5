package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The crash test runs its writer in a child process (this test binary, re-executed) so that
// it can be killed with SIGKILL: no deferred rollback, no Close, no flush.
const (
	crashURLEnv   = "ROOMSYNC_CRASH_CHILD_URL"
	crashStartEnv = "ROOMSYNC_CRASH_CHILD_START"

	crashBatchSize  = 500
	crashBatchCount = 40
	crashRounds     = 3
)

// crashBatches is the child's workload: disjoint batches of one DAG of ~1 KiB events, the
// events shuffled across batches so that children often arrive before their parents.
func crashBatches() [][]Event {
	events := shuffled(forkyDAG(room, crashBatchSize*crashBatchCount, 1024, 77), 78)
	out := make([][]Event, crashBatchCount)
	for i := range out {
		out[i] = events[i*crashBatchSize : (i+1)*crashBatchSize]
	}
	return out
}

// TestCrashChild is the child: it inserts the batches from crashStartEnv on and reports each
// commit on stdout. It does nothing unless TestCrashRecovery started it.
func TestCrashChild(t *testing.T) {
	u := os.Getenv(crashURLEnv)
	if u == "" {
		t.Skip("the child process of TestCrashRecovery")
	}
	start, err := strconv.Atoi(os.Getenv(crashStartEnv))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range crashBatches()[start:] {
		if _, err := s.InsertEvents(context.Background(), room, b); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("committed %d\n", start+i) // unbuffered: written before the next batch starts
	}
}

// TestCrashRecovery kills a writer mid-batch a few times; after each kill the store must hold
// exactly the batches committed (whole, none partly), with consistent extremities.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashURLEnv) != "" {
		t.Skip("in the child")
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			u := b.newURL(t)
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
			reported := -1 // the last batch a child said it committed
			for round := range crashRounds {
				reported = runCrashChild(t, u, reported, rng)
				unreported := checkAfterCrash(t, u, reported)
				t.Logf("round %d: killed after batch %d was reported committed (the next one stored too: %v)",
					round, reported, unreported)
			}
		})
	}
}

// runCrashChild starts a child at the batch after reported, lets it report a few more
// commits, kills it at a random moment within the next batch, and returns the last reported.
func runCrashChild(t *testing.T, u string, reported int, rng *rand.Rand) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashURLEnv+"="+u, crashStartEnv+"="+strconv.Itoa(reported+1))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAfter := reported + 3 + rng.IntN(6)
	lines := bufio.NewScanner(stdout)
	last := time.Now()
	killed := false
	// Read to the end, also after the kill: commits the child reported while we slept are
	// still in the pipe, and count.
	for lines.Scan() {
		n, ok := strings.CutPrefix(lines.Text(), "committed ")
		if !ok {
			continue
		}
		if reported, err = strconv.Atoi(n); err != nil {
			t.Fatalf("child said %q", lines.Text())
		}
		perBatch := time.Since(last)
		last = time.Now()
		if reported >= killAfter && !killed {
			// Somewhere inside the next batch's transaction, most of the time.
			time.Sleep(time.Duration(rng.Int64N(int64(perBatch))))
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the child did not get to batch %d in time", killAfter)
	}
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the child ended with %v before it was killed", err)
	}
	return reported
}

// checkAfterCrash reopens the store: the batches present must be exactly 0..reported, and
// perhaps the next one (committed, then killed before it said so), which it reports.
func checkAfterCrash(t *testing.T, u string, reported int) (unreported bool) {
	t.Helper()
	s, err := Open(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CheckConsistency(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	var present int64
	for i, batch := range crashBatches() {
		held, err := s.HasEvents(t.Context(), eventIDs(batch))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(held) != 0 && len(held) != len(batch):
			t.Fatalf("batch %d is partly stored: %d of %d events", i, len(held), len(batch))
		case i <= reported && len(held) == 0:
			t.Fatalf("batch %d was reported committed but is missing", i)
		case i > reported+1 && len(held) != 0:
			t.Fatalf("batch %d is stored, but the last commit reported was %d", i, reported)
		}
		present += int64(len(held))
		unreported = unreported || (i == reported+1 && len(held) != 0)
	}
	r, err := s.Room(t.Context(), room)
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != present {
		t.Fatalf("room counts %d events, %d are stored", r.Events, present)
	}
	return unreported
}

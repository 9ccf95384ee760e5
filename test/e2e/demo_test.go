package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
	"github.com/roomsync/roomsync/internal/testenv"
)

// demoSeedEnv keeps the demo's room small: what matters here is that it converges.
var demoSeedEnv = []string{"DEMO_SEED_A=60", "DEMO_SEED_EACH=40"}

// TestDemo runs `make demo`'s program the way a newcomer does, minus the wait for Ctrl-C, and
// checks what it promises: exit 0, the RoomSync Ready and its store converged with every
// message sent, and not one of the processes it started left running.
func TestDemo(t *testing.T) {
	bin := buildDemo(t)
	work := filepath.Join(t.TempDir(), "work")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), append(demoSeedEnv, "DEMO_NONINTERACTIVE=1",
		"DEMO_WORKDIR="+work, "DEMO_KEEP_WORKDIR=1", "DEMO_ROOMSYNC="+roomsyncBin)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	t.Logf("demo ran %v", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { reapDemo(t, work) })
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, tail(out.String(), 6000))
	}
	assertDemoStopped(t, work, "etcd", "kube-apiserver", "dendrite-a", "dendrite-b", "roomsync-manager")

	// Ready, as kubectl told the demo while the control plane ran; the store, read here.
	var state struct {
		Room, Store, Ready string
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join(work, "demo.json")), &state); err != nil {
		t.Fatalf("demo.json: %v", err)
	}
	if state.Ready != "True" || state.Room == "" || !strings.HasPrefix(state.Store, "sqlite://"+work) {
		t.Fatalf("demo.json: %+v, want Ready True and a store in %s", state, work)
	}
	report, code := run(t, time.Minute, roomsyncBin, "inspect", "--store", state.Store, "--room", state.Room, "--json")
	if code != 0 {
		t.Fatalf("roomsync inspect exited %d", code)
	}
	var got struct {
		Events    int  `json:"events"`
		Converged bool `json:"converged"`
	}
	if err := json.Unmarshal([]byte(report), &got); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, report)
	}
	// createRoom's six events, B's join and every message of A and B.
	if want := 6 + 1 + 60 + 40 + 40; !got.Converged || got.Events < want {
		t.Errorf("store after the demo: %s\nwant converged and at least %d events", report, want)
	}
	if !strings.Contains(out.String(), "roomsync_room_converged{") {
		t.Errorf("demo output lacks the roomsync_room_converged metric:\n%s", tail(out.String(), 4000))
	}
}

// TestDemoInterrupted presses Ctrl-C while the demo seeds its room: it must exit 130, stop
// everything it started so far and remove its work directory.
func TestDemoInterrupted(t *testing.T) {
	bin := buildDemo(t)
	work := filepath.Join(t.TempDir(), "work")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = testenv.RepoRoot()
	// Many messages, so that the seeding is still going when the interrupt comes.
	cmd.Env = append(os.Environ(), "DEMO_SEED_A=3000", "DEMO_WORKDIR="+work, "DEMO_ROOMSYNC="+roomsyncBin)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reapDemo(t, work) })
	var log bytes.Buffer
	var pids []byte
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "seeding a room") && pids == nil {
			// Everything started so far, read before the demo removes its work dir.
			pids = mustRead(t, filepath.Join(work, "pids"))
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("interrupted demo: %v, want exit 130\n%s", err, tail(log.String(), 6000))
	}
	if pids == nil {
		t.Fatalf("the demo never reached the seeding step:\n%s", tail(log.String(), 6000))
	}
	assertNoneAlive(t, pids, "etcd", "kube-apiserver", "dendrite-a", "dendrite-b")
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir %s left behind (%v)", work, err)
	}
	if left, _ := localrun.PIDsMentioning(work); len(left) > 0 {
		t.Errorf("processes of the demo still running: %v", left)
	}
}

// buildDemo builds hack/demo into the test's temporary directory.
func buildDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demo")
	if _, code := run(t, 5*time.Minute, "go", "build", "-o", bin, "./hack/demo"); code != 0 {
		t.Fatalf("go build ./hack/demo exited %d", code)
	}
	return bin
}

// assertDemoStopped checks that every process the demo listed in work/pids, and among them
// each of want, has gone, and that no process names the work directory any more.
func assertDemoStopped(t *testing.T, work string, want ...string) {
	t.Helper()
	assertNoneAlive(t, mustRead(t, filepath.Join(work, "pids")), want...)
	if left, _ := localrun.PIDsMentioning(work); len(left) > 0 {
		for _, pid := range left {
			t.Errorf("PID %d outlived the demo: %s", pid, localrun.Cmdline(pid))
		}
	}
}

// assertNoneAlive reads "NAME PID" lines and checks that each of want is among them and that
// none of them runs.
func assertNoneAlive(t *testing.T, pidsFile []byte, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for line := range strings.Lines(string(pidsFile)) {
		name, pidText, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, err := strconv.Atoi(pidText)
		if err != nil {
			t.Errorf("pids: bad line %q", line)
			continue
		}
		seen[name] = true
		if localrun.Alive(pid) {
			t.Errorf("%s (PID %d) still runs: %s", name, pid, localrun.Cmdline(pid))
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("pids lists no %s:\n%s", w, pidsFile)
		}
	}
}

// reapDemo stops whatever a failed demo left running, so that a failing test does not leak
// processes into the next.
func reapDemo(t *testing.T, work string) {
	left, err := localrun.PIDsMentioning(work)
	if err != nil {
		t.Log(err)
	}
	for _, pid := range left {
		if err := localrun.StopPID(pid, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
}

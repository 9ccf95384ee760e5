package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/roomsync/roomsync/internal/dendrite"
	"github.com/roomsync/roomsync/internal/localrun"
	"github.com/roomsync/roomsync/internal/testenv"
)

// rmsName is the RoomSync the demo applies.
const rmsName = "dendrite-demo"

// demo is one run: what it started, so that cleanup can stop exactly that.
type demo struct {
	cfg  config
	root string
	work string
	t0   time.Time

	roomsync string // the binary
	env      *testenv.Env
	cpPIDs   map[string]int // etcd and kube-apiserver, found by their work dir
	peers    []*dendrite.Peer
	manager  *localrun.Process

	room, store            string
	metricsPort, probePort int
	// held is set once the results are shown and the demo waits for Ctrl-C.
	held bool
}

func newDemo(cfg config) (*demo, error) {
	d := &demo{cfg: cfg, root: testenv.RepoRoot(), t0: time.Now(), cpPIDs: map[string]int{}}
	if cfg.workdir == "" {
		work, err := os.MkdirTemp("", "roomsync-demo.")
		if err != nil {
			return nil, fmt.Errorf("make work dir: %w", err)
		}
		d.work = work
	} else {
		work, err := filepath.Abs(cfg.workdir)
		if err != nil {
			return nil, fmt.Errorf("DEMO_WORKDIR: %w", err)
		}
		if err := os.MkdirAll(work, 0o700); err != nil {
			return nil, fmt.Errorf("DEMO_WORKDIR: %w", err)
		}
		// Never remove what was there before: only an empty directory is ours to remove.
		if entries, err := os.ReadDir(work); err != nil || len(entries) > 0 {
			return nil, fmt.Errorf("DEMO_WORKDIR %s must be an empty directory (%v)", work, err)
		}
		d.work = work
	}
	if err := os.Chmod(d.work, 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	return d, nil
}

// logf writes a progress line to stderr.
func (d *demo) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}

// step announces the next step, with the seconds since the start.
func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\n\033[1m==> [%5.1fs] %s\033[0m\n", time.Since(d.t0).Seconds(), fmt.Sprintf(format, args...))
}

// kubectl runs kubectl against the control plane, each request bounded in time.
func (d *demo) kubectl(args ...string) (string, error) {
	return d.env.Kubectl(append([]string{"--request-timeout=20s"}, args...)...)
}

// recordPID appends "NAME PID" to work/pids, the list of every process the demo started.
func (d *demo) recordPID(name string, pid int) error {
	f, err := os.OpenFile(filepath.Join(d.work, "pids"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("record PID: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%s %d\n", name, pid); err != nil {
		_ = f.Close()
		return fmt.Errorf("record PID: %w", err)
	}
	return f.Close()
}

// run does the demo's steps; it returns nil when the results were shown and the demo is done
// (or Ctrl-C ended the wait).
func (d *demo) run(ctx context.Context) error {
	steps := []func(context.Context) error{
		d.build, d.startControlPlane, d.startPeers, d.seedRoom, d.startManager, d.applyRoomSync,
		d.waitReady, d.showResults,
	}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if d.cfg.noninteractive {
		fmt.Println()
		fmt.Println("DEMO_NONINTERACTIVE=1: stopping everything.")
		return nil
	}
	return d.hold(ctx)
}

// cleanup stops every process the demo started, newest first, each bounded in time, and
// removes the work directory unless DEMO_KEEP_WORKDIR=1.
func (d *demo) cleanup() {
	d.step("cleaning up")
	if d.manager != nil {
		if err := d.manager.Stop(15 * time.Second); err != nil {
			d.logf("%v", err)
		}
		d.logf("stopped roomsync manager (PID %d)", d.manager.PID())
	}
	for i := len(d.peers) - 1; i >= 0; i-- {
		if err := d.peers[i].Stop(); err != nil {
			d.logf("%v", err)
		}
	}
	if len(d.peers) > 0 {
		d.logf("stopped %d Dendrite(s)", len(d.peers))
	}
	if d.env != nil {
		if err := d.env.Stop(); err != nil {
			d.logf("stop control plane: %v", err)
		}
		// envtest gives up after its stop timeout; make sure nothing of it is left.
		for name, pid := range d.cpPIDs {
			if err := localrun.StopPID(pid, 5*time.Second); err != nil {
				d.logf("%s: %v", name, err)
			}
		}
		d.logf("stopped kube-apiserver and etcd")
	}
	if d.cfg.keepWorkdir {
		d.logf("kept %s", d.work)
		return
	}
	if err := os.RemoveAll(d.work); err != nil {
		d.logf("remove %s: %v", d.work, err)
	}
}

// showLogs prints the last lines of every log, after a failure.
func (d *demo) showLogs() {
	for _, f := range []string{"manager.log", "controlplane/kube-apiserver.log", "controlplane/etcd.log",
		"dendrite-a/dendrite.log", "dendrite-b/dendrite.log"} {
		path := filepath.Join(d.work, f)
		if tail := localrun.Tail(path, 15); tail != "" {
			fmt.Fprintf(os.Stderr, "---- last lines of %s\n%s\n", path, tail)
		}
	}
}

package dendrite

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
)

func pidPath(dir string) string    { return filepath.Join(dir, "dendrite.pid") }
func secretPath(dir string) string { return filepath.Join(dir, "registration_shared_secret") }

// readPID is the PID in dir/dendrite.pid, or 0.
func readPID(dir string) int {
	b, err := os.ReadFile(pidPath(dir))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// ours reports whether pid runs and is the Dendrite of dir (its command line names dir's
// config), so that a stale dendrite.pid whose number the system gave to another process is
// never signalled.
func ours(pid int, dir string) bool {
	return pid > 0 && localrun.Alive(pid) &&
		strings.Contains(localrun.Cmdline(pid), "-config "+configPath(dir))
}

// Stop stops the Dendrite started in Dir, whichever process started it.
func (p *Peer) Stop() error {
	return Stop(p.Dir, false, p.StopTimeout, p.logf)
}

// PID is the PID in Dir/dendrite.pid, or 0 when there is none.
func (p *Peer) PID() int { return readPID(p.Dir) }

// Running reports whether Dir's Dendrite runs.
func (p *Peer) Running() bool { return ours(readPID(p.Dir), p.Dir) }

// Stop stops the Dendrite of dir by the PID in dir/dendrite.pid: SIGTERM, then SIGKILL when
// it has not exited after grace (zero: $DENDRITE_STOP_TIMEOUT seconds, or 10). With clean it
// then removes dir. A dir without a running Dendrite of its own is not an error. logf may be
// nil.
func Stop(dir string, clean bool, grace time.Duration, logf func(string, ...any)) error {
	grace = durationOr(grace, "DENDRITE_STOP_TIMEOUT", 10*time.Second)
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		logf("no %s", dir)
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("stop dendrite in %s: %w", dir, err)
	}
	pid := readPID(abs)
	switch {
	case ours(pid, abs):
		if err := localrun.StopPID(pid, grace); err != nil {
			return fmt.Errorf("stop dendrite in %s: %w", abs, err)
		}
		logf("stopped PID %d", pid)
	case pid != 0:
		logf("PID %d is not %s's dendrite (any more): nothing to stop", pid, abs)
	default:
		logf("no dendrite.pid in %s", abs)
	}
	_ = os.Remove(pidPath(abs))
	if clean {
		if err := os.RemoveAll(abs); err != nil {
			return fmt.Errorf("remove %s: %w", abs, err)
		}
	}
	return nil
}

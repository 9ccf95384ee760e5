// Package localrun runs roomsync's pieces as local processes on loopback, for the end-to-end
// tests and `make demo`: free ports, a signing key and TLS certificate, the manager as a
// process, and stopping processes by PID. One implementation, so that the demo a newcomer runs
// and the tests CI runs start things the same way.
package localrun

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a long-running child process whose output goes to a log file.
type Process struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start starts bin with args in its own process group (so that a Ctrl-C at the terminal
// reaches only its parent, which stops it in order), stdin from /dev/null and stdout and
// stderr appended to logFile. A goroutine reaps it, so that it never lingers as a zombie.
func Start(name, logFile, bin string, args ...string) (*Process, error) {
	return startWith(func(*exec.Cmd) {}, name, logFile, bin, args...)
}

// StartIn is Start with the working directory dir.
func StartIn(dir, name, logFile, bin string, args ...string) (*Process, error) {
	return startWith(func(cmd *exec.Cmd) { cmd.Dir = dir }, name, logFile, bin, args...)
}

func startWith(adjust func(*exec.Cmd), name, logFile, bin string, args ...string) (*Process, error) {
	out, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	// The child gets its own copy of the descriptor; ours is not needed after Start.
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	adjust(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogFile: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitError is how the process ended, once Done is closed.
func (p *Process) ExitError() error {
	<-p.done
	return p.waitErr
}

// Stop sends SIGTERM, then SIGKILL when the process has not exited after grace, and waits
// (bounded) until it is reaped. Stopping a process that has exited already is not an error.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("stop %s (PID %d): did not exit within %v of SIGTERM, killed", p.Name, p.PID(), grace)
	case <-time.After(killWait):
		return fmt.Errorf("stop %s (PID %d): survived SIGKILL for %v", p.Name, p.PID(), killWait)
	}
}

// Kill sends SIGKILL at once, as a crash or the OOM killer would end the process, with no
// chance to clean up, and waits (bounded) until it is reaped.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("kill %s (PID %d): survived SIGKILL for %v", p.Name, p.PID(), killWait)
	}
}

// killWait bounds the wait for a process to go after SIGKILL.
const killWait = 5 * time.Second

// Alive reports whether pid names a running process: one that exists and is not a zombie (a
// zombie has exited; only its parent's wait is missing).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// StopPID stops a process that need not be our child: SIGTERM, a bounded wait of grace, then
// SIGKILL and another bounded wait. It fails when the process survives.
func StopPID(pid int, grace time.Duration) error {
	if !Alive(pid) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if waitGone(pid, grace) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitGone(pid, killWait) {
		return nil
	}
	return fmt.Errorf("stop PID %d: survived SIGKILL for %v", pid, killWait)
}

// waitGone polls until pid is no longer alive or d has passed.
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for n := 0; n < 100000; n++ {
		if !Alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !Alive(pid)
}

// Cmdline is the command line of pid with its arguments joined by spaces, or "" when it cannot
// be read (the process is gone, or a zombie).
func Cmdline(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// PIDsMentioning lists the live processes other than this one whose command line contains s
// (a work directory, say): how processes started on our behalf by others (envtest's etcd and
// kube-apiserver) are found, and how a test checks that none outlived their owner.
func PIDsMentioning(s string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if strings.Contains(Cmdline(pid), s) && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Comm is the short command name of pid ("etcd", say), or "" when it cannot be read.
func Comm(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

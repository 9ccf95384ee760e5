// Package dendrite runs real Matrix peers for roomsync's tests and demo: Dendrite v0.13.8
// (github.com/matrix-org/dendrite, Apache-2.0 — never the AGPL element-hq fork) built from its
// Go module, on loopback with self-signed TLS and SQLite, and a client of its client API that
// makes users, rooms and messages and lists a room's events. hack/dendrite.sh offers the same
// to people at a shell.
package dendrite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// Version is the Dendrite release built and run.
	Version = "v0.13.8"
	module  = "github.com/matrix-org/dendrite"
	// buildLockWait bounds the wait for another process's build (a cold build takes minutes
	// on two cores).
	buildLockWait = 20 * time.Minute
)

// tools are the commands built; bin/dendrite-<Version>/ holds all of them or is rebuilt.
var tools = []string{"dendrite", "generate-config", "generate-keys", "create-account"}

// BinDir is where the Dendrite tools of the source tree at root are cached.
func BinDir(root string) string { return filepath.Join(root, "bin", "dendrite-"+Version) }

func haveBinaries(dir string) bool {
	for _, t := range tools {
		st, err := os.Stat(filepath.Join(dir, t))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Build installs the Dendrite tools with `go install …@v0.13.8` into a temporary directory
// under root/bin and renames it to BinDir(root), under a lock, so that concurrent callers
// (hack/dendrite.sh of another checkout step, parallel test binaries) build once and never
// see half a set. The cache, lock and temporary names are the ones hack/dendrite.sh has
// always used, so existing caches are reused. It returns BinDir(root).
//
// SQLite: v0.13.8 picks its driver by build tag: with cgo mattn/go-sqlite3 (used when a C
// compiler is found; ~100 messages/s when seeding), without cgo modernc.org/sqlite (~60/s).
// The go command is $DENDRITE_GO (default go) with GOTOOLCHAIN=$DENDRITE_GOTOOLCHAIN (default
// go1.27.3; go1.26 builds v0.13.8 as well).
func Build(ctx context.Context, root string, logf func(string, ...any)) (string, error) {
	bindir := BinDir(root)
	if haveBinaries(bindir) {
		return bindir, nil
	}
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("build dendrite: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(root, "bin", ".dendrite-"+Version+".lock"), buildLockWait)
	if err != nil {
		return "", fmt.Errorf("build dendrite: %w", err)
	}
	defer unlock()
	if haveBinaries(bindir) {
		return bindir, nil
	}

	goCmd := envOr("DENDRITE_GO", "go")
	toolchain := envOr("DENDRITE_GOTOOLCHAIN", "go1.27.3")
	cgo := "1"
	if _, err := exec.LookPath(envOr("CC", "gcc")); err != nil {
		logf("no C compiler: building with CGO_ENABLED=0 (modernc.org/sqlite)")
		cgo = "0"
	}
	tmp := filepath.Join(root, "bin", fmt.Sprintf(".dendrite-%s.tmp.%d", Version, os.Getpid()))
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("build dendrite: %w", err)
	}
	args := []string{"install"}
	for _, t := range tools {
		args = append(args, module+"/cmd/"+t+"@"+Version)
	}
	logf("building Dendrite %s (GOTOOLCHAIN=%s CGO_ENABLED=%s); takes 1-2 min on 2 cores", Version, toolchain, cgo)
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, goCmd, args...)
	// Run outside the project's module, so that its go.mod cannot interfere.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+toolchain, "CGO_ENABLED="+cgo, "GOBIN="+tmp,
		"GOFLAGS=-buildvcs=false", "GO111MODULE=on")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("go install of Dendrite %s: %w", Version, err)
	}
	version := exec.CommandContext(ctx, goCmd, "version")
	version.Dir = tmp
	version.Env = append(os.Environ(), "GOTOOLCHAIN="+toolchain)
	goVersion, _ := version.Output()
	info := fmt.Sprintf("module: %s %s\ngo: %s\nCGO_ENABLED: %s\n", module, Version, strings.TrimSpace(string(goVersion)), cgo)
	if err := os.WriteFile(filepath.Join(tmp, "BUILDINFO"), []byte(info), 0o644); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("build dendrite: %w", err)
	}
	_ = os.RemoveAll(bindir)
	if err := os.Rename(tmp, bindir); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("build dendrite: %w", err)
	}
	logf("built in %d ms into %s", time.Since(t0).Milliseconds(), bindir)
	return bindir, nil
}

// lockFile takes an exclusive flock(2) on path, as flock(1) in hack/ scripts does, polling
// for at most wait; the returned function releases it.
func lockFile(ctx context.Context, path string, wait time.Duration) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	const every = 500 * time.Millisecond
	for n := int64(0); n <= int64(wait/every); n++ {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			break
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(every):
		}
	}
	_ = f.Close()
	return nil, fmt.Errorf("lock %s (another build still running after %v?): %w", path, wait, err)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

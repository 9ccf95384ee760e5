package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tmpfs is a small file system of its own, a disk that fills up for real (ENOSPC): mounted
// by the test, which runs as root (`make test` does here), and unmounted when it ends.
type tmpfs struct{ dir string }

// mountTmpfs mounts a tmpfs of size bytes on a new directory. Without the right to mount
// (not root, or a container without CAP_SYS_ADMIN) the test is skipped, and fails in CI,
// where the disk-full test must run.
func mountTmpfs(t *testing.T, size int64) *tmpfs {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size))
	if errors.Is(err, syscall.EPERM) {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs on %s: %v: the disk-full test needs root (CAP_SYS_ADMIN)", dir, err)
		}
		t.Skipf("mount a tmpfs on %s: %v: the disk-full test needs root (CAP_SYS_ADMIN)", dir, err)
	}
	if err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed, and after the
	// cleanups of whatever the test starts later (the manager): nothing holds it open then.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return &tmpfs{dir: dir}
}

// resize changes the file system's size, as growing a volume would (it cannot shrink below
// what it holds).
func (f *tmpfs) resize(t *testing.T, size int64) {
	t.Helper()
	if err := syscall.Mount("tmpfs", f.dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("resize the tmpfs on %s to %d bytes: %v", f.dir, size, err)
	}
}

// usage is how much of the file system is used, and its size, in bytes.
func (f *tmpfs) usage(t *testing.T) (used, size int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", f.dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, int64(st.Blocks) * st.Bsize
}

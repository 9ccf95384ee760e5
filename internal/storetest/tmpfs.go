package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"testing"
)

// Tmpfs is a small file system of its own: a disk that fills up for real (ENOSPC), for the
// tests of a full store. Mounting needs root (CAP_SYS_ADMIN); `make test` runs as root here.
type Tmpfs struct{ Dir string }

// MountTmpfs mounts a tmpfs of size bytes on a new directory that any user may enter (the
// PostgreSQL server runs as its own user), and unmounts it when the test ends. Without the
// right to mount the test is skipped, and fails in CI, where the disk-full tests must run.
func MountTmpfs(tb testing.TB, size int64) *Tmpfs {
	tb.Helper()
	// Not under tb.TempDir(), which only its owner may enter.
	dir, err := os.MkdirTemp("", "roomsync-disk-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.Remove(dir) })
	err = syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size))
	if errors.Is(err, syscall.EPERM) {
		if os.Getenv("CI") != "" {
			tb.Fatalf("mount a tmpfs on %s: %v: the disk-full tests need root (CAP_SYS_ADMIN)", dir, err)
		}
		tb.Skipf("mount a tmpfs on %s: %v: the disk-full tests need root (CAP_SYS_ADMIN)", dir, err)
	}
	if err != nil {
		tb.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	// Registered after the directory's removal, so it runs first, and after the cleanups of
	// whatever the test starts later (a manager, a store): nothing holds it open then.
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return &Tmpfs{Dir: dir}
}

// Resize changes the file system's size, as growing a volume would (it cannot shrink below
// what it holds).
func (f *Tmpfs) Resize(tb testing.TB, size int64) {
	tb.Helper()
	if err := syscall.Mount("tmpfs", f.Dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		tb.Fatalf("resize the tmpfs on %s to %d bytes: %v", f.Dir, size, err)
	}
}

// Shrink makes the file system hold what it holds now and margin bytes more, as a disk that
// has just that much left, while a writer may be filling it: the size must not fall below
// what is used by the time it is set, so it is tried again a bounded number of times.
func (f *Tmpfs) Shrink(tb testing.TB, margin int64) {
	tb.Helper()
	var err error
	for range 50 {
		used, _ := f.Usage(tb)
		err = syscall.Mount("tmpfs", f.Dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", used+margin))
		if err == nil {
			return
		}
	}
	tb.Fatalf("shrink the tmpfs on %s to what it holds: %v", f.Dir, err)
}

// Usage is how much of the file system is used, and its size, in bytes.
func (f *Tmpfs) Usage(tb testing.TB) (used, size int64) {
	tb.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.Dir, &st); err != nil {
		tb.Fatalf("statfs %s: %v", f.Dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, int64(st.Blocks) * st.Bsize
}

// PostgresURLOn is PostgresURL with the tables and indexes the store makes in a tablespace
// on dir, so that they fill dir (the catalogs and the server's write-ahead log stay on the
// server's disk). The server must run
// on this machine as the user "postgres" (hack/postgres.sh, as root), which gets dir.
func PostgresURLOn(tb testing.TB, dir string) string {
	tb.Helper()
	base := PostgresURL(tb) // skips, or fails in CI, without a server
	pg, err := user.Lookup("postgres")
	if err != nil {
		tb.Skipf("no postgres user to own the tablespace: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		tb.Fatalf("give %s to postgres: %v", dir, err)
	}
	admin, err := sql.Open("pgx", os.Getenv(PostgresEnv))
	if err != nil {
		tb.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	db := u.Path[1:]
	space := db + "_space"
	ctx := context.Background()
	for _, stmt := range []string{
		"CREATE TABLESPACE " + space + " LOCATION '" + dir + "'",
		// The tables the store makes go there; the catalogs stay where they are.
		"ALTER DATABASE " + db + " SET default_tablespace = " + space,
	} {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			admin.Close()
			tb.Fatalf("%s: %v", stmt, err)
		}
	}
	// Cleanups run last first, so this one runs before PostgresURL's: it drops the database
	// itself (that one then finds none), which empties the tablespace, and then the
	// tablespace, before the tmpfs under it is unmounted.
	tb.Cleanup(func() {
		defer admin.Close()
		for _, stmt := range []string{"DROP DATABASE IF EXISTS " + db + " WITH (FORCE)", "DROP TABLESPACE IF EXISTS " + space} {
			if _, err := admin.ExecContext(ctx, stmt); err != nil {
				tb.Errorf("%s: %v", stmt, err)
			}
		}
	})
	return base
}

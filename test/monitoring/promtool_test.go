package monitoring

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// promtool finds promtool. In CI (CI=true, as .ci/run sets, which installs it) a missing
// promtool fails the test; elsewhere it skips, so a laptop without Prometheus still runs the
// rest.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("promtool not found (%v): .ci/run installs it with Debian's prometheus package", err)
	}
	t.Skipf("promtool not found (%v); apt-get install prometheus to run this test", err)
	return ""
}

// runPromtool runs promtool in dir and fails the test with its output if it fails.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

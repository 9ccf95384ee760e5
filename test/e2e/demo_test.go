package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/testenv"
)

// TestDemo runs `make demo`'s script the way a newcomer does, minus the wait for Ctrl-C: a
// control plane, two Dendrites with a forked room, the manager and the sample RoomSync must
// reach Ready, and everything must be stopped afterwards.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.RepoRoot(), "hack", "demo.sh"))
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "DEMO_NONINTERACTIVE=1", "DEMO_SEED_A=60", "DEMO_SEED_EACH=40")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Fatalf("hack/demo.sh: %v\n%s", err, tail(out.String(), 6000))
	}
	text := out.String()
	for _, want := range []string{"True", "roomsync_room_converged", "kubectl"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, tail(text, 4000))
		}
	}
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dendritepeer "github.com/roomsync/roomsync/internal/dendrite"
	"github.com/roomsync/roomsync/internal/localrun"
	"github.com/roomsync/roomsync/internal/testenv"
)

// roomsyncBin is the roomsync binary under test, built once by TestMain.
var roomsyncBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "roomsync-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roomsyncBin = filepath.Join(dir, "roomsync")
	build := exec.Command("go", "build", "-o", roomsyncBin, ".")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build roomsync:", err)
	} else {
		code = m.Run()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// run runs a command with a deadline and returns its stdout; stderr goes to the test log.
func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	stdout, _, code := runCapture(t, timeout, name, args...)
	return stdout, code
}

// runCapture is run that also returns stderr (where `roomsync sync` reports progress).
func runCapture(t *testing.T, timeout time.Duration, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = testenv.RepoRoot()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("%s %s:\n%s", filepath.Base(name), firstArg(args), s)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v", name, strings.Join(args, " "), timeout)
	}
	code := 0
	if err != nil {
		exitErr, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		code = exitErr.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := localrun.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// selfSignedCert writes a certificate and key for 127.0.0.1 into dir.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := localrun.WriteSelfSignedCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// signingKey writes a new signing key, made by the binary under test, into dir and returns
// its path.
func signingKey(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "signing.key")
	if err := localrun.WriteSigningKey(context.Background(), roomsyncBin, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// operator is a manager started by startOperator.
type operator struct {
	storeURL   string
	serverName string
	metricsURL string // the manager's /metrics
	// stop stops the manager by its PID (the test's end stops it too).
	stop func()
}

// startOperator runs a manager on its own loopback identity (key, certificate, federation
// listener, metrics and probe ports) with a SQLite store in dir.
func startOperator(t *testing.T, env *testenv.Env, dir, storeFile string, extra ...string) operator {
	t.Helper()
	op, args := operatorIdentity(t, dir, "sqlite://"+filepath.Join(dir, storeFile), extra...)
	op.stop = startManager(t, env.Kubeconfig, filepath.Join(dir, "manager.log"), args...)
	return op
}

// operatorIdentity makes a manager's loopback identity in dir (key, certificate, federation
// listener, metrics and probe ports) and returns it with the manager's arguments, for a test
// that starts the manager itself, maybe several times.
func operatorIdentity(t *testing.T, dir, storeURL string, extra ...string) (operator, []string) {
	t.Helper()
	keyFile := signingKey(t, dir)
	cert, key := selfSignedCert(t, dir)
	ports := freePorts(t, 3)
	name := fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := append([]string{"--store", storeURL, "--server-name", name, "--signing-key", keyFile,
		"--listen", name, "--tls-cert", cert, "--tls-key", key,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[2])}, extra...)
	return operator{storeURL: storeURL, serverName: name, metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[1])}, args
}

// startManager runs `roomsync manager` against the API server and returns a function that
// stops it by its PID (SIGTERM, then SIGKILL); the test's end stops it too.
func startManager(t *testing.T, kubeconfig, logFile string, args ...string) func() {
	t.Helper()
	m, err := localrun.StartManager(roomsyncBin, kubeconfig, logFile, args...)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := m.Stop(15 * time.Second); err != nil {
				t.Log(err)
			}
			if t.Failed() {
				t.Logf("manager log (tail):\n%s", localrun.Tail(logFile, 60))
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// dendrite is one Dendrite v0.13.8 on loopback (internal/dendrite).
type dendrite struct {
	peer       *dendritepeer.Peer
	serverName string
}

// startDendrite starts a Dendrite and stops it (by the PID it keeps in its directory) when the
// test ends.
func startDendrite(t *testing.T) *dendrite {
	t.Helper()
	ports := freePorts(t, 2)
	p, err := dendritepeer.New(testenv.RepoRoot(), filepath.Join(t.TempDir(), "dendrite"), ports[0], ports[1])
	if err != nil {
		t.Fatal(err)
	}
	name := p.ServerName()
	p.Logf = func(format string, args ...any) { t.Logf("dendrite %s: "+format, append([]any{name}, args...)...) }
	d := &dendrite{peer: p, serverName: name}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dendrite %s log (tail):\n%s", name, localrun.Tail(filepath.Join(p.Dir, "dendrite.log"), 40))
		}
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	d.start(t)
	return d
}

// start starts the Dendrite, or starts it again after stop, on the same ports and databases.
func (d *dendrite) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := d.peer.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// seed sends count messages; with room empty it creates a public, world-readable v11 room.
// extra are more hack/dendrite.sh seed flags (--join-from SERVER, say).
func (d *dendrite) seed(t *testing.T, room string, count int, extra ...string) string {
	t.Helper()
	if room != "" {
		extra = append([]string{"--room", room}, extra...)
	}
	o, err := dendritepeer.ParseSeedArgs(extra)
	if err != nil {
		t.Fatal(err)
	}
	o.Count = count
	// Five minutes, and more for the large rooms of `make soak` (a loaded Dendrite sends 25
	// messages a second).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+time.Duration(count)*50*time.Millisecond)
	defer cancel()
	got, err := d.peer.Seed(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// members lists the room's joined members as the Dendrite shows them to its seeding user.
func (d *dendrite) members(t *testing.T, room string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := d.peer.JoinedMembers(ctx, room, "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startEnv starts a control plane (envtest), stopped when the test ends.
func startEnv(t *testing.T) *testenv.Env {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env
}

// stop stops the Dendrite (by its PID) before the test ends.
func (d *dendrite) stop(t *testing.T) {
	t.Helper()
	if err := d.peer.Stop(); err != nil {
		t.Fatal(err)
	}
}

// eventIDs is the room as Dendrite itself shows it, read through its client API.
func (d *dendrite) eventIDs(t *testing.T, room string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids, err := d.peer.EventIDs(ctx, room, "")
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

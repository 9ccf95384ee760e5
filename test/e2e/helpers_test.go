package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	return stdout.String(), code
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
	var ports []int
	var listeners []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range listeners {
		_ = ln.Close()
	}
	return ports
}

// selfSignedCert writes a certificate and key for 127.0.0.1 into dir.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dendrite is one Dendrite v0.13.8 on loopback, run by hack/dendrite.sh.
type dendrite struct {
	dir        string
	serverName string
	httpPort   int
}

// startDendrite starts a Dendrite and stops it (by the PID the script keeps) when the test ends.
func startDendrite(t *testing.T) *dendrite {
	t.Helper()
	ports := freePorts(t, 2)
	dir := filepath.Join(t.TempDir(), "dendrite")
	script := filepath.Join(testenv.RepoRoot(), "hack", "dendrite.sh")
	out, code := run(t, 10*time.Minute, script, "start", dir, fmt.Sprint(ports[0]), fmt.Sprint(ports[1]))
	t.Cleanup(func() { run(t, time.Minute, script, "stop", dir) })
	if code != 0 {
		t.Fatalf("hack/dendrite.sh start failed (exit %d)", code)
	}
	return &dendrite{dir: dir, serverName: strings.TrimSpace(out), httpPort: ports[1]}
}

// seed sends count messages; with room empty it creates a public, world-readable v11 room.
// extra are more hack/dendrite.sh seed flags (--join-from SERVER, say).
func (d *dendrite) seed(t *testing.T, room string, count int, extra ...string) string {
	t.Helper()
	args := []string{"seed", d.dir, fmt.Sprint(d.httpPort), fmt.Sprint(count)}
	if room != "" {
		args = append(args, "--room", room)
	}
	args = append(args, extra...)
	out, code := run(t, 5*time.Minute, filepath.Join(testenv.RepoRoot(), "hack", "dendrite.sh"), args...)
	if code != 0 {
		t.Fatalf("hack/dendrite.sh seed failed (exit %d)", code)
	}
	return strings.TrimSpace(out)
}

// stop stops the Dendrite (by its PID) before the test ends.
func (d *dendrite) stop(t *testing.T) {
	t.Helper()
	if _, code := run(t, time.Minute, filepath.Join(testenv.RepoRoot(), "hack", "dendrite.sh"), "stop", d.dir); code != 0 {
		t.Fatalf("hack/dendrite.sh stop failed (exit %d)", code)
	}
}

// eventIDs is the room as Dendrite itself shows it, read through its client API.
func (d *dendrite) eventIDs(t *testing.T, room string) []string {
	t.Helper()
	out, code := run(t, 2*time.Minute, filepath.Join(testenv.RepoRoot(), "hack", "dendrite.sh"),
		"event-ids", d.dir, fmt.Sprint(d.httpPort), room)
	if code != 0 {
		t.Fatalf("hack/dendrite.sh event-ids failed (exit %d)", code)
	}
	return strings.Fields(out)
}

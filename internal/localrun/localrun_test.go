package localrun

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestFreePortsAreDistinctAndFree(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v: %d repeated or invalid", ports, p)
		}
		seen[p] = true
		if PortAnswers(p) {
			t.Errorf("port %d answers right after FreePorts", p)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !PortAnswers(ln.Addr().(*net.TCPAddr).Port) {
		t.Error("PortAnswers is false for a listening port")
	}
}

func TestSelfSignedCertServesLoopback(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := WriteSelfSignedCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v, %v", st.Mode(), err)
	}
}

// TestProcessStopAndFind starts a sleep whose command line carries a marker, finds it by the
// marker, stops it and checks that it is gone (reaped, not a zombie).
func TestProcessStopAndFind(t *testing.T) {
	dir := t.TempDir()
	marker := strconv.FormatInt(time.Now().UnixNano(), 10)
	// sleep takes a sum of durations: the marker rides along as a long one.
	p, err := Start("sleep", filepath.Join(dir, "sleep.log"), "sleep", "300", marker+"e-9")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	pids, err := PIDsMentioning(marker)
	if err != nil || len(pids) != 1 || pids[0] != p.PID() {
		t.Fatalf("PIDsMentioning(%s) = %v, %v; want [%d]", marker, pids, err, p.PID())
	}
	if !Alive(p.PID()) || p.Exited() || Comm(p.PID()) != "sleep" {
		t.Fatalf("PID %d: alive %t, exited %t, comm %q", p.PID(), Alive(p.PID()), p.Exited(), Comm(p.PID()))
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if Alive(p.PID()) || !p.Exited() {
		t.Fatalf("PID %d still alive after Stop", p.PID())
	}
	if pids, _ := PIDsMentioning(marker); len(pids) != 0 {
		t.Fatalf("after Stop, PIDsMentioning = %v", pids)
	}
}

func TestStopPIDOfAnotherProcess(t *testing.T) {
	p, err := Start("sleep", filepath.Join(t.TempDir(), "sleep.log"), "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	if err := StopPID(p.PID(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if Alive(p.PID()) {
		t.Fatal("alive after StopPID")
	}
	if err := StopPID(p.PID(), time.Second); err != nil {
		t.Errorf("StopPID of a gone process: %v", err)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Tail(path, 2); got != "c\nd" {
		t.Errorf("Tail = %q, want %q", got, "c\nd")
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 2); got != "" {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

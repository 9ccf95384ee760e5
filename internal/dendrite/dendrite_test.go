package dendrite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNextFrom(t *testing.T) {
	for _, tc := range []struct{ end, want string }{
		{"t5_2300", "t6_1299"}, // Dendrite's (D-1, P+1000) undone, one position back
		{"t1_40", "t1_39"},     // depth 1 is not decremented
		{"", ""},               // the start was reached
		{"s12_3", "s12_3"},     // another shape: unchanged
		{"t5_2300x", "t5_2300x"},
	} {
		if got := nextFrom(tc.end); got != tc.want {
			t.Errorf("nextFrom(%q) = %q, want %q", tc.end, got, tc.want)
		}
	}
}

func TestParseSeedArgs(t *testing.T) {
	o, err := ParseSeedArgs([]string{"--room", "!r:x", "--join-from", "127.0.0.1:1", "--parallel", "3", "--user", "u", "--history", "shared", "--join-rule", "invite"})
	if err != nil || o.Room != "!r:x" || o.JoinFrom != "127.0.0.1:1" || o.Parallel != 3 || o.User != "u" || o.History != "shared" || o.JoinRule != "invite" {
		t.Fatalf("ParseSeedArgs = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"--join-from", "x"}, {"--room"}, {"--parallel", "0"}, {"--count", "3"}} {
		if _, err := ParseSeedArgs(bad); err == nil {
			t.Errorf("ParseSeedArgs(%q) accepted", bad)
		}
	}
}

func TestNewChecksPorts(t *testing.T) {
	for _, ports := range [][2]int{{0, 8008}, {8448, 70000}, {8448, 8448}} {
		if _, err := New(t.TempDir(), "d", ports[0], ports[1]); err == nil {
			t.Errorf("New accepted ports %v", ports)
		}
	}
	p, err := New("/src", "rel/dir", 8448, 8008)
	if err != nil || !filepath.IsAbs(p.Dir) || p.ServerName() != "127.0.0.1:8448" || p.ClientURL() != "http://127.0.0.1:8008" {
		t.Fatalf("New = %+v, %v", p, err)
	}
}

func TestConfigNamesServerAndDir(t *testing.T) {
	dir := t.TempDir()
	if err := writeConfig(dir, "127.0.0.1:8448", "s3cret"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(configPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`server_name: "127.0.0.1:8448"`, `registration_shared_secret: "s3cret"`,
		"private_key: " + dir + "/matrix_key.pem", "connection_string: file:" + dir + "/dendrite_roomserver.db",
		`default_room_version: "11"`, "disable_tls_validation: true"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("dendrite.yaml lacks %q", want)
		}
	}
}

func TestStopWithoutDendrite(t *testing.T) {
	dir := t.TempDir()
	// A stale PID file naming a process that is not this dir's Dendrite (this test) is left alone.
	if err := os.WriteFile(pidPath(dir), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Stop(dir, false, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidPath(dir)); !os.IsNotExist(err) {
		t.Errorf("dendrite.pid left behind: %v", err)
	}
	if err := Stop(dir, true, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("--clean left %s: %v", dir, err)
	}
	if err := Stop(filepath.Join(dir, "none"), false, 0, nil); err != nil {
		t.Errorf("Stop of a missing dir: %v", err)
	}
}

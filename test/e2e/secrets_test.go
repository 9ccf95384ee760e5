package e2e

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx", for the role this test makes
)

// TestNoSecretInLogs runs the product as a user would at the highest verbosity, with every
// kind of secret it holds: a PostgreSQL URL with a password, our signing key and the
// listener's TLS key. `roomsync sync -v` and the manager (zap level 10) replicate a Dendrite
// room, joining it; `inspect` fails on a database it cannot reach. No output holds a secret.
func TestNoSecretInLogs(t *testing.T) {
	storeURL, password := passwordRole(t, postgresAdmin(t))

	d := startDendrite(t)
	room := d.seed(t, "", 60, "--history", "shared")
	dir := t.TempDir()
	keyFile := signingKey(t, dir)
	cert, tlsKey := selfSignedCert(t, dir)
	name := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	var outputs []string

	out, progress, code := runCapture(t, 3*time.Minute, roomsyncBin, "sync", "-v", "--store", storeURL,
		"--server-name", name, "--signing-key", keyFile, "--listen", name, "--tls-cert", cert, "--tls-key", tlsKey,
		"--insecure-skip-tls-verify", "--join", "always", "--peer", d.serverName, "--room", room)
	if code != 0 {
		t.Fatalf("sync exited %d:\n%s", code, progress)
	}
	outputs = append(outputs, "sync: "+out+progress)

	// The same login, to a port where no database listens.
	u, err := url.Parse(storeURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host, u.RawQuery = "127.0.0.1:1", "connect_timeout=2"
	unreachable := u.String()
	out, progress, code = runCapture(t, time.Minute, roomsyncBin, "inspect", "--store", unreachable, "--room", room, "--json")
	if code == 0 {
		t.Fatalf("inspect of an unreachable database exited 0: %s", out)
	}
	outputs = append(outputs, "inspect: "+out+progress)

	env := startEnv(t)
	opDir := t.TempDir()
	op := startOperator(t, env, opDir, "unused.db", "--store", storeURL, "--zap-log-level=10",
		"--allow-private-networks", "--insecure-skip-tls-verify")
	applyArchive(t, env, opDir, room, "  membership:\n    join: Always\n", d)
	waitArchiveReady(t, env, 2*time.Minute)
	op.stop()
	outputs = append(outputs, "manager: "+string(mustRead(t, filepath.Join(opDir, "manager.log"))))

	secrets := map[string]string{"the database password": password}
	fields := strings.Fields(string(mustRead(t, keyFile)))
	secrets["the signing key's seed"] = fields[len(fields)-1]
	for _, line := range strings.Split(string(mustRead(t, tlsKey)), "\n") {
		if len(line) > 40 && !strings.HasPrefix(line, "-----") {
			secrets["a line of the TLS key"] = line
			break
		}
	}
	for _, o := range outputs {
		what, text, _ := strings.Cut(o, ": ")
		// Not empty, and verbose: the room and the requests are in it.
		if !strings.Contains(text, room) && what != "inspect" {
			t.Errorf("the %s output does not name the room; is it the output of a run?\n%s", what, tail(text, 2000))
		}
		for kind, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s output holds %s", what, kind)
			}
		}
		t.Logf("%s: %d bytes of output, no secret in them", what, len(text))
	}
}

// passwordRole makes a PostgreSQL role with a password and a database of its own on the
// test cluster, dropped when the test ends, and returns a store URL that logs in as it.
func passwordRole(t *testing.T, admin string) (storeURL, password string) {
	t.Helper()
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	suffix := hex.EncodeToString(b)
	role, password := "roomsync_logs_"+suffix[:8], "pw-"+suffix
	for _, stmt := range []string{
		"CREATE ROLE " + role + " LOGIN PASSWORD '" + password + "'",
		"CREATE DATABASE " + role + " OWNER " + role,
	} {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		_, _ = db.Exec("DROP DATABASE IF EXISTS " + role + " WITH (FORCE)")
		_, _ = db.Exec("DROP ROLE IF EXISTS " + role)
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, password)
	u.Path = "/" + role
	return u.String(), password
}

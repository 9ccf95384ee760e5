package dendrite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
)

// Peer is one Dendrite on loopback. Dir holds everything of it and is kept across restarts:
// signing key, TLS certificate, registration secret, config, databases, log (dendrite.log)
// and, while it runs, its PID (dendrite.pid), so that another process can stop it. Its
// server name is "127.0.0.1:HTTPSPort": federation on HTTPS, the client API on plain HTTP.
type Peer struct {
	// Root is the source tree whose bin/ caches the Dendrite build.
	Root      string
	Dir       string
	HTTPSPort int
	HTTPPort  int
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// StartTimeout bounds start-up (default: $DENDRITE_START_TIMEOUT seconds, or 30);
	// StopTimeout the wait between SIGTERM and SIGKILL ($DENDRITE_STOP_TIMEOUT, or 10).
	StartTimeout, StopTimeout time.Duration
}

// New checks the ports and makes dir absolute; Start starts the server.
func New(root, dir string, httpsPort, httpPort int) (*Peer, error) {
	if !validPort(httpsPort) || !validPort(httpPort) {
		return nil, fmt.Errorf("dendrite ports must be 1-65535: HTTPS %d, HTTP %d", httpsPort, httpPort)
	}
	if httpsPort == httpPort {
		return nil, fmt.Errorf("dendrite HTTPS and HTTP ports must differ (both %d)", httpPort)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dendrite dir %s: %w", dir, err)
	}
	return &Peer{Root: root, Dir: abs, HTTPSPort: httpsPort, HTTPPort: httpPort}, nil
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

// ServerName is the Matrix server name, which is also where federation answers.
func (p *Peer) ServerName() string { return "127.0.0.1:" + strconv.Itoa(p.HTTPSPort) }

// ClientURL is the base URL of the client API.
func (p *Peer) ClientURL() string { return "http://127.0.0.1:" + strconv.Itoa(p.HTTPPort) }

func (p *Peer) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

// Start builds Dendrite if needed, makes the keys, certificate and config (each kept when
// Dir has it already), starts the server in the background and waits until federation and
// the client API answer and the key document names our server. Starting again after Stop
// reuses Dir's databases; Dir belongs to one server name, so the HTTPS port cannot change.
func (p *Peer) Start(ctx context.Context) error {
	name := p.ServerName()
	if err := p.prepare(ctx, name); err != nil {
		return fmt.Errorf("start dendrite %s: %w", name, err)
	}
	bin := filepath.Join(BinDir(p.Root), "dendrite")
	proc, err := localrun.StartIn(p.Dir, "dendrite "+name, filepath.Join(p.Dir, "dendrite.log"), bin,
		"-config", configPath(p.Dir),
		"-http-bind-address", "127.0.0.1:"+strconv.Itoa(p.HTTPPort),
		"-https-bind-address", "127.0.0.1:"+strconv.Itoa(p.HTTPSPort),
		"-tls-cert", filepath.Join(p.Dir, "tls.crt"), "-tls-key", filepath.Join(p.Dir, "tls.key"))
	if err != nil {
		return fmt.Errorf("start dendrite %s: %w", name, err)
	}
	if err := os.WriteFile(pidPath(p.Dir), []byte(strconv.Itoa(proc.PID())+"\n"), 0o600); err != nil {
		_ = proc.Stop(0)
		return fmt.Errorf("start dendrite %s: %w", name, err)
	}
	p.logf("dendrite %s started, PID %d, log %s", name, proc.PID(), proc.LogFile)

	t0 := time.Now()
	err = localrun.WaitFor(ctx, "dendrite "+name, p.startTimeout(), proc, func(ctx context.Context) bool {
		return localrun.HTTPOK(ctx, "https://"+name+"/_matrix/federation/v1/version") &&
			localrun.HTTPOK(ctx, p.ClientURL()+"/_matrix/client/versions")
	})
	if err == nil {
		err = p.checkKey(ctx, name)
	}
	if err != nil {
		_ = proc.Stop(0)
		_ = os.Remove(pidPath(p.Dir))
		return fmt.Errorf("start dendrite %s: %w\n%s", name, err, localrun.Tail(proc.LogFile, 30))
	}
	p.logf("ready in %d ms", time.Since(t0).Milliseconds())
	return nil
}

// prepare checks that nothing runs in Dir or on our ports and writes what the server needs.
func (p *Peer) prepare(ctx context.Context, name string) error {
	if _, err := Build(ctx, p.Root, p.logf); err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	if pid := readPID(p.Dir); ours(pid, p.Dir) {
		return fmt.Errorf("a Dendrite (PID %d) is already running in %s; stop it first", pid, p.Dir)
	}
	_ = os.Remove(pidPath(p.Dir))
	nameFile := filepath.Join(p.Dir, "server_name")
	if b, err := os.ReadFile(nameFile); err == nil && strings.TrimSpace(string(b)) != name {
		return fmt.Errorf("%s belongs to %s, not %s; use another dir or stop it with --clean",
			p.Dir, strings.TrimSpace(string(b)), name)
	}
	// Nothing may answer on our ports already, or the readiness check would be fooled.
	for _, port := range []int{p.HTTPSPort, p.HTTPPort} {
		if localrun.PortAnswers(port) {
			return fmt.Errorf("127.0.0.1:%d is already in use", port)
		}
	}
	if err := os.WriteFile(nameFile, []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	secret, err := ensureSecret(p.Dir)
	if err != nil {
		return err
	}
	if err := p.ensureSigningKey(ctx); err != nil {
		return err
	}
	if !nonEmpty(filepath.Join(p.Dir, "tls.crt")) || !nonEmpty(filepath.Join(p.Dir, "tls.key")) {
		if _, _, err := localrun.WriteSelfSignedCert(p.Dir); err != nil {
			return err
		}
	}
	return writeConfig(p.Dir, name, secret)
}

// ensureSecret returns Dir's registration shared secret, making one the first time.
func ensureSecret(dir string) (string, error) {
	path := secretPath(dir)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), os.Chmod(path, 0o600)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("registration secret: %w", err)
	}
	secret := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		return "", fmt.Errorf("registration secret: %w", err)
	}
	return secret, nil
}

// ensureSigningKey makes matrix_key.pem with Dendrite's own generate-keys, so that its
// format is exactly what the server reads.
func (p *Peer) ensureSigningKey(ctx context.Context) error {
	path := filepath.Join(p.Dir, "matrix_key.pem")
	if nonEmpty(path) {
		return nil
	}
	out, err := exec.CommandContext(ctx, filepath.Join(BinDir(p.Root), "generate-keys"), "-private-key", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("generate-keys: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkKey makes sure it is our server that answers: its key document names our server.
func (p *Peer) checkKey(ctx context.Context, name string) error {
	body, err := localrun.Get(ctx, "https://"+name+"/_matrix/key/v2/server")
	if err != nil {
		return fmt.Errorf("key check: %w", err)
	}
	var doc struct {
		ServerName string `json:"server_name"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.ServerName != name {
		return fmt.Errorf("https://%s does not serve %s's key: %s", name, name, body)
	}
	return nil
}

func nonEmpty(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Size() > 0
}

func (p *Peer) startTimeout() time.Duration {
	return durationOr(p.StartTimeout, "DENDRITE_START_TIMEOUT", 30*time.Second)
}

// durationOr is d when set, else the whole seconds in the environment variable, else def.
func durationOr(d time.Duration, env string, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	if s, err := strconv.Atoi(os.Getenv(env)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return def
}

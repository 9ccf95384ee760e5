// Package testenv starts a real control plane (kube-apiserver and etcd, through
// controller-runtime's envtest) with the RoomSync CRD installed, for the tests of other
// packages. The binaries come from hack/envtest-assets.sh, which builds or finds them under
// bin/ without the internet.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the root of the roomsync source tree.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	// Config is a rest config with full (system:masters) rights.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for Config, for kubectl.
	Kubeconfig string
	// ownDir is the temporary directory of Kubeconfig, removed by Stop; empty when the caller
	// named the directory (Options.Dir).
	ownDir string
}

// Options change where Start puts things.
type Options struct {
	// Dir, when set, holds every file of the control plane instead of temporary directories:
	// etcd's data (Dir/etcd), kube-apiserver's certificates (Dir/apiserver), their output
	// (Dir/etcd.log, Dir/kube-apiserver.log) and the kubeconfig (Dir/kubeconfig). Their command
	// lines then name Dir, which lets a caller find the processes. The caller removes Dir.
	Dir string
	// NoCRDs leaves the RoomSync CRD out, for tests that install it themselves (the Helm
	// chart's).
	NoCRDs bool
}

// Start starts kube-apiserver and etcd and installs the CRDs of config/crd/bases. Without
// KUBEBUILDER_ASSETS in the environment it asks hack/envtest-assets.sh for them, so a plain
// `go test ./...` works as well as `make test`.
func Start() (*Env, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(opts Options) (*Env, error) {
	root := RepoRoot()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		var stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(root, "hack", "envtest-assets.sh"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("provide envtest assets with hack/envtest-assets.sh: %w\n%s", err, stderr.String())
		}
		if err := os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out))); err != nil {
			return nil, err
		}
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	if opts.NoCRDs {
		env.CRDDirectoryPaths, env.ErrorIfCRDPathMissing = nil, false
	}
	var logs []*os.File
	defer func() {
		// The processes hold their own descriptors.
		for _, f := range logs {
			_ = f.Close()
		}
	}()
	if opts.Dir != "" {
		var err error
		if logs, err = placeControlPlane(env, opts.Dir); err != nil {
			return nil, err
		}
	}
	if _, err := env.Start(); err != nil {
		// Start may fail after the processes are up (a CRD that does not install, say):
		// stop them, or they outlive the test binary.
		_ = env.Stop()
		return nil, fmt.Errorf("start envtest control plane: %w", err)
	}
	admin, err := env.AddUser(envtest.User{Name: "roomsync-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("add envtest admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("kubeconfig of envtest admin user: %w", err)
	}
	dir, ownDir := opts.Dir, ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "roomsync-envtest-"); err != nil {
			_ = env.Stop()
			return nil, err
		}
		ownDir = dir
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Environment: env, Config: admin.Config(), Kubeconfig: path, ownDir: ownDir}, nil
}

// placeControlPlane points etcd's and kube-apiserver's directories and output into dir and
// returns the log files it opened.
func placeControlPlane(env *envtest.Environment, dir string) ([]*os.File, error) {
	etcd, apiserver := filepath.Join(dir, "etcd"), filepath.Join(dir, "apiserver")
	for _, d := range []string{etcd, apiserver} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("control plane dir: %w", err)
		}
	}
	etcdLog, err := os.OpenFile(filepath.Join(dir, "etcd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control plane log: %w", err)
	}
	apiLog, err := os.OpenFile(filepath.Join(dir, "kube-apiserver.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		_ = etcdLog.Close()
		return nil, fmt.Errorf("control plane log: %w", err)
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: etcd, Out: etcdLog, Err: etcdLog}
	a := env.ControlPlane.GetAPIServer()
	a.CertDir, a.Out, a.Err = apiserver, apiLog, apiLog
	return []*os.File{etcdLog, apiLog}, nil
}

// Stop stops the control plane and removes the files Start made in temporary directories.
func (e *Env) Stop() error {
	err := e.Environment.Stop()
	if e.ownDir != "" {
		_ = os.RemoveAll(e.ownDir)
	}
	return err
}

// Kubectl runs the machine's kubectl against the control plane as the admin user and returns
// its standard output; a failure carries standard error.
func (e *Env) Kubectl(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"),
		append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

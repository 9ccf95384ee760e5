// Command demo is roomsync in one command (`make demo`): a throwaway Kubernetes control plane,
// two Dendrite peers holding a forked room, the roomsync manager, and a RoomSync that
// replicates the room, all on loopback. It shows the RoomSync until it is Ready, shows the
// results and how to look around, and waits for Ctrl-C; every process it started is stopped
// and its work directory removed on exit, also on Ctrl-C and on failure. It is built on what
// the end-to-end tests use: internal/testenv, internal/dendrite and internal/localrun.
//
// Steps:
//  1. builds bin/roomsync (as `make build` does), the envtest control plane
//     (hack/envtest-assets.sh: kube-apiserver, etcd, kubectl) and Dendrite; cached under bin/,
//     the first run takes several minutes, later ones well under one;
//  2. starts etcd and kube-apiserver (envtest) with the RoomSync CRD (config/crd/bases);
//  3. starts Dendrites A and B; A creates a room with DEMO_SEED_A messages, B joins it over
//     federation, then both send DEMO_SEED_EACH messages at once, which forks the room's DAG;
//  4. makes our signing key and TLS certificate and starts `roomsync manager`;
//  5. applies a RoomSync (config/samples/federation_v1alpha1_roomsync.yaml, adapted) naming
//     the room and both Dendrites;
//  6. runs `kubectl get roomsyncs` every 2 s until Ready is True, then shows the results.
//
// Environment:
//
//	DEMO_NONINTERACTIVE=1   show the results and exit (0 when the RoomSync became Ready and the
//	                        store is converged, 1 otherwise) instead of waiting for Ctrl-C
//	DEMO_READY_TIMEOUT      seconds to wait for Ready (default 300)
//	DEMO_HOLD_SECONDS       longest wait for Ctrl-C in interactive mode (default 86400)
//	DEMO_SEED_A             messages A sends before B joins (default 200)
//	DEMO_SEED_EACH          messages A and B each send at once afterwards (default 150)
//	DEMO_KEEP_WORKDIR=1     keep the work directory (logs, store, certificates) on exit
//	DEMO_WORKDIR            work there (created; must be empty) instead of a new
//	                        /tmp/roomsync-demo.XXXXXX; it holds "pids" (every process started,
//	                        "NAME PID" a line) and, once the results are shown, "demo.json"
//	                        (room, store URL, Ready status), which TestDemo reads
//	DEMO_ROOMSYNC           a roomsync binary to run instead of building bin/roomsync
//
// Only loopback (127.0.0.1) is used; ports are picked free by the kernel. Exit codes: 0 done,
// 1 failed, 130 and 143 interrupted (SIGINT, SIGTERM) before the results; Ctrl-C while
// waiting for it is the normal end and exits 0.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// config is the demo's environment.
type config struct {
	noninteractive, keepWorkdir bool
	readyTimeout, hold          time.Duration
	seedA, seedEach             int
	workdir, roomsync           string
}

func loadConfig() (config, error) {
	c := config{
		noninteractive: os.Getenv("DEMO_NONINTERACTIVE") == "1",
		keepWorkdir:    os.Getenv("DEMO_KEEP_WORKDIR") == "1",
		workdir:        os.Getenv("DEMO_WORKDIR"),
		roomsync:       os.Getenv("DEMO_ROOMSYNC"),
	}
	var err error
	var ready, hold int
	for _, v := range []struct {
		name     string
		def, min int
		into     *int
	}{
		{"DEMO_SEED_A", 200, 1, &c.seedA},
		{"DEMO_SEED_EACH", 150, 0, &c.seedEach},
		{"DEMO_READY_TIMEOUT", 300, 1, &ready},
		{"DEMO_HOLD_SECONDS", 86400, 0, &hold},
	} {
		if *v.into, err = envInt(v.name, v.def, v.min); err != nil {
			return c, err
		}
	}
	c.readyTimeout, c.hold = time.Duration(ready)*time.Second, time.Duration(hold)*time.Second
	return c, nil
}

// envInt is the whole number in the environment variable name, or def when it is unset.
func envInt(name string, def, min int) (int, error) {
	s := os.Getenv(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min {
		return 0, fmt.Errorf("%s must be a whole number of at least %d, not %q", name, min, s)
	}
	return n, nil
}

func main() { os.Exit(mainCode()) }

func mainCode() int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	// envtest logs through controller-runtime; the demo says itself what happens.
	ctrllog.SetLogger(logr.Discard())
	// The first SIGINT or SIGTERM cancels ctx; later ones are swallowed, so that an impatient
	// second Ctrl-C cannot cut the clean-up short and leave processes behind.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Value
	go func() {
		for s := range sigs {
			if got.CompareAndSwap(nil, s) {
				cancel()
			}
		}
	}()

	d, err := newDemo(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		return 1
	}
	err = d.run(ctx)
	code := 0
	switch sig, _ := got.Load().(os.Signal); {
	case sig != nil:
		// Whatever a step said when ctx ended under it, the user asked to stop.
		if !d.held {
			code = 130
			if sig == syscall.SIGTERM {
				code = 143
			}
			d.logf("interrupted (%v)", sig)
		}
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		d.showLogs()
		code = 1
	}
	d.cleanup()
	return code
}

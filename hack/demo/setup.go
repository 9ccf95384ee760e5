package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/roomsync/roomsync/internal/dendrite"
	"github.com/roomsync/roomsync/internal/localrun"
	"github.com/roomsync/roomsync/internal/testenv"
)

// build makes bin/roomsync (unless DEMO_ROOMSYNC names a binary) and Dendrite; the control
// plane's binaries come with startControlPlane.
func (d *demo) build(ctx context.Context) error {
	d.step("building bin/roomsync, the control plane binaries and Dendrite (cached under bin/)")
	d.roomsync = d.cfg.roomsync
	if d.roomsync == "" {
		d.roomsync = filepath.Join(d.root, "bin", "roomsync")
		// What `make build` runs.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", d.roomsync, ".")
		cmd.Dir = d.root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build bin/roomsync: %w", err)
		}
	}
	if _, err := dendrite.Build(ctx, d.root, d.logf); err != nil {
		return err
	}
	return nil
}

// startControlPlane starts etcd and kube-apiserver with the CRD installed, their files in
// work/controlplane, and records their PIDs.
func (d *demo) startControlPlane(ctx context.Context) error {
	dir := filepath.Join(d.work, "controlplane")
	d.step("starting etcd and kube-apiserver (envtest) in %s, with the RoomSync CRD", dir)
	env, err := testenv.StartWith(testenv.Options{Dir: dir})
	if err != nil {
		return err
	}
	d.env = env
	pids, err := localrun.PIDsMentioning(dir)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		name := localrun.Comm(pid)
		d.cpPIDs[name] = pid
		if err := d.recordPID(name, pid); err != nil {
			return err
		}
	}
	// The API server makes the default namespace shortly after it is ready.
	err = localrun.WaitFor(ctx, "the default namespace", time.Minute, nil, func(context.Context) bool {
		_, err := d.kubectl("get", "namespace", "default")
		return err == nil
	})
	if err != nil {
		return err
	}
	d.logf("kube-apiserver ready on %s (PID %d), etcd PID %d; kubeconfig %s",
		env.Config.Host, d.cpPIDs["kube-apiserver"], d.cpPIDs["etcd"], env.Kubeconfig)
	return nil
}

// startPeers starts Dendrites A and B on free ports.
func (d *demo) startPeers(ctx context.Context) error {
	d.step("starting Dendrites A and B")
	for _, name := range []string{"a", "b"} {
		ports, err := localrun.FreePorts(2)
		if err != nil {
			return err
		}
		p, err := dendrite.New(d.root, filepath.Join(d.work, "dendrite-"+name), ports[0], ports[1])
		if err != nil {
			return err
		}
		label := strings.ToUpper(name)
		p.Logf = func(format string, args ...any) { d.logf(label+": "+format, args...) }
		d.peers = append(d.peers, p)
		if err := p.Start(ctx); err != nil {
			return err
		}
		if err := d.recordPID("dendrite-"+name, p.PID()); err != nil {
			return err
		}
	}
	a, b := d.peers[0], d.peers[1]
	d.logf("Dendrite A: %s (client API %s); Dendrite B: %s (client API %s)",
		a.ServerName(), a.ClientURL(), b.ServerName(), b.ClientURL())
	return nil
}

// seedRoom makes the forked room: A creates it with DEMO_SEED_A messages, B joins over
// federation, then both send DEMO_SEED_EACH at once.
func (d *demo) seedRoom(ctx context.Context) error {
	a, b := d.peers[0], d.peers[1]
	d.step("seeding a room: %d messages on A, B joins, then %d from each at once (forks the DAG)",
		d.cfg.seedA, d.cfg.seedEach)
	room, err := a.Seed(ctx, dendrite.SeedOptions{Count: d.cfg.seedA})
	if err != nil {
		return err
	}
	d.room = room
	d.logf("room %s", room)
	if _, err := b.Seed(ctx, dendrite.SeedOptions{Room: room, JoinFrom: a.ServerName()}); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range d.peers {
		g.Go(func() error {
			_, err := p.Seed(gctx, dendrite.SeedOptions{Room: room, Count: d.cfg.seedEach})
			return err
		})
	}
	return g.Wait()
}

// startManager makes our signing key and certificate and starts `roomsync manager`.
func (d *demo) startManager(ctx context.Context) error {
	d.step("starting roomsync manager")
	ports, err := localrun.FreePorts(3)
	if err != nil {
		return err
	}
	ourName := fmt.Sprintf("127.0.0.1:%d", ports[0])
	d.metricsPort, d.probePort = ports[1], ports[2]
	keyFile := filepath.Join(d.work, "signing.key")
	if err := localrun.WriteSigningKey(ctx, d.roomsync, keyFile); err != nil {
		return err
	}
	cert, key, err := localrun.WriteSelfSignedCert(d.work)
	if err != nil {
		return err
	}
	d.store = "sqlite://" + filepath.Join(d.work, "events.db")
	m, err := localrun.StartManager(d.roomsync, d.env.Kubeconfig, filepath.Join(d.work, "manager.log"),
		"--store", d.store, "--server-name", ourName, "--signing-key", keyFile,
		"--listen", ourName, "--tls-cert", cert, "--tls-key", key,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", d.metricsPort),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", d.probePort))
	if err != nil {
		return err
	}
	d.manager = m
	if err := d.recordPID("roomsync-manager", m.PID()); err != nil {
		return err
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", d.probePort)
	err = localrun.WaitFor(ctx, "roomsync manager", time.Minute, m, func(ctx context.Context) bool {
		return localrun.HTTPOK(ctx, readyz)
	})
	if err != nil {
		return err
	}
	d.logf("manager ready (PID %d); our server name %s, store %s, log %s", m.PID(), ourName, d.store, m.LogFile)
	return nil
}

// applyRoomSync applies config/samples/federation_v1alpha1_roomsync.yaml with the seeded room
// and both Dendrites in it.
func (d *demo) applyRoomSync(ctx context.Context) error {
	d.step("applying a RoomSync for %s", d.room)
	sample := filepath.Join(d.root, "config", "samples", "federation_v1alpha1_roomsync.yaml")
	raw, err := os.ReadFile(sample)
	if err != nil {
		return fmt.Errorf("read the sample RoomSync: %w", err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("parse %s: %w", sample, err)
	}
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s has no spec", sample)
	}
	obj["metadata"] = map[string]any{"name": rmsName}
	spec["rooms"] = []any{map[string]any{"id": d.room}}
	var peers []any
	for _, p := range d.peers {
		// Loopback peers with self-signed certificates, reached directly through url.
		peers = append(peers, map[string]any{
			"serverName": p.ServerName(), "url": "https://" + p.ServerName(), "insecureSkipTLSVerify": true,
		})
	}
	spec["peers"] = peers
	// Short, so that messages sent during the demo show up within a minute.
	spec["interval"] = "1m"
	out, err := yaml.Marshal(obj)
	if err != nil {
		return fmt.Errorf("render the RoomSync: %w", err)
	}
	manifest := filepath.Join(d.work, "roomsync.yaml")
	header := "# Adapted from config/samples/federation_v1alpha1_roomsync.yaml by hack/demo.\n"
	if err := os.WriteFile(manifest, append([]byte(header), out...), 0o600); err != nil {
		return fmt.Errorf("write the RoomSync: %w", err)
	}
	res, err := d.kubectl("apply", "-f", manifest)
	if err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, res)
	return ctx.Err()
}

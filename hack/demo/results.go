package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/roomsync/roomsync/internal/localrun"
)

// readyStatus is the status of the RoomSync's Ready condition ("" when unknown).
func (d *demo) readyStatus() string {
	out, err := d.kubectl("get", "rms", rmsName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// waitReady shows `kubectl get roomsyncs` every 2 s until the RoomSync is Ready or
// DEMO_READY_TIMEOUT has passed; the results step tells which.
func (d *demo) waitReady(ctx context.Context) error {
	d.step("kubectl get roomsyncs, every 2 s until Ready (at most %v)", d.cfg.readyTimeout)
	deadline := time.Now().Add(d.cfg.readyTimeout)
	const every = 2 * time.Second
	for i := 0; i <= int(d.cfg.readyTimeout/every)+1; i++ {
		if d.manager.Exited() {
			return fmt.Errorf("roomsync manager exited: %v", d.manager.ExitError())
		}
		out, err := d.kubectl("get", "roomsyncs")
		if err != nil {
			out = err.Error() + "\n"
		}
		// The header once; kubectl sizes the columns to fit it, so later rows line up under it.
		if i > 0 {
			if _, rows, ok := strings.Cut(out, "\n"); ok {
				out = rows
			}
		}
		fmt.Print(out)
		if d.readyStatus() == "True" || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// inspectReport is the part of `roomsync inspect --json` the demo reads.
type inspectReport struct {
	Events    int64 `json:"events"`
	Converged bool  `json:"converged"`
}

// showResults prints the RoomSync, the store and the metrics, writes work/demo.json, and
// fails unless the RoomSync is Ready and the store converged.
func (d *demo) showResults(ctx context.Context) error {
	readyAt := time.Since(d.t0)
	d.step("results")
	for _, args := range [][]string{{"get", "rms", "-o", "wide"}, {"describe", "rms", rmsName}} {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, err := d.kubectl(args...)
		if err != nil {
			out += err.Error() + "\n"
		}
		fmt.Println(out)
	}

	fmt.Println("$ roomsync inspect --json")
	cmd := exec.CommandContext(ctx, d.roomsync, "inspect", "--store", d.store, "--room", d.room, "--json")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var report inspectReport
	if err == nil {
		err = json.Unmarshal(out, &report)
	}
	if len(out) > 3000 {
		out = out[:3000]
	}
	fmt.Printf("%s\n", out)
	counts := make([]int, len(d.peers))
	for i, p := range d.peers {
		if ids, err := p.EventIDs(ctx, d.room, ""); err == nil {
			counts[i] = len(ids)
		}
	}
	fmt.Printf("Dendrite A's /messages shows %d events, B's %d; the roomsync store holds %d.\n\n",
		counts[0], counts[1], report.Events)

	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", d.metricsPort)
	fmt.Printf("$ curl -s %s | grep '^roomsync_'\n", metrics)
	if body, err := localrun.Get(ctx, metrics); err == nil {
		shown := 0
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, "roomsync_") && !strings.Contains(line, "_bucket{") && shown < 40 {
				fmt.Print(line)
				shown++
			}
		}
	}

	ready := d.readyStatus()
	if err := d.writeState(ready, report); err != nil {
		return err
	}
	switch {
	case ready != "True":
		return fmt.Errorf("the RoomSync did not become Ready within %v (Ready: %q)", d.cfg.readyTimeout, ready)
	case err != nil:
		return fmt.Errorf("roomsync inspect: %w", err)
	case !report.Converged:
		return fmt.Errorf("roomsync inspect does not report the room converged")
	}
	d.lookAround(readyAt, report.Events)
	return nil
}

// writeState writes work/demo.json, for scripts and TestDemo: where the results are.
func (d *demo) writeState(ready string, report inspectReport) error {
	state, err := json.MarshalIndent(map[string]any{
		"room": d.room, "store": d.store, "roomsync": rmsName, "ready": ready,
		"events": report.Events, "converged": report.Converged,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("demo.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.work, "demo.json"), state, 0o600); err != nil {
		return fmt.Errorf("demo.json: %w", err)
	}
	return nil
}

// lookAround prints what to try next.
func (d *demo) lookAround(readyAt time.Duration, events int64) {
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl") + " --kubeconfig " + d.env.Kubeconfig
	b := d.peers[1]
	fmt.Printf(`
The RoomSync %[1]s is Ready: %[2]d events of room %[3]s replicated from two Dendrites
in %[4]ds since the start of the demo. Look around (from %[5]s):

  %[6]s get rms -o wide
  %[6]s describe rms %[1]s
  bin/roomsync inspect --store %[7]s --room '%[3]s' --json
  bin/roomsync inspect --store %[7]s --room '%[3]s' --event-ids | head
  curl -s http://127.0.0.1:%[8]d/metrics | grep roomsync_
  tail -f %[9]s

  more messages (the manager picks them up within the 1m interval, or at once with the annotation):
  hack/dendrite.sh seed %[10]s %[11]d 20 --room '%[3]s'
  %[6]s annotate rms %[1]s --overwrite reconcile.roomsync.io/requestedAt="$(date +%%s)"
`, rmsName, events, d.room, int(readyAt.Seconds()), d.root, kubectl, d.store, d.metricsPort,
		d.manager.LogFile, b.Dir, b.HTTPPort)
}

// hold waits for Ctrl-C (at most DEMO_HOLD_SECONDS), failing when a process it needs exits.
func (d *demo) hold(ctx context.Context) error {
	d.held = true
	fmt.Printf("\nPress Ctrl-C to stop the manager, both Dendrites, kube-apiserver and etcd and remove %s.\n", d.work)
	deadline := time.Now().Add(d.cfg.hold)
	for i := 0; i <= int(d.cfg.hold/time.Second)+1; i++ {
		if d.manager.Exited() {
			return fmt.Errorf("roomsync manager exited: %v", d.manager.ExitError())
		}
		for name, pid := range d.cpPIDs {
			if !localrun.Alive(pid) {
				return fmt.Errorf("%s (PID %d) exited", name, pid)
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	d.logf("DEMO_HOLD_SECONDS (%v) elapsed", d.cfg.hold)
	return nil
}

// Command dendrite runs Dendrite peers for people at a shell, over internal/dendrite, the
// package the end-to-end tests and the demo use. hack/dendrite.sh builds and runs it; its
// header documents the subcommands. Results go to stdout, everything else to stderr, so that
// `name=$(hack/dendrite.sh start …)` works.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roomsync/roomsync/internal/dendrite"
	"github.com/roomsync/roomsync/internal/rawbackfill"
	"github.com/roomsync/roomsync/resolver/federation"
)

const usageText = `usage: hack/dendrite.sh build
       hack/dendrite.sh start DIR HTTPS_PORT HTTP_PORT
       hack/dendrite.sh stop DIR [--clean]
       hack/dendrite.sh seed DIR HTTP_PORT COUNT [--room ROOM_ID] [--join-from SERVER_NAME] [--parallel N] [--user LOCALPART]
                                [--history VISIBILITY] [--join-rule RULE]
       hack/dendrite.sh seed-netsplit DIR_A HTTPS_PORT_A HTTP_PORT_A DIR_B HTTPS_PORT_B HTTP_PORT_B COUNT
                                [--parallel N] [--user LOCALPART]
       hack/dendrite.sh event-ids DIR HTTP_PORT ROOM_ID [--user LOCALPART]
       hack/dendrite.sh paginate DIR HTTP_PORT ROOM_ID [--join-from SERVER_NAME] [--limit N] [--user LOCALPART]
       hack/dendrite.sh backfill-rate SERVER_NAME ROOM_ID --signing-key FILE --tls-cert FILE --tls-key FILE
                                [--listen 127.0.0.1:PORT] [--limit N]`

// errUsage makes main print the usage and exit 2.
var errUsage = errors.New("usage")

// clientTimeout bounds seed, event-ids, paginate and backfill-rate, as the former
// hack/dendrite-seed did.
const clientTimeout = 10 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, usageText)
		os.Exit(2)
	case err != nil:
		logf("%v", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dendrite.sh: "+format+"\n", args...)
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	root, err := sourceRoot()
	if err != nil {
		return err
	}
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "build" && len(rest) == 0:
		dir, err := dendrite.Build(ctx, root, logf)
		if err == nil {
			fmt.Println(dir)
		}
		return err
	case cmd == "start" && len(rest) == 3:
		https, err1 := strconv.Atoi(rest[1])
		http, err2 := strconv.Atoi(rest[2])
		if err1 != nil || err2 != nil {
			return errUsage
		}
		p, err := dendrite.New(root, rest[0], https, http)
		if err != nil {
			return err
		}
		p.Logf = logf
		if err := p.Start(ctx); err != nil {
			return err
		}
		fmt.Println(p.ServerName())
		return nil
	case cmd == "stop" && (len(rest) == 1 || len(rest) == 2 && rest[1] == "--clean"):
		return dendrite.Stop(rest[0], len(rest) == 2, 0, logf)
	case (cmd == "seed" || cmd == "event-ids" || cmd == "paginate") && len(rest) >= 3:
		port, err := strconv.Atoi(rest[1])
		if err != nil {
			return errUsage
		}
		ctx, cancel := context.WithTimeout(ctx, clientTimeout)
		defer cancel()
		return client(ctx, cmd, &dendrite.Peer{Root: root, Dir: rest[0], HTTPPort: port, Logf: logf}, rest[2], rest[3:])
	case cmd == "seed-netsplit" && len(rest) >= 7:
		return seedNetsplit(ctx, root, rest[:7], rest[7:])
	case cmd == "backfill-rate" && len(rest) >= 2:
		ctx, cancel := context.WithTimeout(ctx, clientTimeout)
		defer cancel()
		return backfillRate(ctx, rest[0], rest[1], rest[2:])
	}
	return errUsage
}

// seedNetsplit makes, on the two running Dendrites of args (DIR HTTPS_PORT HTTP_PORT each),
// a room of two concurrent branches of COUNT messages that both hold whole
// (dendrite.SeedNetsplit); it stops and starts them on the way and leaves them running.
// Prints the room ID.
func seedNetsplit(ctx context.Context, root string, args, flags []string) error {
	var peers [2]*dendrite.Peer
	for i := range peers {
		https, err1 := strconv.Atoi(args[3*i+1])
		http, err2 := strconv.Atoi(args[3*i+2])
		if err1 != nil || err2 != nil {
			return errUsage
		}
		p, err := dendrite.New(root, args[3*i], https, http)
		if err != nil {
			return err
		}
		p.Logf = logf
		peers[i] = p
	}
	count, err := strconv.Atoi(args[6])
	if err != nil || count < 1 {
		return errUsage
	}
	f, err := parseFlags(flags, "--parallel", "--user")
	if err != nil {
		return err
	}
	o := dendrite.NetsplitOptions{Count: count, User: f["--user"]}
	if s, ok := f["--parallel"]; ok {
		if o.Parallel, err = strconv.Atoi(s); err != nil || o.Parallel < 1 {
			return errUsage
		}
	}
	for _, p := range peers {
		if !p.Running() {
			return fmt.Errorf("no Dendrite runs in %s: start it first (hack/dendrite.sh start)", p.Dir)
		}
	}
	// Seeding, two restarts each and the wait for both branches, on two shared cores.
	ctx, cancel := context.WithTimeout(ctx, clientTimeout+time.Duration(count)*200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	r, err := dendrite.SeedNetsplit(ctx, peers[0], peers[1], o)
	if err != nil {
		return err
	}
	logf("netsplit room %s: %d events on both (%d a branch) in %v", r.RoomID, len(r.Events), count,
		time.Since(t0).Round(time.Millisecond))
	fmt.Println(r.RoomID)
	return nil
}

// backfillRate walks room back over /backfill from the Dendrite named server as fast as it
// serves, signing as 127.0.0.1:PORT (PORT that of --listen, or one free), whose key it serves
// there; prints internal/rawbackfill's result line.
func backfillRate(ctx context.Context, server, room string, flags []string) error {
	f, err := parseFlags(flags, "--signing-key", "--tls-cert", "--tls-key", "--listen", "--limit")
	if err != nil {
		return err
	}
	if f["--signing-key"] == "" || f["--tls-cert"] == "" || f["--tls-key"] == "" {
		return errUsage
	}
	limit := 100
	if s, ok := f["--limit"]; ok {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
			return errUsage
		}
	}
	key, err := federation.LoadSigningKey(f["--signing-key"])
	if err != nil {
		return err
	}
	r, err := rawbackfill.Measure(ctx, rawbackfill.Options{
		Peer: server, Room: room, Limit: limit, Key: key, Listen: f["--listen"],
		TLSCert: f["--tls-cert"], TLSKey: f["--tls-key"], Logf: logf,
	})
	if err == nil {
		fmt.Println(r)
	}
	return err
}

// client runs seed, event-ids or paginate against the client API of p; arg is COUNT or
// ROOM_ID, flags what follows it.
func client(ctx context.Context, cmd string, p *dendrite.Peer, arg string, flags []string) error {
	switch cmd {
	case "seed":
		count, err := strconv.Atoi(arg)
		if err != nil || count < 0 {
			return errUsage
		}
		o, err := dendrite.ParseSeedArgs(flags)
		if err != nil {
			logf("%v", err)
			return errUsage
		}
		o.Count = count
		room, err := p.Seed(ctx, o)
		if err == nil {
			fmt.Println(room)
		}
		return err
	case "event-ids":
		f, err := parseFlags(flags, "--user")
		if err != nil {
			return err
		}
		ids, err := p.EventIDs(ctx, arg, f["--user"])
		if err == nil && len(ids) > 0 {
			_, err = fmt.Println(strings.Join(ids, "\n"))
		}
		return err
	default:
		f, err := parseFlags(flags, "--user", "--join-from", "--limit")
		if err != nil {
			return err
		}
		limit := 100
		if s, ok := f["--limit"]; ok {
			if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
				return errUsage
			}
		}
		r, err := p.Paginate(ctx, arg, f["--join-from"], f["--user"], limit)
		if err == nil {
			fmt.Println(r)
		}
		return err
	}
}

// parseFlags reads "--name value" pairs, each name one of allowed.
func parseFlags(args []string, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i += 2 {
		ok := false
		for _, a := range allowed {
			ok = ok || args[i] == a
		}
		if !ok || i+1 >= len(args) {
			return nil, errUsage
		}
		out[args[i]] = args[i+1]
	}
	return out, nil
}

// sourceRoot is the checkout this program was built from, whose bin/ caches Dendrite: the
// wrapper builds it without -trimpath, so the path of this file is absolute.
func sourceRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", fmt.Errorf("cannot tell the source tree from %q: build without -trimpath", file)
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

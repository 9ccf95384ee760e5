package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// Version is the roomsync version, set at build time.
var Version = "dev"

// timeFlag is an RFC 3339 time flag; unset is the zero time.
type timeFlag struct{ time.Time }

func (f *timeFlag) String() string {
	if f.IsZero() {
		return ""
	}
	return f.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2026-01-02T15:04:05Z: %w", err)
	}
	f.Time = t
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

type syncOptions struct {
	identityOptions
	peers       stringList
	rooms       stringList
	join        string
	joinUser    string
	minDepth    int64
	since       timeFlag
	limits      resolver.Limits
	maxPasses   int
	timeout     time.Duration
	concurrency int
	verbose     bool
}

func (o *syncOptions) bind(fs *flag.FlagSet) {
	o.identityOptions.bind(fs)
	fs.Var(&o.peers, "peer", "A peer to pull from, as NAME or NAME=URL (URL skips discovery); repeat for more, in order of preference.")
	fs.Var(&o.rooms, "room", "A room ID to sync; repeat for more.")
	fs.StringVar(&o.join, "join", string(resolver.JoinIfNeeded), "Membership policy: never (pull as a non-member: Synapse refuses, Dendrite strips), if-needed (join when a peer refuses us or strips events), always.")
	fs.StringVar(&o.joinUser, "join-user", "roomsync", "Localpart of our user in joins and make_join requests: @LOCALPART:<server name>.")
	fs.Int64Var(&o.minDepth, "min-depth", 0, "Lowest event depth to fetch; 0 fetches back to m.room.create.")
	fs.Var(&o.since, "since", "Oldest time to fetch, RFC 3339 (2026-01-02T15:04:05Z); unset fetches back to m.room.create.")
	fs.IntVar(&o.limits.BackfillLimit, "backfill-limit", 100, "limit of each /backfill request.")
	fs.IntVar(&o.limits.MissingEventsLimit, "missing-events-limit", 50, "limit of each /get_missing_events request.")
	fs.IntVar(&o.limits.MaxEventsPerPass, "max-events-per-pass", 10000, "Events one pass over a room may store before the next room's turn.")
	fs.IntVar(&o.maxPasses, "max-passes", 10000, "Passes at most before giving up on convergence.")
	fs.DurationVar(&o.timeout, "timeout", 0, "Give up after this long (0: no limit).")
	fs.IntVar(&o.concurrency, "concurrency", 4, "Rooms synced at once.")
	fs.BoolVar(&o.verbose, "v", false, "Log every federation request failure.")
}

func (o *syncOptions) validate() error {
	errs := []error{o.identityOptions.validate()}
	if len(o.peers) == 0 {
		errs = append(errs, errors.New("at least one --peer is required"))
	}
	if len(o.rooms) == 0 {
		errs = append(errs, errors.New("at least one --room is required"))
	}
	// The rules of a RoomSync's rooms and peers: a flag takes what a RoomSync takes.
	peerNames := map[string]bool{}
	for _, spec := range o.peers {
		if err := checkPeerFlag(spec); err != nil {
			errs = append(errs, err)
		}
		name, _, _ := strings.Cut(spec, "=")
		if peerNames[name] {
			errs = append(errs, fmt.Errorf("--peer %s is named twice", name))
		}
		peerNames[name] = true
	}
	if err := checkInsecureFlag(o.insecureSkipVerify, o.peers); err != nil {
		errs = append(errs, err)
	}
	seen := map[string]bool{}
	for _, room := range o.rooms {
		if err := checkRoomFlag(room); err != nil {
			errs = append(errs, err)
		}
		if seen[room] {
			errs = append(errs, fmt.Errorf("--room %s is named twice", room))
		}
		seen[room] = true
	}
	switch resolver.JoinPolicy(o.join) {
	case resolver.JoinNever, resolver.JoinIfNeeded, resolver.JoinAlways:
	default:
		errs = append(errs, fmt.Errorf("--join %q: want never, if-needed or always", o.join))
	}
	if err := roomsyncv1alpha1.ValidateUserLocalpart(o.joinUser); err != nil {
		errs = append(errs, fmt.Errorf("--join-user: %w", err))
	}
	switch {
	case o.minDepth < 0:
		errs = append(errs, errors.New("--min-depth must not be negative"))
	case o.limits.BackfillLimit < 1 || o.limits.BackfillLimit > 1000:
		errs = append(errs, errors.New("--backfill-limit must be 1 to 1000"))
	case o.limits.MissingEventsLimit < 1 || o.limits.MissingEventsLimit > 1000:
		errs = append(errs, errors.New("--missing-events-limit must be 1 to 1000"))
	case o.limits.MaxEventsPerPass < 1:
		errs = append(errs, errors.New("--max-events-per-pass must be positive"))
	case o.maxPasses < 1 || o.concurrency < 1:
		errs = append(errs, errors.New("--max-passes and --concurrency must be positive"))
	}
	if o.timeout < 0 {
		errs = append(errs, errors.New("--timeout must not be negative (0 is no limit)"))
	}
	return errors.Join(errs...)
}

// peerList turns the --peer NAME[=URL] flags, checked by validate, into the peers, in order.
// --insecure-skip-tls-verify applies to each of them, however it is reached.
func (o *syncOptions) peerList() []resolver.Peer {
	peers := make([]resolver.Peer, len(o.peers))
	for i, spec := range o.peers {
		name, rawURL, _ := strings.Cut(spec, "=")
		peers[i] = resolver.Peer{ServerName: name, URL: rawURL, InsecureSkipTLSVerify: o.insecureSkipVerify}
	}
	return peers
}

// parseSyncFlags reads and checks sync's flags, touching no file and no network. When done is
// true, sync ends at once with code: help was shown, or the input was bad and stderr says why.
func parseSyncFlags(args []string, stderr io.Writer) (opts *syncOptions, fs *flag.FlagSet, code int, done bool) {
	opts = &syncOptions{}
	fs = flag.NewFlagSet("roomsync sync", flag.ContinueOnError)
	opts.bind(fs)
	if code, done := parseArgs(fs, args, stderr); done {
		return opts, fs, code, true
	}
	if err := opts.validate(); err != nil {
		return opts, fs, badInput(stderr, fs, err), true
	}
	return opts, fs, ExitOK, false
}

func runSync(args []string, stdout, stderr io.Writer) int {
	opts, fs, code, done := parseSyncFlags(args, stderr)
	if done {
		return code
	}
	key, err := federation.LoadSigningKey(opts.signingKeyFile)
	if err != nil {
		return badInput(stderr, fs, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}

	st, err := store.Open(ctx, opts.storeURL)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer st.Close()

	log := logr.Discard()
	if opts.verbose {
		log = funcr.New(func(prefix, args string) { fmt.Fprintln(stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	}

	// --listen serves, besides our key, the history the store holds to the servers in each
	// room, as the manager's listener does: a sync is a replica too while it runs.
	inboundKeys, closeInbound, err := resolver.InboundKeys(st, opts.serverName, key, opts.allowPrivateNetworks, opts.insecureSkipVerify)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer closeInbound()
	_, stopKeyServer, err := opts.keyServer(key, Version, resolver.NotaryKeysOf(st), func(srv *federation.Server) {
		serveHistory(srv, opts.serverName, st, inboundKeys, log.WithName("replica"), nil)
	})
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer stopKeyServer()
	answered := &peerAnswers{}
	res, err := resolver.Open(resolver.Setup{
		Store:                st,
		ServerName:           opts.serverName,
		Key:                  key,
		Peers:                opts.peerList(),
		AllowPrivateNetworks: opts.allowPrivateNetworks,
		JoinUser:             opts.joinUser,
		Join:                 resolver.JoinPolicy(opts.join),
		Limits:               opts.limits,
		Log:                  log,
		UserAgent:            "roomsync/" + Version,
		Observer:             answered,
	})
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer res.Close()
	// A room whose rows were lost under its counters is not synced: fsck repairs it first.
	damaged := damagedRooms(ctx, st, opts.rooms, stderr)
	healthy := *opts
	healthy.rooms = withoutRooms(opts.rooms, damaged)
	converged := len(healthy.rooms) == 0 || syncUntilConverged(ctx, res, &healthy, stderr)
	answered.report(stderr)
	// Converged is claimed on counters: they must still agree with the rows.
	if len(damaged) > 0 || len(damagedRooms(ctx, st, healthy.rooms, stderr)) > 0 || !converged {
		return ExitFailed
	}
	return ExitOK
}

// syncUntilConverged runs passes over the rooms until each has converged, or until a pass
// stores nothing new and nothing is left to retry soon (the peers have given all they will),
// or the limits run out. It reports progress on stderr and says whether all rooms converged.
func syncUntilConverged(ctx context.Context, res *resolver.Resolver, opts *syncOptions, stderr io.Writer) bool {
	hist := resolver.History{MinDepth: opts.minDepth, Since: opts.since.Time}
	pending := append([]string(nil), opts.rooms...)
	start := time.Now()
	total := 0
	for passNo := 1; passNo <= opts.maxPasses && len(pending) > 0; passNo++ {
		if ctx.Err() != nil {
			break
		}
		results := res.SyncRooms(ctx, pending, hist, opts.concurrency)
		var next []string
		progress := false
		for _, r := range results {
			total += r.Stored
			progress = progress || r.Stored > 0
			status := "syncing"
			switch {
			case r.Converged:
				status = "converged"
			case !r.BudgetExhausted:
				status = "incomplete"
			}
			line := fmt.Sprintf("roomsync: pass %d: %s: %s, +%d events (%d stored, %d gaps, %d unfillable, %d unknown heads), %d requests",
				passNo, r.RoomID, status, r.Stored, r.Room.Events, r.Gaps, r.Unfillable, len(r.UnknownHeads), r.Requests)
			if r.Room.Redacted > 0 {
				line += fmt.Sprintf("; %d events held redacted (as shown to a non-member)", r.Room.Redacted)
			}
			if r.Membership != "" && r.Membership != resolver.MembershipNotJoined || r.MembershipReason != "" {
				line += "; membership " + r.Membership
				if r.MembershipReason != "" {
					line += ": " + r.MembershipReason
				}
			}
			if len(r.WaitingFor) > 0 {
				line += "; waiting for " + strings.Join(r.WaitingFor, "; ")
			}
			if n := rejectedCount(r.Rejected); n > 0 {
				line += fmt.Sprintf(", %d rejected %v", n, r.Rejected)
			}
			if r.Err != nil && !r.Converged {
				line += "; last error: " + r.Err.Error()
			}
			fmt.Fprintln(stderr, line)
			if !r.Converged {
				next = append(next, r.RoomID)
			}
		}
		pending = next
		if len(pending) > 0 && !progress {
			// Nothing new: wait for a peer's back-off if one is close, else stop.
			wait := time.Until(res.Peers().NextAvailable())
			if wait <= 0 || wait > 30*time.Second {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
	took := time.Since(start)
	rate := float64(total) / max(took.Seconds(), 1e-9)
	fmt.Fprintf(stderr, "roomsync: %d events stored in %s (%.0f events/s); %d of %d rooms converged\n",
		total, took.Round(time.Millisecond), rate, len(opts.rooms)-len(pending), len(opts.rooms))
	for _, p := range res.Peers().Status() {
		if p.LastError != "" {
			fmt.Fprintf(stderr, "roomsync: peer %s: healthy=%t, last error: %s\n", p.ServerName, p.Healthy, p.LastError)
		}
	}
	return len(pending) == 0
}

// peerAnswers counts the requests each peer answered, and the /backfill ones among them, for
// the line a sync ends with: which peers a room came from (two peers share a forked room's
// gaps).
type peerAnswers struct {
	mu       sync.Mutex
	all      map[string]int
	backfill map[string]int
}

func (a *peerAnswers) Request(peer, endpoint string, outcome federation.Outcome, _ time.Duration) {
	if outcome != federation.OutcomeOK {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.all == nil {
		a.all, a.backfill = map[string]int{}, map[string]int{}
	}
	a.all[peer]++
	if endpoint == "backfill" {
		a.backfill[peer]++
	}
}

func (*peerAnswers) Stored(string, int)                          {}
func (*peerAnswers) Rejected(string, resolver.RejectReason, int) {}

// report writes "roomsync: peer NAME answered N requests (B /backfill)", a line a peer that
// answered any, in name order.
func (a *peerAnswers) report(w io.Writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, peer := range slices.Sorted(maps.Keys(a.all)) {
		fmt.Fprintf(w, "roomsync: peer %s answered %d requests (%d /backfill)\n", peer, a.all[peer], a.backfill[peer])
	}
}

func rejectedCount(m map[resolver.RejectReason]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

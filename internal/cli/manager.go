package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/controllers"
	"github.com/roomsync/roomsync/internal/roomspage"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// Leader election manages its Lease in the manager's namespace and reports changes of leader
// as core Events there.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=roomsync-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=roomsync-system

// With --metrics-secure, each caller of the metrics listener is authenticated and authorized
// through the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

type managerOptions struct {
	identityOptions
	kubeconfig              string
	metricsAddr             string
	metricsSecure           bool
	metricsCertDir          string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	leaderElectionID        string
	concurrent              int
	roomConcurrency         int
	passTimeout             time.Duration
	storeCheckTimeout       time.Duration
	selector                string
	originRate              float64
	originBurst             int
	zap                     zap.Options
}

func (o *managerOptions) bind(fs *flag.FlagSet) {
	o.identityOptions.bind(fs)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "",
		"Path to a kubeconfig. Default: in-cluster config, then $KUBECONFIG, then ~/.kube/config.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080",
		"Address of the Prometheus metrics endpoint; 0 turns it off.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", false,
		"Serve the metrics listener (/metrics, /rooms, exports) over HTTPS, to callers whose token the API server authenticates and authorizes for the path (a ClusterRole with nonResourceURLs; see config/rbac/metrics_reader_role.yaml).")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "",
		"Directory holding tls.crt and tls.key for --metrics-secure; empty uses a self-signed certificate made at start.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081",
		"Address of the /healthz and /readyz endpoints; 0 turns them off.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease. Default: the pod's namespace.")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", "roomsync.federation.roomsync.io",
		"Name of the leader election Lease; releases that split RoomSyncs need distinct IDs.")
	fs.IntVar(&o.concurrent, "concurrent", 4, "RoomSyncs reconciled at once.")
	fs.IntVar(&o.roomConcurrency, "room-concurrency", 4, "Rooms of one RoomSync synced at once.")
	fs.DurationVar(&o.passTimeout, "pass-timeout", 5*time.Minute, "Longest sync pass over one RoomSync's rooms.")
	fs.DurationVar(&o.storeCheckTimeout, "store-check-timeout", 2*time.Minute,
		"Longest start-up check of the event store (SQLite's quick_check or a read of every PostgreSQL table, then each room's counters against its rows); a damaged room is reported (StoreCorrupt) instead of synced, and what the check does not reach in time is synced unchecked. 0 skips the check.")
	fs.StringVar(&o.selector, "selector", "", "Label selector: reconcile only the RoomSyncs it matches, so several manager releases (each with its own --leader-election-id) can share the work and one store.")
	fs.Float64Var(&o.originRate, "federation-rate-limit", federation.DefaultOriginRate,
		"Requests a second each peer server may make to the federation listener, sustained; past it, 429.")
	fs.IntVar(&o.originBurst, "federation-rate-burst", federation.DefaultOriginBurst,
		"Requests a peer server may make to the federation listener at once before --federation-rate-limit applies.")
	o.zap.Development = false
	o.zap.BindFlags(fs)
}

func (o *managerOptions) validate() error {
	errs := []error{o.identityOptions.validate()}
	if o.concurrent < 1 || o.roomConcurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrent and --room-concurrency must be at least 1"))
	}
	if o.originRate <= 0 || o.originBurst < 1 {
		errs = append(errs, fmt.Errorf("--federation-rate-limit must be above 0 and --federation-rate-burst at least 1"))
	}
	if o.metricsCertDir != "" && !o.metricsSecure {
		errs = append(errs, errors.New("--metrics-cert-dir needs --metrics-secure"))
	}
	if o.passTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--pass-timeout must be at least 1s"))
	}
	if o.storeCheckTimeout < 0 {
		errs = append(errs, errors.New("--store-check-timeout must not be negative (0 skips the check)"))
	}
	if o.leaderElectionID == "" && o.leaderElect {
		errs = append(errs, errors.New("--leader-election-id must not be empty with --leader-elect"))
	}
	if _, err := labels.Parse(o.selector); err != nil {
		errs = append(errs, fmt.Errorf("--selector: %w", err))
	}
	return errors.Join(errs...)
}

// parseManagerFlags reads and checks the manager's flags, touching no file, cluster or
// network. When done is true, the manager ends at once with code: help was shown, or the input
// was bad and stderr says why.
func parseManagerFlags(args []string, stderr io.Writer) (opts *managerOptions, fs *flag.FlagSet, code int, done bool) {
	opts = &managerOptions{}
	fs = flag.NewFlagSet("roomsync manager", flag.ContinueOnError)
	opts.bind(fs)
	if code, done := parseArgs(fs, args, stderr); done {
		return opts, fs, code, true
	}
	if err := opts.validate(); err != nil {
		return opts, fs, badInput(stderr, fs, err), true
	}
	return opts, fs, ExitOK, false
}

func runManager(args []string, _, stderr io.Writer) int {
	opts, fs, code, done := parseManagerFlags(args, stderr)
	if done {
		return code
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.zap), zap.WriteTo(stderr)))
	log := ctrl.Log.WithName("setup")

	cfg, err := restConfig(opts.kubeconfig)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	// Identity and store are checked before anything starts: a manager that cannot sign or
	// store must say so at once, not fail every reconcile.
	key, err := federation.LoadSigningKey(opts.signingKeyFile)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	// Not ctrl.SetupSignalHandler, which may be called once a process: the first SIGTERM or
	// Ctrl-C stops the manager cleanly, and restores the default so that a second one kills it.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	go func() { <-ctx.Done(); stopSignals() }()
	st, err := store.Open(ctx, opts.storeURL)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer st.Close()
	syncer := &controllers.Syncer{
		Store:                 st,
		ServerName:            opts.serverName,
		Key:                   key,
		AllowPrivateNetworks:  opts.allowPrivateNetworks,
		InsecureSkipTLSVerify: opts.insecureSkipVerify,
		RoomConcurrency:       opts.roomConcurrency,
		PassTimeout:           opts.passTimeout,
		Metrics:               controllers.NewMetrics(),
		Log:                   ctrl.Log.WithName("resolver"),
	}
	// In the background, so that probes answer meanwhile; reconciles wait for it.
	if opts.storeCheckTimeout > 0 {
		syncer.StartStoreCheck(ctx, opts.storeCheckTimeout)
	}
	// The listener serves our key, takes the events peers push to rooms we joined (PUT /send)
	// and the invites of our user (PUT /v2/invite), and serves the history the store holds
	// to the servers in each room (/backfill, /get_missing_events, /event, /state_ids,
	// /state, /event_auth), checking each request's X-Matrix signature.
	inboundKeys, closeInbound, err := resolver.InboundKeys(st, opts.serverName, key, opts.allowPrivateNetworks, opts.insecureSkipVerify)
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer closeInbound()
	_, stopKeyServer, err := opts.keyServer(key, Version, resolver.NotaryKeysOf(st),
		managerRoutes(opts.serverName, opts.originRate, opts.originBurst, st, inboundKeys, syncer))
	if err != nil {
		return badInput(stderr, fs, err)
	}
	defer stopKeyServer()

	cacheOpts := cache.Options{}
	if opts.selector != "" {
		selector, _ := labels.Parse(opts.selector) // validated above
		cacheOpts.ByObject = map[client.Object]cache.ByObject{&roomsyncv1alpha1.RoomSync{}: {Label: selector}}
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  newScheme(),
		Cache:                   cacheOpts,
		Metrics:                 opts.metricsOptions(),
		HealthProbeBindAddress:  opts.probeAddr,
		LeaderElection:          opts.leaderElect,
		LeaderElectionID:        opts.leaderElectionID,
		LeaderElectionNamespace: opts.leaderElectionNamespace,
		// Hand the Lease over at once on a clean shutdown instead of after its timeout.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		return ExitFailed
	}

	reconciler := &controllers.RoomSyncReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("roomsync-controller"),
		MaxConcurrentReconciles: opts.concurrent,
		Syncer:                  syncer,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to set up the RoomSync controller")
		return ExitFailed
	}
	// The rooms page (/rooms, and each room's DAG at /rooms/{roomId}/dag.svg) on the metrics
	// listener, behind the same filter as /metrics: for `kubectl port-forward` users.
	roomsPage := &roomspage.Handlers{Client: mgr.GetClient(), Store: st, Log: ctrl.Log.WithName("rooms-page")}
	if err := roomsPage.Register(mgr.AddMetricsServerExtraHandler); err != nil {
		log.Error(err, "Unable to add the rooms page")
		return ExitFailed
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to add the health check")
		return ExitFailed
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Unable to add the ready check")
		return ExitFailed
	}
	// Exports of the rooms the store holds, on the metrics listener behind the same filter
	// as /metrics: `roomsync export` for those with cluster access but no shell.
	if err := mgr.AddMetricsServerExtraHandler(exportPattern, newExportHandler(st, ctrl.Log.WithName("export"))); err != nil {
		log.Error(err, "Unable to add the export endpoint")
		return ExitFailed
	}

	log.Info("Starting the manager", "serverName", opts.serverName, "listen", opts.listen)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "The manager stopped with an error")
		return ExitFailed
	}
	return ExitOK
}

// metricsOptions serve the metrics listener in plain HTTP, or with --metrics-secure over
// HTTPS behind controller-runtime's filter: the caller's bearer token is checked with a
// TokenReview and its right to GET the path with a SubjectAccessReview.
func (o *managerOptions) metricsOptions() metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		opts.SecureServing = true
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
		opts.CertDir = o.metricsCertDir
	}
	return opts
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("find a Kubernetes API server (in-cluster, $KUBECONFIG or ~/.kube/config): %w", err)
	}
	return cfg, nil
}

func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(roomsyncv1alpha1.AddToScheme(scheme))
	return scheme
}

package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	mfed "maunium.net/go/mautrix/federation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
	"github.com/roomsync/roomsync/store"
)

// The suite runs the reconciler in a real manager against a real kube-apiserver, as a user
// that holds only the generated RBAC (config/rbac/role.yaml): a missing +kubebuilder:rbac
// marker fails these tests the way it would fail in a cluster.

const managerUser = "roomsync-manager"

var (
	env       *testenv.Env
	k8sClient client.Client // admin rights, for the tests' own reads and writes
	scheme    = runtime.NewScheme()
	// eventStore is the manager's store, for tests that look inside it; eventStorePath is
	// its SQLite file, for tests that damage it.
	eventStore     store.Store
	eventStorePath string
	// metricsURL is the manager's Prometheus endpoint.
	metricsURL string
	// syncer is the manager's: tests look at its sessions.
	syncer *Syncer
)

// operatorServer is the manager's federation server name in the tests.
const operatorServer = "operator.test"

func TestMain(m *testing.M) {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(roomsyncv1alpha1.AddToScheme(scheme))
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))

	var err error
	env, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped, err := startManager(ctx)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	cancel()
	if stopped != nil {
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "manager did not stop within 30s")
		}
	}
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

// zapLevel keeps test output to errors unless ROOMSYNC_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("ROOMSYNC_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// startManager installs the generated RBAC, binds it to managerUser and runs the reconciler
// as that user with leader election on, so the Lease role is exercised too.
func startManager(ctx context.Context) (<-chan struct{}, error) {
	var err error
	k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "roomsync-system"}}
	if err := k8sClient.Create(ctx, ns); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	if out, err := env.Kubectl("apply", "-f", filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml")); err != nil {
		return nil, fmt.Errorf("apply generated RBAC: %w\n%s", err, out)
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: managerUser, APIGroup: rbacv1.GroupName}}
	bindings := []client.Object{
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "manager-rolebinding"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "manager-role"},
			Subjects:   subjects,
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "leader-election-rolebinding", Namespace: "roomsync-system"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "manager-role"},
			Subjects:   subjects,
		},
	}
	for _, b := range bindings {
		if err := k8sClient.Create(ctx, b); err != nil {
			return nil, fmt.Errorf("create binding: %w", err)
		}
	}
	user, err := env.AddUser(envtest.User{Name: managerUser}, nil)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roomsync-controllers-")
	if err != nil {
		return nil, err
	}
	eventStorePath = filepath.Join(dir, "events.db")
	eventStore, err = store.Open(ctx, "sqlite://"+eventStorePath)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	metricsAddr := ln.Addr().String()
	_ = ln.Close()
	metricsURL = "http://" + metricsAddr + "/metrics"
	mgr, err := ctrl.NewManager(user.Config(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "roomsync-test",
		LeaderElectionNamespace: "roomsync-system",
	})
	if err != nil {
		return nil, err
	}
	syncer = &Syncer{
		Store:           eventStore,
		ServerName:      operatorServer,
		Key:             mfed.GenerateSigningKey(),
		RoomConcurrency: 2,
		PassTimeout:     time.Minute,
		Metrics:         NewMetrics(),
		Log:             ctrl.Log.WithName("resolver"),
	}
	r := &RoomSyncReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("roomsync-controller"),
		Syncer:                  syncer,
		MaxConcurrentReconciles: 4,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return stopped, nil
}

package chart

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	mfed "maunium.net/go/mautrix/federation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/roomsync/roomsync/internal/testenv"
)

var (
	env *testenv.Env
	// k8sClient has admin rights, for the tests' own reads and writes.
	k8sClient client.Client
	// roomsyncBin is the manager binary the chart's pod spec runs.
	roomsyncBin string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// The chart installs the CRD itself: the API server starts without it.
	var err error
	if env, err = testenv.StartWith(testenv.Options{NoCRDs: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "roomsync-chart-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	roomsyncBin = filepath.Join(dir, "roomsync")
	build := exec.Command("go", "build", "-o", roomsyncBin, ".")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build roomsync:", err)
		return 1
	}
	return m.Run()
}

// helmConfig is a Helm action configuration on the envtest API server, releases kept as
// Secrets in ns (Helm's default driver).
func helmConfig(t *testing.T, ns string) *action.Configuration {
	t.Helper()
	getter := genericclioptions.NewConfigFlags(false)
	getter.KubeConfig = &env.Kubeconfig
	getter.Namespace = &ns
	cfg := action.NewConfiguration()
	if err := cfg.Init(getter, ns, "secret"); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newNamespace creates a namespace with the signing-key Secret the chart's values name.
func newNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "roomsync-signing-key"},
		StringData: map[string]string{"signing.key": mfed.GenerateSigningKey().SynapseString() + "\n"},
	}
	if err := k8sClient.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
}

// eventually polls check every 200 ms until it returns nil, for at most timeout.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for range 10000 {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("after %v: %v", timeout, err)
}

// exists fails the test unless the object is on the server.
func exists(t *testing.T, obj client.Object, ns, name string) {
	t.Helper()
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Errorf("%T %s/%s: %v", obj, ns, name, err)
	}
}

// TestInstallUpgradeUninstall installs the chart into a real API server through the Helm SDK,
// runs the manager from the installed Deployment's own pod spec, upgrades, and uninstalls.
func TestInstallUpgradeUninstall(t *testing.T) {
	const ns = "roomsync"
	newNamespace(t, ns)
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := helmConfig(t, ns)
	install := action.NewInstall(cfg)
	install.ReleaseName = "archive"
	install.Namespace = ns
	// No controllers run in envtest: nothing would ever become ready. Hooks are waited for.
	install.WaitStrategy = kube.HookOnlyStrategy
	install.Timeout = 2 * time.Minute
	if _, err := install.RunWithContext(context.Background(), ch, required()); err != nil {
		t.Fatalf("helm install: %v", err)
	}

	eventually(t, time.Minute, func() error {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: "roomsyncs.federation.roomsync.io"}, &crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD not established: %+v", crd.Status.Conditions)
	})
	for _, o := range []struct {
		obj      client.Object
		ns, name string
	}{
		{&appsv1.Deployment{}, ns, "archive-roomsync"},
		{&corev1.ServiceAccount{}, ns, "archive-roomsync"},
		{&corev1.Service{}, ns, "archive-roomsync-federation"},
		{&corev1.Service{}, ns, "archive-roomsync-metrics"},
		{&corev1.PersistentVolumeClaim{}, ns, "archive-roomsync-data"},
		{&rbacv1.ClusterRole{}, "", "archive-roomsync-manager"},
		{&rbacv1.ClusterRoleBinding{}, "", "archive-roomsync-manager"},
		{&rbacv1.Role{}, ns, "archive-roomsync-leader-election"},
		{&rbacv1.RoleBinding{}, ns, "archive-roomsync-leader-election"},
	} {
		exists(t, o.obj, o.ns, o.name)
	}

	t.Run("the chart's pod spec runs the manager", func(t *testing.T) {
		runPodSpec(t, ns, "archive-roomsync")
	})

	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace = ns
	upgrade.WaitStrategy = kube.HookOnlyStrategy
	upgrade.Timeout = 2 * time.Minute
	if _, err := upgrade.RunWithContext(context.Background(), "archive", ch, with(required(), `{manager: {concurrent: 2}}`)); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	var d appsv1.Deployment
	exists(t, &d, ns, "archive-roomsync")
	if args := d.Spec.Template.Spec.Containers[0].Args; !containsArg(args, "--concurrent=2") {
		t.Errorf("after the upgrade the manager runs with %v, want --concurrent=2", args)
	}

	uninstall := action.NewUninstall(cfg)
	uninstall.WaitStrategy = kube.HookOnlyStrategy
	uninstall.Timeout = 2 * time.Minute
	if _, err := uninstall.Run("archive"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	eventually(t, time.Minute, func() error {
		err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "archive-roomsync"}, &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("Deployment still there (%v)", err)
		}
		return nil
	})
	// What holds data outlives the release: the CRD (and so every RoomSync) and the claim.
	exists(t, &apiextensionsv1.CustomResourceDefinition{}, "", "roomsyncs.federation.roomsync.io")
	exists(t, &corev1.PersistentVolumeClaim{}, ns, "archive-roomsync-data")
}

func containsArg(args []string, want string) bool { return slices.Contains(args, want) }

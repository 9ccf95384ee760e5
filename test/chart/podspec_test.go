package chart

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/localrun"
)

// runPodSpec runs the manager binary the way the installed Deployment's pod would: its
// command, args and environment, its volumes' contents read from the Secrets and claims they
// name (mount paths mapped to temporary directories, ports to free loopback ones), and the
// identity of the chart's ServiceAccount (a token minted with TokenRequest). A RoomSync
// against a fixture peer must then become Ready: that proves the chart's RBAC, flags and
// Secret wiring, not only its YAML.
func runPodSpec(t *testing.T, ns, name string) {
	ctx := context.Background()
	var d appsv1.Deployment
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	dir := t.TempDir()

	// Volumes: each mount path becomes a directory holding what the volume would.
	mounts := map[string]string{}
	for i, m := range c.VolumeMounts {
		local := filepath.Join(dir, fmt.Sprintf("mount-%d", i))
		if err := os.MkdirAll(local, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[m.MountPath] = local
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				writeSecretVolume(t, ns, v.Secret, local)
			}
		}
	}
	// One pass, longest path first: a mapped path must not be mapped again (/tmp, say).
	paths := slices.SortedFunc(maps.Keys(mounts), func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, p := range paths {
		pairs = append(pairs, p, mounts[p])
	}
	mapPaths := strings.NewReplacer(pairs...).Replace

	// Ports: each bind address goes to a free loopback port, chosen together so that no two
	// are the same.
	bindFlags := []string{"--listen", "--metrics-bind-address", "--health-probe-bind-address"}
	free, err := localrun.FreePorts(len(bindFlags))
	if err != nil {
		t.Fatal(err)
	}
	args := make([]string, 0, len(c.Args)+3)
	ports := map[string]string{}
	for _, a := range c.Args {
		if flag, addr, ok := strings.Cut(a, "="); ok && strings.HasPrefix(addr, ":") && slices.Contains(bindFlags, flag) {
			ports[flag] = fmt.Sprintf("127.0.0.1:%d", free[slices.Index(bindFlags, flag)])
			a = flag + "=" + ports[flag]
		}
		args = append(args, mapPaths(a))
	}
	// What a pod gets from its ServiceAccount mount and its namespace.
	args = append(args, "--kubeconfig="+serviceAccountKubeconfig(t, ns, pod.ServiceAccountName, dir), "--leader-election-namespace="+ns)

	cmdEnv := os.Environ()
	for _, e := range c.Env {
		value := e.Value
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			var s corev1.Secret
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.SecretKeyRef.Name}, &s); err != nil {
				t.Fatalf("env %s: %v", e.Name, err)
			}
			value = string(s.Data[ref.SecretKeyRef.Key])
		}
		cmdEnv = append(cmdEnv, e.Name+"="+value)
	}
	// The Deployment's $(VAR) references in args, as the kubelet expands them.
	for i, a := range args {
		args[i] = os.Expand(strings.ReplaceAll(a, "$(", "${"), func(k string) string {
			for _, kv := range cmdEnv {
				if name, v, _ := strings.Cut(kv, "="); name == k {
					return v
				}
			}
			return ""
		})
	}

	cmdline := append(c.Command, args...)
	if len(c.Command) == 0 {
		cmdline = args // the image's entrypoint is the roomsync binary
	}
	logFile := filepath.Join(dir, "manager.log")
	logOut, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(roomsyncBin, cmdline...)
	cmd.Env = cmdEnv
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logOut.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logFile)
			t.Logf("manager %v\nlog:\n%s", cmdline, out)
		}
	}()

	eventually(t, time.Minute, func() error {
		select {
		case <-done:
			t.Fatal("the manager exited")
		default:
		}
		resp, err := http.Get("http://" + ports["--health-probe-bind-address"] + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})

	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 41, Events: 300})
	peer := fixturepeer.Start(t, room)
	rs := &roomsyncv1alpha1.RoomSync{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "chart-archive"},
		Spec: roomsyncv1alpha1.RoomSyncSpec{
			Rooms: []roomsyncv1alpha1.Room{{ID: string(room.ID)}},
			Peers: []roomsyncv1alpha1.Peer{{ServerName: peer.ServerName(), URL: peer.URL(), InsecureSkipTLSVerify: true}},
		},
	}
	if err := k8sClient.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, func() error {
		var got roomsyncv1alpha1.RoomSync
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(rs), &got); err != nil {
			return err
		}
		ready := apimeta.FindStatusCondition(got.Status.Conditions, roomsyncv1alpha1.ReadyCondition)
		if ready == nil || ready.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready %+v", ready)
		}
		if got.Status.Summary.Events != int64(len(room.Events)) {
			return fmt.Errorf("%d events, want %d", got.Status.Summary.Events, len(room.Events))
		}
		return nil
	})
	// The database is where the chart's claim is mounted.
	if _, err := os.Stat(filepath.Join(mounts["/var/lib/roomsync"], "events.db")); err != nil {
		t.Errorf("no database in the data volume: %v", err)
	}
}

// writeSecretVolume writes a Secret volume's files (all keys, or the items it names).
func writeSecretVolume(t *testing.T, ns string, v *corev1.SecretVolumeSource, dir string) {
	t.Helper()
	var s corev1.Secret
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: v.SecretName}, &s); err != nil {
		t.Fatalf("secret volume %s: %v", v.SecretName, err)
	}
	files := map[string]string{}
	for k := range s.Data {
		files[k] = k
	}
	if len(v.Items) > 0 {
		files = map[string]string{}
		for _, it := range v.Items {
			files[it.Key] = it.Path
		}
	}
	for key, path := range files {
		data, ok := s.Data[key]
		if !ok {
			t.Fatalf("secret %s has no key %s", v.SecretName, key)
		}
		if err := os.WriteFile(filepath.Join(dir, path), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// serviceAccountKubeconfig mints a token for the ServiceAccount (TokenRequest) and writes a
// kubeconfig that uses it, as the pod's in-cluster config would.
func serviceAccountKubeconfig(t *testing.T, ns, sa, dir string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	expiry := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "sa", Namespace: ns}
	kc.CurrentContext = "sa"
	path := filepath.Join(dir, "serviceaccount.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

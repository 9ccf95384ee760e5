package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/internal/testenv"
)

// chartDir is the chart under test.
var chartDir = filepath.Join(testenv.RepoRoot(), "charts", "roomsync")

// required are the values without which the chart does not install.
func required() map[string]any {
	return map[string]any{
		"serverName": "archive.example.org",
		"signingKey": map[string]any{"existingSecret": "roomsync-signing-key"},
	}
}

// everyOption turns on every documented switch, with PostgreSQL and two replicas.
func everyOption() map[string]any {
	v := required()
	must(yaml.Unmarshal([]byte(`
replicaCount: 2
image: {repository: registry.example.org/roomsync, tag: v9.9.9, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
nameOverride: rs
store:
  type: postgres
  postgres: {existingSecret: roomsync-postgres, key: dsn}
federation:
  port: 9448
  tls: {existingSecret: roomsync-federation-tls}
  service: {type: LoadBalancer, port: 443, annotations: {lb.example.org/kind: nlb}}
  ingress: {enabled: true, className: nginx, annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}, tlsSecret: archive-tls}
allowPrivateNetworks: true
insecureSkipTLSVerify: true
manager: {concurrent: 8, roomConcurrency: 2, passTimeout: 10m, federationRateLimit: 2.5, federationRateBurst: 10, selector: "roomsync.io/shard=a", logLevel: debug, extraArgs: ["--zap-encoder=console"]}
leaderElection: {enabled: true}
metrics: {port: 9090, secure: true, certSecret: roomsync-metrics-tls, readers: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}], service: {annotations: {example.org/scrape: "true"}}}
probes: {port: 9091}
serviceAccount: {create: true, name: roomsync-sa, annotations: {example.org/role: archive}}
additionalLabels: {team: matrix}
podAnnotations: {example.org/pod: "yes"}
podLabels: {tier: archive}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: matrix, effect: NoSchedule}]
affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: roomsync}}}}]}}
priorityClassName: system-cluster-critical
networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}
serviceMonitor: {enabled: true, additionalLabels: {release: kube-prometheus-stack}, interval: 15s, scrapeTimeout: 10s}
prometheusRule: {enabled: true, additionalLabels: {release: kube-prometheus-stack}}
dashboard: {enabled: true, namespace: monitoring, labels: {grafana_dashboard: "1"}, annotations: {grafana_folder: Matrix}}
`), &v))
	return v
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// with returns base with the YAML overlay merged in, deeply.
func with(base map[string]any, overlay string) map[string]any {
	var o map[string]any
	must(yaml.Unmarshal([]byte(overlay), &o))
	return merge(base, o)
}

func merge(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if cur, ok := out[k].(map[string]any); ok {
				out[k] = merge(cur, sub)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// render runs a client-side install (helm template) of the chart with vals.
func render(t *testing.T, vals map[string]any) (string, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	cfg := action.NewConfiguration()
	cfg.Releases = storage.Init(driver.NewMemory())
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "archive"
	install.Namespace = "matrix"
	install.Replace = true
	install.KubeVersion = kubeVersion(t)
	rel, err := install.Run(ch, vals)
	if err != nil {
		return "", err
	}
	r, ok := rel.(*releasev1.Release)
	if !ok {
		t.Fatalf("install returned %T", rel)
	}
	return r.Manifest, nil
}

// kubeVersion is the version of the envtest API server, which the renders target too.
func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	v, err := common.ParseKubeVersion("v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLintStrict(t *testing.T) {
	for name, vals := range map[string]map[string]any{"required values": required(), "every option": everyOption()} {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "matrix"
			res := lint.Run([]string{chartDir}, vals)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
		})
	}
}

// scheme decodes every kind the chart renders, strictly.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(monitoringv1.AddToScheme(s))
	utilruntime.Must(roomsyncv1alpha1.AddToScheme(s))
	return s
}()

// decodeAll decodes each document of a manifest into its typed object, refusing unknown or
// duplicate fields.
func decodeAll(t *testing.T, manifest string) []runtime.Object {
	t.Helper()
	codecs := serializer.NewCodecFactory(scheme, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	var objs []runtime.Object
	for range 1000 {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode strictly: %v\n%s", err, doc)
		}
		if gvk.Kind == "" {
			t.Fatalf("document without a kind:\n%s", doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func kinds(objs []runtime.Object) []string {
	var out []string
	for _, o := range objs {
		gvk, _, err := scheme.ObjectKinds(o)
		must(err)
		out = append(out, gvk[0].Kind)
	}
	slices.Sort(out)
	return out
}

func TestRenderDecodesStrictly(t *testing.T) {
	cases := []struct {
		name  string
		vals  map[string]any
		kinds []string
	}{
		{"defaults", required(), []string{
			"ClusterRole", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
			"PersistentVolumeClaim", "Role", "RoleBinding", "Service", "Service", "ServiceAccount"}},
		{"every option", everyOption(), []string{
			"ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition", "Deployment",
			"Ingress", "NetworkPolicy", "PrometheusRule", "Role", "RoleBinding", "Service", "Service",
			"ServiceAccount", "ServiceMonitor"}},
		{"no CRDs, no RBAC, no persistence", with(required(), `{crds: {enabled: false}, rbac: {create: false}, serviceAccount: {create: false, name: existing}, store: {sqlite: {persistence: {enabled: false}}}}`),
			[]string{"Deployment", "Service", "Service"}},
		{"an existing claim", with(required(), `{store: {sqlite: {persistence: {existingClaim: archive-data}}}}`), []string{
			"ClusterRole", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
			"Role", "RoleBinding", "Service", "Service", "ServiceAccount"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			manifest, err := render(t, c.vals)
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, manifest)
			if got := kinds(objs); !slices.Equal(got, c.kinds) {
				t.Errorf("kinds %v, want %v", got, c.kinds)
			}
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.Deployment:
					checkHardened(t, o)
				case *monitoringv1.PrometheusRule:
					if len(o.Spec.Groups) == 0 || len(o.Spec.Groups[0].Rules) < 6 {
						t.Errorf("PrometheusRule holds %+v, want the rule file's alerts", o.Spec.Groups)
					}
				case *corev1.ConfigMap:
					var dashboard struct {
						UID string `json:"uid"`
					}
					if err := json.Unmarshal([]byte(o.Data["roomsync.json"]), &dashboard); err != nil || dashboard.UID == "" {
						t.Errorf("dashboard ConfigMap: %v, uid %q", err, dashboard.UID)
					}
				}
			}
		})
	}
}

// checkHardened: the pod runs as non-root on a read-only root, with nothing to escalate.
func checkHardened(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.FSGroup == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod security context %+v", psc)
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v", sc)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
}

// TestSchemaRefusesBadValues: each bad value fails the install with a message naming it.
func TestSchemaRefusesBadValues(t *testing.T) {
	cases := []struct {
		name, overlay, want string
	}{
		{"typo in a key", `{serverNmae: x}`, "serverNmae"},
		{"typo in a nested key", `{store: {sqlite: {persistance: {enabled: true}}}}`, "persistance"},
		{"wrong type", `{replicaCount: "two"}`, "replicaCount"},
		{"wrong type of a switch", `{crds: {enabled: "yes"}}`, "crds"},
		{"SQLite with two replicas", `{replicaCount: 2}`, "replicaCount"},
		{"PostgreSQL without a Secret", `{store: {type: postgres}}`, "existingSecret"},
		{"a bad server name", `{serverName: "matrix org/"}`, "serverName"},
		{"no server name", `{serverName: ""}`, "serverName"},
		{"an unknown store", `{store: {type: mysql}}`, "store"},
		{"a bad duration", `{manager: {passTimeout: "five minutes"}}`, "passTimeout"},
		{"a zero rate limit", `{manager: {federationRateLimit: 0}}`, "federationRateLimit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := render(t, with(required(), c.overlay))
			if err == nil {
				t.Fatalf("values %s were accepted", c.overlay)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %q", err, c.want)
			}
		})
	}
}

// TestSchemaServerNameIsTheAPIRule: the chart checks serverName with the same pattern as the
// RoomSync API checks peer server names.
func TestSchemaServerNameIsTheAPIRule(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			ServerName struct {
				Pattern   string `json:"pattern"`
				MaxLength int    `json:"maxLength"`
			} `json:"serverName"`
		} `json:"properties"`
	}
	if err := yaml.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	if p := schema.Properties.ServerName; p.Pattern != roomsyncv1alpha1.ServerNamePattern || p.MaxLength != roomsyncv1alpha1.ServerNameMaxLength {
		t.Errorf("schema serverName %+v, want pattern %q and maxLength %d", p, roomsyncv1alpha1.ServerNamePattern, roomsyncv1alpha1.ServerNameMaxLength)
	}
}

// TestNoSecretValueInRenders: Secrets are referred to by name only; no key material, URL or
// credential is ever rendered, whatever the values.
func TestNoSecretValueInRenders(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": required(), "every option": everyOption()} {
		t.Run(name, func(t *testing.T) {
			manifest, err := render(t, vals)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range decodeAll(t, manifest) {
				if gvk, _, _ := scheme.ObjectKinds(o); gvk[0].Kind == "Secret" {
					t.Errorf("the chart renders a Secret")
				}
			}
			for _, leak := range []*regexp.Regexp{
				regexp.MustCompile(`postgres(ql)?://`),
				regexp.MustCompile(`ed25519 a_`),
				regexp.MustCompile(`BEGIN [A-Z ]*PRIVATE KEY`),
			} {
				if leak.MatchString(manifest) {
					t.Errorf("the render holds %s", leak)
				}
			}
			if name == "every option" && !strings.Contains(manifest, "secretKeyRef") {
				t.Error("the PostgreSQL URL is not read from the Secret")
			}
		})
	}
}

// TestChartFollowsConfig: the chart's CRD is config/crd/bases' and its ClusterRole holds
// controller-gen's rules (hack/chartgen keeps them so; `make verify` checks the files).
func TestChartFollowsConfig(t *testing.T) {
	manifest, err := render(t, required())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", "federation.roomsync.io_roomsyncs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &want); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range decodeAll(t, manifest) {
		if crd, ok := o.(*apiextensionsv1.CustomResourceDefinition); ok {
			found = true
			if !equality.Semantic.DeepEqual(crd.Spec, want.Spec) {
				t.Error("the chart's CRD spec differs from config/crd/bases: run make manifests")
			}
			if crd.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Errorf("CRD annotations %v: want it kept on uninstall by default", crd.Annotations)
			}
		}
	}
	if !found {
		t.Fatal("no CRD rendered")
	}
}

// TestEveryValueDocumented: each value of values.yaml has a row in the chart README's table
// (a map of free-form settings, such as podSecurityContext, has one row for itself).
func TestEveryValueDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	documented := func(key string) bool { return bytes.Contains(readme, []byte("| `"+key+"` |")) }
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := strings.TrimPrefix(prefix+"."+k, ".")
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 && !documented(key) {
				walk(key, sub)
				continue
			}
			if !documented(key) {
				t.Errorf("value %s has no row in charts/roomsync/README.md", key)
			}
		}
	}
	walk("", values)
}

// TestMetricsSecureByDefault: the metrics listener is HTTPS behind the API server's token and
// access checks unless metrics.secure is off; the ServiceMonitor scrapes it the same way, and
// the metrics-reader ClusterRole says who may.
func TestMetricsSecureByDefault(t *testing.T) {
	for _, c := range []struct {
		name        string
		vals        map[string]any
		secure      bool
		certDir     bool
		readerBound bool
	}{
		{"defaults", with(required(), `{serviceMonitor: {enabled: true}}`), true, false, false},
		{"a certificate and a reader", with(required(), `{serviceMonitor: {enabled: true}, metrics: {certSecret: m-tls, readers: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]}}`), true, true, true},
		{"plain", with(required(), `{serviceMonitor: {enabled: true}, metrics: {secure: false}}`), false, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			manifest, err := render(t, c.vals)
			if err != nil {
				t.Fatal(err)
			}
			var args []string
			reader, bound := false, false
			var endpoint monitoringv1.Endpoint
			for _, o := range decodeAll(t, manifest) {
				switch o := o.(type) {
				case *appsv1.Deployment:
					args = o.Spec.Template.Spec.Containers[0].Args
				case *rbacv1.ClusterRole:
					if strings.HasSuffix(o.Name, "-metrics-reader") {
						reader = len(o.Rules) == 1 && slices.Equal(o.Rules[0].NonResourceURLs, []string{"/metrics", "/rooms", "/rooms/*"}) &&
							slices.Equal(o.Rules[0].Verbs, []string{"get"})
					}
				case *rbacv1.ClusterRoleBinding:
					bound = bound || (strings.HasSuffix(o.Name, "-metrics-reader") && o.Subjects[0].Name == "prometheus")
				case *monitoringv1.ServiceMonitor:
					endpoint = o.Spec.Endpoints[0]
				}
			}
			if slices.Contains(args, "--metrics-secure") != c.secure || slices.Contains(args, "--metrics-cert-dir=/etc/roomsync/metrics-tls") != c.certDir {
				t.Errorf("manager args %v", args)
			}
			if reader != c.secure || bound != c.readerBound {
				t.Errorf("metrics-reader ClusterRole %t, bound %t", reader, bound)
			}
			https := endpoint.Scheme != nil && string(*endpoint.Scheme) == "https"
			if https != c.secure || (c.secure && endpoint.BearerTokenFile == "") { //nolint:staticcheck // what the operator reads
				t.Errorf("ServiceMonitor endpoint %+v", endpoint)
			}
		})
	}
}

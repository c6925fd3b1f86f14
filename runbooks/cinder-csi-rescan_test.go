package runbooks_test

// This file holds the shared harness of the cluster runbooks' end-to-end
// tests (one testbed API server for all of them, driven through the CLI
// in-process) and the cinder-csi-rescan tests.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/engine/runbook"
	"nksrun/modules"
	"nksrun/testdata/testbed"
)

var clusterRunbooks = []string{
	"dockerhub-ratelimit", "ghcr-migration", "cinder-csi-rescan", "fsgroup-policy", "calico-ebpf-udp",
	"calico-ebpf-istio", "calico-328-scale", "upgrade-finalizers", "calico-image-repo",
}

func loadRB(t testing.TB, name string) *runbook.Runbook {
	t.Helper()
	rb, err := runbook.Load(filepath.Join(".", name+".yaml"), modules.Registry())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return rb
}

func TestClusterRunbooksLoad(t *testing.T) {
	for _, name := range clusterRunbooks {
		t.Run(name, func(t *testing.T) {
			rb := loadRB(t, name)
			if rb.Description == "" {
				t.Errorf("%s: no description", name)
			}
		})
	}
}

// kenv is one end-to-end test's view of the shared testbed.
type kenv struct {
	t   *testing.T
	tb  *testbed.Testbed
	c   *module.Cluster
	dir string
	// all is every byte any CLI run printed, plus saved plans (for the
	// secret scan).
	all *bytes.Buffer
}

// TestClusterRunbooksE2E runs every cluster runbook against the testbed's
// real kube-apiserver: one testbed, one subtest per runbook, each seeding
// its own problem and removing it afterwards.
func TestClusterRunbooksE2E(t *testing.T) {
	tb := testbed.New(t, testbed.Options{N: 1})
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))
	base := &kenv{tb: tb, c: &module.Cluster{Clientset: tb.Client, Dynamic: tb.Dynamic, Mapper: mapper}, all: &bytes.Buffer{}}
	for _, tc := range []struct {
		name string
		f    func(k *kenv)
	}{
		{"calico-ebpf-udp", e2eCalicoEBPFUDP},
		{"calico-ebpf-udp-conflict", e2eCalicoEBPFUDPConflict},
		{"cinder-csi-rescan", e2eCinderCSIRescan},
		{"cinder-csi-rescan-wait-timeout", e2eCinderCSIRescanTimeout},
		{"dockerhub-ratelimit", e2eDockerHubRateLimit},
		{"upgrade-finalizers", e2eUpgradeFinalizers},
		{"ghcr-migration", e2eGHCRMigration},
		{"fsgroup-policy", e2eFSGroupPolicy},
		{"calico-image-repo", e2eCalicoImageRepo},
		{"calico-ebpf-istio", e2eCalicoEBPFIstio},
		{"calico-328-scale", e2eCalico328Scale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := *base
			k.t = t
			k.dir = t.TempDir()
			k.all = &bytes.Buffer{}
			tc.f(&k)
		})
	}
}

// cli runs nksrun in-process and returns stdout, stderr and the exit code.
func (k *kenv) cli(args ...string) (string, string, int) {
	k.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := cli.Run(ctx, args, strings.NewReader(""), &out, &errb)
	k.all.Write(out.Bytes())
	k.all.Write(errb.Bytes())
	return out.String(), errb.String(), code
}

// plan plans a runbook (text and JSON views, saved plan) and returns the
// saved plan's path and the decoded plan.
func (k *kenv) plan(name string, sets ...string) (string, *plans.Plan) {
	k.t.Helper()
	path := filepath.Join(k.dir, fmt.Sprintf("plan-%d.json", time.Now().UnixNano()))
	args := []string{"plan", "--kubeconfig", k.tb.Kubeconfig, "--log-format", "json", "--format", "text", "--out", path}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	args = append(args, name+".yaml")
	out, errs, code := k.cli(args...)
	if code != 0 {
		k.t.Fatalf("plan %s: exit %d\n%s\n%s", name, code, out, errs)
	}
	k.t.Logf("plan %s:\n%s", name, out)
	// The JSON and markdown views too (all scanned for secrets).
	js := append([]string{"plan", "--kubeconfig", k.tb.Kubeconfig, "--format", "json"}, args[len(args)-1-2*len(sets):]...)
	k.cli(js...)
	md := append([]string{"plan", "--kubeconfig", k.tb.Kubeconfig, "--format", "markdown"}, args[len(args)-1-2*len(sets):]...)
	k.cli(md...)
	data, err := os.ReadFile(path)
	if err != nil {
		k.t.Fatal(err)
	}
	k.all.Write(data)
	var p plans.Plan
	if err := json.Unmarshal(data, &p); err != nil {
		k.t.Fatal(err)
	}
	if p.HasErrors() {
		k.t.Fatalf("plan %s has errors:\n%s", name, out)
	}
	return path, &p
}

// apply applies a saved plan and returns the report.
func (k *kenv) apply(planPath string) (*plans.Report, int) {
	k.t.Helper()
	out, errs, code := k.cli("apply", "--kubeconfig", k.tb.Kubeconfig, "--auto-approve", "--no-lock", "--log-format", "json", "--format", "json", planPath)
	k.t.Logf("apply: exit %d\n%s\n%s", code, out, errs)
	var r plans.Report
	i := strings.Index(out, "{")
	if i < 0 || json.Unmarshal([]byte(out[i:]), &r) != nil {
		// The JSON report may be preceded by the plan; take the last object.
		dec := json.NewDecoder(strings.NewReader(out[max(i, 0):]))
		for dec.More() {
			var v plans.Report
			if dec.Decode(&v) == nil && len(v.Targets) > 0 {
				r = v
			}
		}
	}
	return &r, code
}

// steps maps step id → plan of the cluster target.
func steps(k *kenv, p *plans.Plan) map[string]plans.StepPlan {
	k.t.Helper()
	out := map[string]plans.StepPlan{}
	for _, rp := range p.Runbooks {
		for _, tp := range rp.Targets {
			if tp.Kind == plans.TargetCluster {
				for _, s := range tp.Steps {
					out[s.ID] = s
				}
			}
		}
	}
	return out
}

// wantActions checks each listed step's action.
func wantActions(k *kenv, p *plans.Plan, want map[string]module.Action) {
	k.t.Helper()
	got := steps(k, p)
	for id, a := range want {
		if got[id].Action != a {
			k.t.Errorf("step %s: action %s (%s %s), want %s", id, got[id].Action, got[id].Summary, got[id].Reason, a)
		}
	}
}

// nothingToDo: no change and no finding.
func nothingToDo(k *kenv, p *plans.Plan) {
	k.t.Helper()
	c := p.Counts()
	if c.Change != 0 || c.Unknown != 0 || c.Findings != 0 || c.Failed != 0 {
		for id, s := range steps(k, p) {
			k.t.Logf("  %s: %s %s %s", id, s.Action, s.Summary, s.Reason)
		}
		k.t.Errorf("want nothing to do, got %+v", c)
	}
}

func appliedOK(k *kenv, r *plans.Report, code int) {
	k.t.Helper()
	if code != 0 || r.Failed() {
		k.t.Fatalf("apply failed: exit %d %+v", code, r.Targets)
	}
	for _, tr := range r.Targets {
		for _, v := range tr.Verify {
			if !v.OK {
				k.t.Errorf("verify failed: %s %s", v.Message, v.Error)
			}
		}
	}
}

// create creates objects from YAML documents and deletes them (after
// removing finalizers) when the test ends.
func (k *kenv) create(docs ...string) []*unstructured.Unstructured {
	k.t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			k.t.Fatalf("%v\n%s", err, doc)
		}
		u := &unstructured.Unstructured{Object: m}
		ri := k.res(u.GetAPIVersion(), u.GetKind(), u.GetNamespace())
		obj, err := ri.Create(context.Background(), u, metav1.CreateOptions{})
		if err != nil {
			k.t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if st, ok := m["status"]; ok {
			obj.Object["status"] = st
			if obj, err = ri.UpdateStatus(context.Background(), obj, metav1.UpdateOptions{}); err != nil {
				k.t.Fatalf("status of %s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
		out = append(out, obj)
		apiVersion, kind, ns, name := u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName()
		k.t.Cleanup(func() {
			ctx := context.Background()
			ri := k.res(apiVersion, kind, ns)
			if cur, err := ri.Get(ctx, name, metav1.GetOptions{}); err == nil && len(cur.GetFinalizers()) > 0 {
				cur.SetFinalizers(nil)
				ri.Update(ctx, cur, metav1.UpdateOptions{})
			}
			ri.Delete(ctx, name, metav1.DeleteOptions{})
		})
	}
	return out
}

func (k *kenv) res(apiVersion, kind, ns string) interface {
	Create(context.Context, *unstructured.Unstructured, metav1.CreateOptions, ...string) (*unstructured.Unstructured, error)
	Update(context.Context, *unstructured.Unstructured, metav1.UpdateOptions, ...string) (*unstructured.Unstructured, error)
	UpdateStatus(context.Context, *unstructured.Unstructured, metav1.UpdateOptions) (*unstructured.Unstructured, error)
	Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
	Delete(context.Context, string, metav1.DeleteOptions, ...string) error
} {
	k.t.Helper()
	gv, _ := schema.ParseGroupVersion(apiVersion)
	m, err := k.c.Mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: kind}, gv.Version)
	if err != nil {
		k.t.Fatal(err)
	}
	if m.Scope.Name() == "namespace" {
		return k.tb.Dynamic.Resource(m.Resource).Namespace(ns)
	}
	return k.tb.Dynamic.Resource(m.Resource)
}

func (k *kenv) get(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	k.t.Helper()
	o, err := k.res(apiVersion, kind, ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return o
}

// namespace creates a fresh namespace (never deleted: the testbed has no
// namespace controller to finish a deletion).
func (k *kenv) namespace(prefix string) string {
	k.t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9)
	k.create(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", name))
	return name
}

// workload renders a minimal valid workload.
func workload(kind, ns, name, extraMeta, podSpec string) string {
	apiVersion := "apps/v1"
	spec := fmt.Sprintf("  selector: {matchLabels: {app: %s}}\n  template:\n    metadata: {labels: {app: %s}}\n    spec:\n%s", name, name, indent(podSpec, 6))
	switch kind {
	case "StatefulSet":
		spec = "  serviceName: " + name + "\n" + spec
	case "CronJob":
		apiVersion = "batch/v1"
		spec = fmt.Sprintf("  schedule: \"0 0 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n%s", indent("restartPolicy: OnFailure\n"+podSpec, 10))
	}
	return fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\n  namespace: %s\n%sspec:\n%s", apiVersion, kind, name, ns, indent(extraMeta, 2), spec)
}

func indent(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pad + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// noSecrets fails if any output of the test shows a secret value, plain or
// base64.
func noSecrets(k *kenv, values ...string) {
	k.t.Helper()
	all := k.all.String()
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v))} {
			if strings.Contains(all, form) {
				i := strings.Index(all, form)
				k.t.Errorf("output shows a secret value (%q…): …%s…", form[:min(6, len(form))], all[max(0, i-80):i])
			}
		}
	}
	if k.all.Len() == 0 {
		k.t.Error("no output captured")
	}
}

// --- cinder-csi-rescan (guide §7) ---

const cinderPassword = "Cinder-Pa55word-9f8e7d"

func cloudConfig(extra string) string {
	return "[Global]\nauth-url=https://api-identity-infrastructure.nhncloudservice.com/v2.0\nusername=nks-user\npassword=" +
		cinderPassword + "\ntenant-id=0123456789abcdef0123456789abcdef\nregion=KR1\n\n[LoadBalancer]\nuse-octavia=true\n" + extra
}

func seedCSI(k *kenv, cfg string, status bool) {
	k.create(fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: cinder-csi-cloud-config, namespace: kube-system}\ntype: Opaque\ndata:\n  cloud-config: %s\n",
		base64.StdEncoding.EncodeToString([]byte(cfg))))
	pod := "containers: [{name: cinder-csi-plugin, image: registry.k8s.io/provider-os/cinder-csi-plugin:v1.28.0}]\n"
	dsStatus, stsStatus := "", ""
	if status {
		// No controller-manager in the testbed: a status that says the
		// (next) rollout is complete, as a controller would report it.
		dsStatus = "status: {observedGeneration: 100, desiredNumberScheduled: 1, currentNumberScheduled: 1, numberReady: 1, updatedNumberScheduled: 1, numberAvailable: 1, numberMisscheduled: 0}\n"
		stsStatus = "status: {observedGeneration: 100, replicas: 1, readyReplicas: 1, updatedReplicas: 1, availableReplicas: 1, currentReplicas: 1}\n"
	}
	k.create(workload("DaemonSet", "kube-system", "csi-cinder-nodeplugin", "", pod)+dsStatus,
		workload("StatefulSet", "kube-system", "csi-cinder-controllerplugin", "", pod)+stsStatus)
}

func secretDoc(k *kenv) string {
	s, err := k.tb.Client.CoreV1().Secrets("kube-system").Get(context.Background(), "cinder-csi-cloud-config", metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return string(s.Data["cloud-config"])
}

func e2eCinderCSIRescan(k *kenv) {
	_, p := k.plan("cinder-csi-rescan")
	nothingToDo(k, p) // healthy: no such Secret

	seedCSI(k, cloudConfig(""), true)
	before := k.get("apps/v1", "DaemonSet", "kube-system", "csi-cinder-nodeplugin")
	path, p := k.plan("cinder-csi-rescan")
	wantActions(k, p, map[string]module.Action{
		"cloud_config": module.Change, "diagnose": module.Finding,
		"restart_nodeplugin": module.Change, "restart_controller": module.Change, "restart_controller_deployment": module.NoOp,
	})
	st := steps(k, p)
	if d := st["cloud_config"].Diff; !strings.Contains(d, "cloud-config: (secret,") || !strings.Contains(d, "changed)") {
		k.t.Errorf("Secret diff:\n%s", d)
	}
	if !strings.Contains(st["restart_nodeplugin"].Summary, "csi-cinder-nodeplugin") {
		k.t.Errorf("restart summary: %s", st["restart_nodeplugin"].Summary)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	doc := secretDoc(k)
	if doc != cloudConfig("\n[BlockStorage]\nrescan-on-resize=true\n") {
		k.t.Errorf("cloud-config after apply:\n%s", doc)
	}
	after := k.get("apps/v1", "DaemonSet", "kube-system", "csi-cinder-nodeplugin")
	ann, _, _ := unstructured.NestedString(after.Object, "spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt")
	if ann == "" || after.GetGeneration() == before.GetGeneration() {
		k.t.Errorf("node plugin not restarted (annotation %q, generation %d → %d)", ann, before.GetGeneration(), after.GetGeneration())
	}
	// Second plan: nothing to do, and a second apply would not append
	// another [BlockStorage].
	_, p = k.plan("cinder-csi-rescan")
	nothingToDo(k, p)
	if strings.Count(secretDoc(k), "[BlockStorage]") != 1 {
		k.t.Errorf("[BlockStorage] not exactly once")
	}
	noSecrets(k, cinderPassword, cloudConfig(""), cloudConfig("\n[BlockStorage]\nrescan-on-resize=true\n"))
}

func e2eCinderCSIRescanTimeout(k *kenv) {
	// A rollout that never completes (no controller, status not set):
	// apply reports the timeout instead of hanging or claiming success.
	seedCSI(k, cloudConfig("[BlockStorage]\nrescan-on-resize=false\n"), false)
	path, p := k.plan("cinder-csi-rescan", "timeout=2s")
	wantActions(k, p, map[string]module.Action{"cloud_config": module.Change, "restart_nodeplugin": module.Change})
	r, code := k.apply(path)
	if code == 0 || !r.Failed() {
		k.t.Fatalf("want a failed apply (rollout timeout), got exit %d %+v", code, r.Targets)
	}
	if reason := r.Targets[0].Reason; !strings.Contains(reason, "rollout not finished after 2s") {
		k.t.Errorf("reason: %s", reason)
	}
	if doc := secretDoc(k); strings.Count(doc, "[BlockStorage]") != 1 || !strings.Contains(doc, "rescan-on-resize=true") || strings.Contains(doc, "=false") {
		k.t.Errorf("cloud-config:\n%s", doc)
	}
	noSecrets(k, cinderPassword)
}

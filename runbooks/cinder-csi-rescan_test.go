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
	// asKubeconfig, when set, is what plan and apply use instead of the
	// testbed's admin kubeconfig (a restricted ServiceAccount).
	asKubeconfig string
}

func (k *kenv) kubeconfig() string {
	if k.asKubeconfig != "" {
		return k.asKubeconfig
	}
	return k.tb.Kubeconfig
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
		{"dockerhub-ratelimit", e2eDockerHubRateLimit},
		{"ghcr-migration", e2eGHCRMigration},
		{"fsgroup-policy", e2eFSGroupPolicy},
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
	args := []string{"plan", "--kubeconfig", k.kubeconfig(), "--log-format", "json", "--format", "text", "--out", path}
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
	js := append([]string{"plan", "--kubeconfig", k.kubeconfig(), "--format", "json"}, args[len(args)-1-2*len(sets):]...)
	k.cli(js...)
	md := append([]string{"plan", "--kubeconfig", k.kubeconfig(), "--format", "markdown"}, args[len(args)-1-2*len(sets):]...)
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
	out, errs, code := k.cli("apply", "--kubeconfig", k.kubeconfig(), "--auto-approve", "--no-lock", "--log-format", "json", "--format", "json", planPath)
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

func secretDoc(k *kenv) string {
	s, err := k.tb.Client.CoreV1().Secrets("kube-system").Get(context.Background(), "cinder-csi-cloud-config", metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return string(s.Data["cloud-config"])
}

func csiSecretDoc(cfg string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: cinder-csi-cloud-config, namespace: kube-system}\ntype: Opaque\ndata:\n  cloud-config: %s\n",
		base64.StdEncoding.EncodeToString([]byte(cfg)))
}

const (
	csiPod = "containers: [{name: cinder-csi-plugin, image: registry.k8s.io/provider-os/cinder-csi-plugin:v1.28.0}]\n"
	// observedGeneration 100: no controller runs here; a status that says
	// the (next) rollout is complete, as a controller would report it.
	dsDone    = "status: {observedGeneration: 100, desiredNumberScheduled: 1, currentNumberScheduled: 1, numberReady: 1, updatedNumberScheduled: 1, numberAvailable: 1, numberMisscheduled: 0}\n"
	stsDone   = "status: {observedGeneration: 100, replicas: 1, readyReplicas: 1, updatedReplicas: 1, availableReplicas: 1, currentReplicas: 1}\n"
	csiNodeDS = "csi-cinder-nodeplugin"
	csiCtrl   = "csi-cinder-controllerplugin"
)

func csiDS(done bool) string {
	st := ""
	if done {
		st = dsDone
	}
	return workload("DaemonSet", "kube-system", csiNodeDS, "", csiPod) + st
}

func csiSTS(done bool) string {
	st := ""
	if done {
		st = stsDone
	}
	return workload("StatefulSet", "kube-system", csiCtrl, "", csiPod) + st
}

// finishRollout plays the controller: the workload's status says its
// current generation rolled out.
func finishRollout(k *kenv, kind, name string) {
	k.t.Helper()
	o := k.get("apps/v1", kind, "kube-system", name)
	st := map[string]any{"observedGeneration": o.GetGeneration(), "desiredNumberScheduled": int64(1), "currentNumberScheduled": int64(1), "numberReady": int64(1),
		"updatedNumberScheduled": int64(1), "numberAvailable": int64(1), "numberMisscheduled": int64(0)}
	if kind == "StatefulSet" {
		st = map[string]any{"observedGeneration": o.GetGeneration(), "replicas": int64(1), "readyReplicas": int64(1), "updatedReplicas": int64(1), "availableReplicas": int64(1), "currentReplicas": int64(1)}
	}
	o.Object["status"] = st
	if _, err := k.res("apps/v1", kind, "kube-system").UpdateStatus(context.Background(), o, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

func wantCloudConfig(want string) func(k *kenv, _ map[string]string) {
	return func(k *kenv, _ map[string]string) {
		if doc := secretDoc(k); doc != want {
			k.t.Errorf("cloud-config:\n%s\nwant:\n%s", doc, want)
		}
	}
}

// Bystanders in kube-system: another DaemonSet and another Secret.
var csiBystanders = docs(
	workload("DaemonSet", "kube-system", "node-exporter", "", "containers: [{name: e, image: prom/node-exporter:v1.8.0}]\n")+dsDone,
	"apiVersion: v1\nkind: Secret\nmetadata: {name: other-config, namespace: kube-system}\ntype: Opaque\nstringData: {cloud-config: \"[Global]\\npassword=other-secret-value\\n\"}\n",
)

func e2eCinderCSIRescan(k *kenv) {
	fixed := cloudConfig("\n[BlockStorage]\nrescan-on-resize=true\n")
	restartAll := map[string]module.Action{"cloud_config": module.NoOp, "diagnose": module.Finding,
		"restart_nodeplugin": module.Change, "restart_controller": module.Change, "restart_controller_deployment": module.NoOp}
	runCases(k, "cinder-csi-rescan", []rbCase{{
		name:    "healthy: no cinder CSI Secret",
		objects: docs(csiBystanders),
	}, {
		name:    "healthy: option true in another spelling, workloads rolled out after the Secret",
		objects: docs(csiBystanders, csiSecretDoc(cloudConfig("[blockstorage]\nRescan-On-Resize = Yes\n")), csiDS(true), csiSTS(true)),
		check:   wantCloudConfig(cloudConfig("[blockstorage]\nRescan-On-Resize = Yes\n")),
	}, {
		name:    "broken: option missing; the Secret is patched once and both workloads restart",
		objects: docs(csiBystanders, csiDS(true), csiSTS(true), csiSecretDoc(cloudConfig(""))),
		plan: map[string]module.Action{"cloud_config": module.Change, "diagnose": module.Finding,
			"restart_nodeplugin": module.Change, "restart_controller": module.Change, "restart_controller_deployment": module.NoOp},
		evidence: []string{"cloud-config: (secret,", "changed)", "restart DaemonSet kube-system/csi-cinder-nodeplugin", "restart StatefulSet kube-system/csi-cinder-controllerplugin"},
		changed:  []string{"Secret kube-system/cinder-csi-cloud-config", "DaemonSet kube-system/" + csiNodeDS, "StatefulSet kube-system/" + csiCtrl},
		check:    wantCloudConfig(fixed),
		secrets:  []string{cinderPassword, cloudConfig(""), fixed, "other-secret-value"},
	}, {
		name:     "Secret fixed by hand after the workloads started: they are restarted, the Secret is left alone",
		objects:  docs(csiBystanders, csiDS(true), csiSTS(true), tick, csiSecretDoc(cloudConfig("[BlockStorage]\nrescan-on-resize=1\n"))),
		plan:     restartAll,
		evidence: []string{"DaemonSet kube-system/csi-cinder-nodeplugin: last rolled out", "before the Secret changed", "StatefulSet kube-system/csi-cinder-controllerplugin: last rolled out"},
		changed:  []string{"DaemonSet kube-system/" + csiNodeDS, "StatefulSet kube-system/" + csiCtrl},
		check:    wantCloudConfig(cloudConfig("[BlockStorage]\nrescan-on-resize=1\n")),
		secrets:  []string{cinderPassword},
	}, {
		name:    "partly fixed: the node plugin rolled out after the change, the controller did not",
		objects: docs(csiBystanders, csiSTS(true), tick, csiSecretDoc(fixed), csiDS(true)),
		plan: map[string]module.Action{"cloud_config": module.NoOp, "diagnose": module.Finding,
			"restart_nodeplugin": module.NoOp, "restart_controller": module.Change},
		evidence: []string{"StatefulSet kube-system/csi-cinder-controllerplugin: last rolled out"},
		absent:   []string{"DaemonSet kube-system/csi-cinder-nodeplugin: last rolled out"},
		changed:  []string{"StatefulSet kube-system/" + csiCtrl},
		secrets:  []string{cinderPassword},
	}, {
		name:     "wait=false: apply restarts without waiting; the rollouts finish later",
		objects:  docs(csiBystanders, csiDS(false), csiSTS(false), csiSecretDoc(cloudConfig(""))),
		sets:     []string{"wait=false"},
		plan:     map[string]module.Action{"cloud_config": module.Change, "restart_nodeplugin": module.Change, "restart_controller": module.Change},
		evidence: []string{"restart DaemonSet kube-system/csi-cinder-nodeplugin"},
		absent:   []string{"wait for the rollout"},
		changed:  []string{"Secret kube-system/cinder-csi-cloud-config", "DaemonSet kube-system/" + csiNodeDS, "StatefulSet kube-system/" + csiCtrl},
		between: func(k *kenv, _ map[string]string) {
			finishRollout(k, "DaemonSet", csiNodeDS)
			finishRollout(k, "StatefulSet", csiCtrl)
		},
		check:   wantCloudConfig(fixed),
		secrets: []string{cinderPassword},
	}, {
		// A rollout that never completes (no controller): apply reports the
		// timeout; once the node plugin's rollout finishes only the
		// controller, still not rolled out, is restarted by the next run.
		name:       "rollout timed out: the next run restarts what has not rolled out",
		objects:    docs(csiBystanders, csiDS(false), csiSTS(false), csiSecretDoc(cloudConfig("[BlockStorage]\nrescan-on-resize=false\n"))),
		sets:       []string{"timeout=2s"},
		plan:       map[string]module.Action{"cloud_config": module.Change, "restart_nodeplugin": module.Change, "restart_controller": module.Change},
		applyFails: "rollout not finished after 2s",
		changed:    []string{"Secret kube-system/cinder-csi-cloud-config", "DaemonSet kube-system/" + csiNodeDS},
		between:    func(k *kenv, _ map[string]string) { finishRollout(k, "DaemonSet", csiNodeDS) },
		after: map[string]module.Action{"cloud_config": module.NoOp, "diagnose": module.Finding,
			"restart_nodeplugin": module.NoOp, "restart_controller": module.Change},
		check:   wantCloudConfig(cloudConfig("[BlockStorage]\nrescan-on-resize=true\n")),
		secrets: []string{cinderPassword},
	}})
}

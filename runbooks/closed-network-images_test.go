package runbooks_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/plans"
	"nksrun/testdata/testbed"
)

// nbSnapshot hashes every file of every node and records every object's
// resourceVersion, to prove a diagnose-only runbook changed nothing.
func nbSnapshot(t *testing.T, tb *testbed.Testbed) map[string]string {
	t.Helper()
	snap := map[string]string{}
	for _, n := range tb.Nodes {
		filepath.WalkDir(n.Root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			s := sha256.Sum256(b)
			snap["file "+p] = hex.EncodeToString(s[:])
			return nil
		})
	}
	ctx := context.Background()
	nodes, err := tb.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range nodes.Items {
		snap["node "+o.Name] = o.ResourceVersion
	}
	pods, err := tb.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range pods.Items {
		snap["pod "+o.Namespace+"/"+o.Name] = o.ResourceVersion
	}
	leases, err := tb.Client.CoordinationV1().Leases("").List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, o := range leases.Items {
			if o.Namespace == "kube-system" && strings.HasPrefix(o.Name, "nksrun") {
				snap["lease "+o.Name] = o.ResourceVersion
			}
		}
	}
	return snap
}

func TestClosedNetworkImagesDiagnoseOnly(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbUbuntu}})
	docker, containerd, healthy := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	ctx := context.Background()
	// docker node: kubelet's GC removed pause; containerd node: kube-proxy
	// and the calico/node image its calico pod uses.
	if err := docker.SetImages([]string{"k8s.gcr.io/kube-proxy:v1.23.3", "calico/node:v3.26.1"}); err != nil {
		t.Fatal(err)
	}
	if err := containerd.SetImages([]string{"registry.k8s.io/pause:3.9", "docker.io/coredns/coredns:1.10.1"}); err != nil {
		t.Fatal(err)
	}
	ctrl := true
	calico := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-node-x7k2p", Namespace: "kube-system",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "calico-node", UID: "4a1c2b9e-0000-4000-8000-000000000002", Controller: &ctrl}}},
		Spec: corev1.PodSpec{NodeName: containerd.Name, Containers: []corev1.Container{{Name: "calico-node", Image: "docker.io/calico/node:v3.26.1"}}},
	}
	if _, err := tb.Client.CoreV1().Pods("kube-system").Create(ctx, calico, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod on the docker node whose sandbox cannot be created.
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: docker.Name, Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
	}
	wp, err := tb.Client.CoreV1().Pods("default").Create(ctx, web, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "web-0.17a1", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-0", UID: wp.UID},
		Reason:         "FailedCreatePodSandBox", Type: "Warning", FirstTimestamp: now, LastTimestamp: now, Count: 3,
		Message: `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "k8s.gcr.io/pause:3.2": failed to pull image "k8s.gcr.io/pause:3.2": dial tcp 142.250.1.82:443: i/o timeout`,
		Source:  corev1.EventSource{Component: "kubelet", Host: docker.Name},
	}
	if _, err := tb.Client.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	before := nbSnapshot(t, tb)
	p := nbPlan(t, tb, "closed-network-images.yaml")
	code, rep := nbApply(t, tb, "closed-network-images.yaml")
	after := nbSnapshot(t, tb)
	if code != 0 {
		t.Fatalf("apply exit %d", code)
	}
	if p.HasChanges() {
		t.Fatalf("a diagnose-only plan has changes: %+v", p.Counts())
	}
	var diffs []string
	for k, v := range before {
		if after[k] != v {
			diffs = append(diffs, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, k+" (new)")
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("plan/apply changed: %v", diffs)
	}
	for _, r := range rep.Targets {
		if r.Status == plans.StatusChanged {
			t.Fatalf("apply reports a change: %+v", r)
		}
	}

	findings := map[string][]string{} // target → titles
	for _, rb := range p.Runbooks {
		for _, tp := range rb.Targets {
			for _, s := range tp.Steps {
				for _, f := range s.Findings {
					findings[tp.Name] = append(findings[tp.Name], f.Title)
					if len(f.Evidence) == 0 || !strings.Contains(f.Recommendation, "NKS registry") {
						t.Errorf("%s: finding without evidence or the guide's recommendation: %+v", tp.Name, f)
					}
				}
			}
		}
	}
	t.Logf("findings: %v", findings)
	has := func(target, sub string) bool {
		for _, f := range findings[target] {
			if strings.Contains(f, sub) {
				return true
			}
		}
		return false
	}
	if !has(docker.Name, docker.Name+" is missing default image(s): pause") {
		t.Errorf("no finding that %s lacks pause", docker.Name)
	}
	if !has(containerd.Name, "kube-proxy") || !has(containerd.Name, "calico/node") || has(containerd.Name, "pause") {
		t.Errorf("finding for %s should name kube-proxy and calico/node (used by its pod), not pause: %v", containerd.Name, findings[containerd.Name])
	}
	if len(findings[healthy.Name]) != 0 {
		t.Errorf("healthy node has findings: %v", findings[healthy.Name])
	}
	if !has("cluster", "1 pod(s) fail to pull a pause image") {
		t.Errorf("no cluster finding for the pod failing to pull pause: %v", findings["cluster"])
	}
	// Evidence carries the image store, GC thresholds and disk usage.
	for _, rb := range p.Runbooks {
		for _, tp := range rb.Targets {
			if tp.Name != docker.Name {
				continue
			}
			ev := strings.Join(tp.Steps[0].Findings[0].Evidence, "\n")
			for _, want := range []string{"docker images", "k8s.gcr.io/kube-proxy:v1.23.3", "high 85%, low 80%", "% used"} {
				if !strings.Contains(ev, want) {
					t.Errorf("evidence lacks %q:\n%s", want, ev)
				}
			}
		}
	}
}

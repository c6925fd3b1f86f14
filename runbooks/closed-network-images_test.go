package runbooks_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/module"
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

// closedNetworkNode is one node scenario of §3: the node's image store and
// runtime config, the images of the pods scheduled on it, and what the
// plan must say about it.
type closedNetworkNode struct {
	name   string
	spec   testbed.NodeSpec
	images []string // pods on the node use these
	action module.Action
	// title/reason must contain these; notTitle must not.
	title, reason []string
	notTitle      []string
	// reported, when setReport: the Node's status.images (nil: a kubelet
	// reporting none); the testbed otherwise reports the node's store, as a
	// kubelet does.
	reported  []string
	setReport bool
	// listed: the node's image store is listed (the kubelet's report does
	// not show every image the node needs).
	listed bool
}

var closedNetworkNodes = []closedNetworkNode{{
	name: "docker node whose pause image was garbage-collected",
	spec: withImages(nbCentOS, "k8s.gcr.io/kube-proxy:v1.23.3", "calico/node:v3.26.1"),
	// nginx is not a default image: never required.
	images: []string{"nginx:1.27"},
	action: module.Finding, title: []string{"is missing default image(s): pause"}, notTitle: []string{"kube-proxy", "nginx"},
	listed: true,
}, {
	name:   "containerd node: same repository, other tag (compared with the tag); kube-proxy not run: not required",
	spec:   withImages(nbRocky, "registry.k8s.io/pause:3.9", "docker.io/coredns/coredns:1.10.1", "docker.io/calico/node:v3.25.0"),
	images: []string{"docker.io/calico/node:v3.26.1", "coredns/coredns:1.10.1"},
	action: module.Finding, title: []string{"missing default image(s): docker.io/calico/node:v3.26.1"},
	notTitle: []string{"pause", "kube-proxy", "coredns"},
	listed:   true,
}, {
	name:   "healthy node: every image its pods use, by any spelling",
	spec:   withImages(nbUbuntu, "registry.k8s.io/pause:3.9", "registry.k8s.io/kube-proxy:v1.29.3", "docker.io/calico/node:v3.26.1"),
	images: []string{"registry.k8s.io/kube-proxy:v1.29.3", "calico/node:v3.26.1"},
	action: module.NoOp, title: []string{"as its kubelet reports them"},
}, {
	name:      "healthy docker node whose kubelet reports no images: the store is listed",
	spec:      withImages(nbCentOS, "k8s.gcr.io/pause:3.2", "calico/node:v3.26.1"),
	images:    []string{"calico/node:v3.26.1"},
	setReport: true,
	action:    module.NoOp, title: []string{"holds the default images it needs (docker.io/calico/node:v3.26.1)"},
	notTitle: []string{"kubelet reports"},
	listed:   true,
}, {
	// Partly fixed: the missing image was loaded by hand and the kubelet
	// has not reported it yet. A report lacking an image is no evidence of
	// absence: the store is listed and the node is healthy.
	name:      "pause loaded by hand, the kubelet's report not updated yet: the store is listed",
	spec:      withImages(nbRocky, "registry.k8s.io/pause:3.9", "docker.io/calico/node:v3.26.1"),
	images:    []string{"calico/node:v3.26.1"},
	reported:  []string{"docker.io/calico/node:v3.26.1"},
	setReport: true,
	action:    module.NoOp, title: []string{"holds the default images it needs (docker.io/calico/node:v3.26.1)"},
	notTitle: []string{"kubelet reports", "missing"},
	listed:   true,
}, {
	name: "configured sandbox image: registry.k8s.io/pause:3.9 does not stand in for k8s.gcr.io/pause:3.2",
	spec: func() testbed.NodeSpec {
		s := withImages(nbUbuntu, "registry.k8s.io/pause:3.9")
		s.Files = map[string]string{"/etc/default/kubelet": "KUBELET_EXTRA_ARGS=--pod-infra-container-image=k8s.gcr.io/pause:3.2 --v=2\n"}
		return s
	}(),
	action: module.Finding, title: []string{"missing default image(s): k8s.gcr.io/pause:3.2"},
	listed: true,
}, {
	name:   "image pinned by digest, store lists no digests: unknown, not healthy",
	spec:   withImages(nbRocky, "registry.k8s.io/pause:3.9", "registry.k8s.io/coredns/coredns:v1.11.1"),
	images: []string{"registry.k8s.io/coredns/coredns@sha256:1eeb4c7316bacb1d4c8ead65571cd92dd21e27359f0d4917f1a5822a73b75db1"},
	action: module.Unknown, reason: []string{"pinned by digest", "registry.k8s.io/coredns/coredns@sha256:1eeb"},
	listed: true,
}}

func withImages(s testbed.NodeSpec, images ...string) testbed.NodeSpec {
	s.Images = images
	return s
}

// TestClosedNetworkImagesDiagnoseOnly plans and applies §3 on one node per
// scenario (closedNetworkNodes) plus the cluster-wide pause pull failures:
// only Warning events count (a Normal "Successfully pulled" does not), and
// nothing anywhere changes.
func TestClosedNetworkImagesDiagnoseOnly(t *testing.T) {
	var specs []testbed.NodeSpec
	for _, c := range closedNetworkNodes {
		specs = append(specs, c.spec)
	}
	tb := testbed.New(t, testbed.Options{Nodes: specs})
	ctx := context.Background()
	now := metav1.NewTime(time.Now())
	event := func(pod *corev1.Pod, typ, reason, msg string) {
		ev := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: pod.Name + "." + reason, Namespace: pod.Namespace},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
			Reason:         reason, Type: typ, FirstTimestamp: now, LastTimestamp: now, Count: 3, Message: msg,
			Source: corev1.EventSource{Component: "kubelet", Host: pod.Spec.NodeName},
		}
		if _, err := tb.Client.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var pods []*corev1.Pod
	for i, c := range closedNetworkNodes {
		for j, img := range c.images {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d-%d", i, j), Namespace: "default"},
				Spec:       corev1.PodSpec{NodeName: tb.Nodes[i].Name, Containers: []corev1.Container{{Name: "c", Image: img}}},
			}
			created, err := tb.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, created)
		}
	}
	// Cluster: one pod whose sandbox cannot be created (Warning), and a
	// pod whose pause pull succeeded (Normal).
	event(pods[0], "Warning", "FailedCreatePodSandBox", `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "k8s.gcr.io/pause:3.2": failed to pull image "k8s.gcr.io/pause:3.2": dial tcp 142.250.1.82:443: i/o timeout`)
	event(pods[len(pods)-2], "Normal", "Pulled", `Successfully pulled image "registry.k8s.io/pause:3.9" in 1.2s`)

	// The stand-ins touch their store each time they list it: its mtime
	// tells which nodes were listed.
	storeTimes := map[string]time.Time{}
	for i, c := range closedNetworkNodes {
		n := tb.Nodes[i]
		if c.setReport {
			if err := n.SetReportedImages(ctx, c.reported); err != nil {
				t.Fatal(err)
			}
		}
		st, err := os.Stat(n.Path(testbed.StateDir + "/images"))
		if err != nil {
			t.Fatal(err)
		}
		storeTimes[n.Name] = st.ModTime()
	}
	before := nbSnapshot(t, tb)
	p := nbPlan(t, tb, "closed-network-images.yaml")
	code, rep := nbApply(t, tb, "closed-network-images.yaml")
	after := nbSnapshot(t, tb)
	if code != 0 {
		t.Fatalf("apply exit %d", code)
	}
	if p.Counts().Change != 0 {
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
	targets := nbPlanTargets(p)
	for i, c := range closedNetworkNodes {
		t.Run(c.name, func(t *testing.T) {
			tp := targets[tb.Nodes[i].Name]
			step := stepOf(tp, "images")
			st, err := os.Stat(tb.Nodes[i].Path(testbed.StateDir + "/images"))
			if err != nil {
				t.Fatal(err)
			}
			if listed := !st.ModTime().Equal(storeTimes[tb.Nodes[i].Name]); listed != c.listed {
				t.Errorf("image store listed: %v, want %v", listed, c.listed)
			}
			if step.Action != c.action {
				t.Errorf("images: %s (%s; %s), want %s", step.Action, step.Summary, step.Reason, c.action)
			}
			text := step.Summary + "\n" + step.Reason
			for _, f := range step.Findings {
				text += "\n" + f.Title + "\n" + strings.Join(f.Evidence, "\n")
				if len(f.Evidence) == 0 || !strings.Contains(f.Recommendation, "NKS registry") {
					t.Errorf("finding without evidence or the guide's recommendation: %+v", f)
				}
			}
			for _, w := range append(append([]string{}, c.title...), c.reason...) {
				if !strings.Contains(text, w) {
					t.Errorf("plan does not say %q:\n%s", w, text)
				}
			}
			for _, w := range c.notTitle {
				if strings.Contains(step.Summary, w) {
					t.Errorf("plan says %q:\n%s", w, text)
				}
			}
		})
	}
	cluster := stepOf(targets["cluster"], "pause_pulls")
	if cluster.Action != module.Finding || !strings.Contains(cluster.Summary, "1 pod(s) fail to pull a pause image") ||
		!strings.Contains(strings.Join(cluster.Findings[0].Evidence, "\n"), "default/p0-0") {
		t.Errorf("pause pull failures: %s %s %+v", cluster.Action, cluster.Summary, cluster.Findings)
	}
	// Evidence carries the image store, GC thresholds and disk usage.
	ev := strings.Join(stepOf(targets[tb.Nodes[0].Name], "images").Findings[0].Evidence, "\n")
	for _, want := range []string{"docker images", "k8s.gcr.io/kube-proxy:v1.23.3", "high 85%, low 80%", "% used", "runtime default: any pause image"} {
		if !strings.Contains(ev, want) {
			t.Errorf("evidence lacks %q:\n%s", want, ev)
		}
	}
}

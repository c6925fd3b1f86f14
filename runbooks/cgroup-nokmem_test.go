package runbooks_test

// End-to-end tests of the node runbooks (cgroup-nokmem, rpc-statd,
// closed-network-images) on the testbed. Helpers shared by these three files
// are prefixed with nb (node runbooks).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/plans"
	"nksrun/modules/reboot"
	"nksrun/testdata/testbed"
)

var (
	nbCentOS = testbed.NodeSpec{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7"}
	nbRocky  = testbed.NodeSpec{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Kernel: "4.18.0-553.el8_10.x86_64", Runtime: "containerd://1.7.13"}
	nbUbuntu = testbed.NodeSpec{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13"}
)

// Small reboot timings for tests (seconds).
var nbFast = []string{"--set", "reboot_timeout=20", "--set", "ready_timeout=20", "--set", "drain_timeout=20", "--set", "lease_duration=6", "--set", "lock_timeout=120"}

// nbRun runs the CLI in-process against the testbed.
func nbRun(t *testing.T, tb *testbed.Testbed, args ...string) (int, string, string) {
	t.Helper()
	cmd := args[0]
	full := []string{cmd, "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts}
	if cmd == "apply" {
		full = append(full, "--auto-approve", "--lock-file", filepath.Join(t.TempDir(), "apply.lock"))
	}
	full = append(full, args[1:]...)
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := cli.Run(ctx, full, strings.NewReader(""), &out, &errb)
	t.Logf("nksrun %s → exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, nbTail(out.String()), nbTail(errb.String()))
	return code, out.String(), errb.String()
}

func nbTail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

func nbPlan(t *testing.T, tb *testbed.Testbed, args ...string) *plans.Plan {
	t.Helper()
	code, out, _ := nbRun(t, tb, append([]string{"plan", "--format", "json"}, args...)...)
	var p plans.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan JSON (exit %d): %v", code, err)
	}
	if code != 0 {
		for _, rb := range p.Runbooks {
			for _, tp := range rb.Targets {
				if tp.Status == plans.StatusFailed || tp.Status == plans.StatusUnreachable {
					t.Errorf("plan: %s %s: %s", tp.Name, tp.Status, tp.Reason)
				}
			}
		}
		t.Fatalf("plan exit %d", code)
	}
	return &p
}

func nbApply(t *testing.T, tb *testbed.Testbed, args ...string) (int, *plans.Report) {
	t.Helper()
	code, out, _ := nbRun(t, tb, append([]string{"apply", "--format", "json"}, args...)...)
	var r plans.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("apply JSON (exit %d): %v", code, err)
	}
	return code, &r
}

func nbTargets(rep *plans.Report) map[string]plans.TargetResult {
	m := map[string]plans.TargetResult{}
	for _, tr := range rep.Targets {
		m[tr.Name] = tr
	}
	return m
}

func nbPlanTargets(p *plans.Plan) map[string]plans.TargetPlan {
	m := map[string]plans.TargetPlan{}
	for _, rb := range p.Runbooks {
		for _, tp := range rb.Targets {
			m[tp.Name] = tp
		}
	}
	return m
}

func nbNode(t *testing.T, tb *testbed.Testbed, name string) *corev1.Node {
	t.Helper()
	n, err := tb.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func nbRead(t *testing.T, n *testbed.Node, p string) string {
	t.Helper()
	b, err := os.ReadFile(n.Path(p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nbWatcher polls the API server and the nodes every 10 ms and records the
// largest number of nodes that were cordoned (not counting those in
// ignoreCordon) or down (sshd not up or Ready false) at the same moment.
type nbWatcher struct {
	maxCordoned, maxDown atomic.Int32
	sawCordon            sync.Map // node name → true
	samples              atomic.Int32
	stop                 chan struct{}
	done                 chan struct{}
	log                  []string
	mu                   sync.Mutex
}

func nbWatch(t *testing.T, tb *testbed.Testbed, ignoreCordon map[string]bool) *nbWatcher {
	w := &nbWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			list, err := tb.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
			if err != nil {
				continue
			}
			var cordoned, down []string
			for _, n := range list.Items {
				ready := false
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady {
						ready = c.Status == corev1.ConditionTrue
					}
				}
				if n.Spec.Unschedulable && !ignoreCordon[n.Name] {
					cordoned = append(cordoned, n.Name)
					w.sawCordon.Store(n.Name, true)
				}
				if tn := tb.Node(n.Name); !ready || (tn != nil && !tn.Up()) {
					down = append(down, n.Name)
				}
			}
			w.samples.Add(1)
			if int32(len(cordoned)) > w.maxCordoned.Load() {
				w.maxCordoned.Store(int32(len(cordoned)))
			}
			if int32(len(down)) > w.maxDown.Load() {
				w.maxDown.Store(int32(len(down)))
			}
			if len(cordoned) > 1 || len(down) > 1 {
				w.mu.Lock()
				w.log = append(w.log, fmt.Sprintf("%s cordoned=%v down=%v", time.Now().Format("15:04:05.000"), cordoned, down))
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

func (w *nbWatcher) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *nbWatcher) check(t *testing.T) {
	t.Helper()
	w.Stop()
	t.Logf("watcher: %d samples, max cordoned %d, max down %d", w.samples.Load(), w.maxCordoned.Load(), w.maxDown.Load())
	if w.maxCordoned.Load() > 1 || w.maxDown.Load() > 1 {
		t.Fatalf("two nodes were cordoned or down at once:\n%s", strings.Join(w.log, "\n"))
	}
	if w.samples.Load() < 10 {
		t.Fatalf("watcher took only %d samples", w.samples.Load())
	}
}

func nbLease(t *testing.T, tb *testbed.Testbed) (holder string, annotations map[string]string) {
	t.Helper()
	l, err := tb.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), "nksrun-reboot", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reboot lease: %v", err)
	}
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	return holder, l.Annotations
}

const nokmem = "cgroup.memory=nokmem"

func TestCgroupNokmemRollout(t *testing.T) {
	cordoned := nbRocky
	cordoned.Unschedulable = true
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbUbuntu, cordoned}})
	centos, rocky, ubuntu, pre := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2], tb.Nodes[3]
	old := map[string]string{}
	grubBefore := map[string]string{}
	for _, n := range tb.Nodes {
		old[n.Name] = n.BootID()
		grubBefore[n.Name] = nbRead(t, n, "/etc/default/grub")
	}

	// Plan: exactly the 3.x/4.x nodes change; the 5.x node is skipped with the reason.
	p := nbPlan(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true")
	pt := nbPlanTargets(p)
	for _, n := range []*testbed.Node{centos, rocky, pre} {
		tp := pt[n.Name]
		if tp.Status != plans.StatusChanges || len(tp.Steps) != 3 || stepOf(tp, "diagnose").Action != "no-op" || stepOf(tp, "grub").Action != "change" || stepOf(tp, "reboot").Action != "change" {
			t.Fatalf("plan for %s: %+v", n.Name, tp)
		}
		if !strings.Contains(stepOf(tp, "grub").Diff, "+GRUB_CMDLINE_LINUX=") || !strings.Contains(stepOf(tp, "reboot").Summary, "would reboot node "+n.Name) {
			t.Fatalf("plan for %s lacks the diff or the reboot summary: %+v", n.Name, tp.Steps)
		}
	}
	if !strings.Contains(stepOf(pt[pre.Name], "reboot").Summary, "already cordoned") {
		t.Fatalf("plan does not say %s stays cordoned: %s", pre.Name, stepOf(pt[pre.Name], "reboot").Summary)
	}
	if tp := pt[ubuntu.Name]; tp.Status != plans.StatusSkipped || !strings.Contains(tp.Reason, "kernel 5") {
		t.Fatalf("plan for the 5.x node: %+v", tp)
	}
	// Plan changed nothing.
	for _, n := range tb.Nodes {
		if nbNode(t, tb, n.Name).Spec.Unschedulable != (n == pre) || n.BootID() != old[n.Name] || nbRead(t, n, "/etc/default/grub") != grubBefore[n.Name] {
			t.Fatalf("plan changed node %s", n.Name)
		}
	}

	w := nbWatch(t, tb, map[string]bool{pre.Name: true})
	code, rep := nbApply(t, tb, append([]string{"cgroup-nokmem.yaml", "--set", "preventive=true"}, nbFast...)...)
	w.check(t)
	if code != 0 {
		t.Fatalf("apply exit %d", code)
	}
	tr := nbTargets(rep)
	for _, n := range []*testbed.Node{centos, rocky, pre} {
		if n.BootID() == old[n.Name] || n.Reboots() != 1 {
			t.Errorf("%s: boot id %s (was %s), %d reboots", n.Name, n.BootID(), old[n.Name], n.Reboots())
		}
		if !strings.Contains(" "+n.Cmdline()+" ", " "+nokmem+" ") {
			t.Errorf("%s: /proc/cmdline lacks %s: %s", n.Name, nokmem, n.Cmdline())
		}
		if g := nbRead(t, n, "/etc/default/grub"); strings.Count(g, nokmem) != 1 {
			t.Errorf("%s: /etc/default/grub has %s %d times", n.Name, nokmem, strings.Count(g, nokmem))
		}
		if r := tr[n.Name]; r.Status != plans.StatusChanged || len(r.Verify) != 1 || !r.Verify[0].OK {
			t.Errorf("%s: report %+v", n.Name, r)
		}
		if _, ok := w.sawCordon.Load(n.Name); !ok && n != pre {
			t.Errorf("%s was never seen cordoned", n.Name)
		}
	}
	if rocky.GrubCfg != "/boot/grub2/grub.cfg" || !strings.Contains(nbRead(t, centos, "/boot/grub2/grub.cfg"), nokmem) {
		t.Errorf("centos grub.cfg not regenerated")
	}
	for _, n := range tb.Nodes {
		un := nbNode(t, tb, n.Name).Spec.Unschedulable
		if n == pre && !un {
			t.Errorf("%s was cordoned before the run but is uncordoned now", n.Name)
		}
		if n != pre && un {
			t.Errorf("%s is still cordoned", n.Name)
		}
	}
	if ubuntu.BootID() != old[ubuntu.Name] || nbRead(t, ubuntu, "/etc/default/grub") != grubBefore[ubuntu.Name] || tr[ubuntu.Name].Status != plans.StatusSkipped {
		t.Errorf("the 5.x node was touched: %+v", tr[ubuntu.Name])
	}
	if h, _ := nbLease(t, tb); h != "" {
		t.Errorf("reboot lease still held by %q", h)
	}

	// Second apply: nothing changes (grub edited once, no reboot).
	grubAfter := map[string]string{}
	boots := map[string]string{}
	for _, n := range tb.Nodes {
		grubAfter[n.Name], boots[n.Name] = nbRead(t, n, "/etc/default/grub"), n.BootID()
	}
	p2 := nbPlan(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true")
	if p2.HasChanges() {
		t.Fatalf("second plan has changes: %+v", p2.Counts())
	}
	code, rep = nbApply(t, tb, append([]string{"cgroup-nokmem.yaml", "--set", "preventive=true"}, nbFast...)...)
	if code != 0 {
		t.Fatalf("second apply exit %d", code)
	}
	for _, r := range rep.Targets {
		if r.Status == plans.StatusChanged {
			t.Errorf("second apply changed %s: %+v", r.Name, r)
		}
	}
	for _, n := range tb.Nodes {
		if nbRead(t, n, "/etc/default/grub") != grubAfter[n.Name] || n.BootID() != boots[n.Name] {
			t.Errorf("second apply touched %s", n.Name)
		}
	}
}

func TestCgroupNokmemNodeNeverComesBack(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbRocky}})
	old := map[string]string{}
	for _, n := range tb.Nodes {
		old[n.Name] = n.BootID()
		n.SetRebootBroken(true) // whichever node goes first never comes back
	}
	w := nbWatch(t, tb, nil)
	code, rep := nbApply(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true", "--set", "reboot_timeout=6", "--set", "ready_timeout=6", "--set", "lease_duration=4")
	w.check(t)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	var down *testbed.Node
	for _, n := range tb.Nodes {
		if n.BootID() != old[n.Name] || !n.Up() {
			if down != nil {
				t.Fatalf("two nodes were rebooted: %s and %s", down.Name, n.Name)
			}
			down = n
		}
	}
	if down == nil {
		t.Fatal("no node was rebooted")
	}
	tr := nbTargets(rep)
	if r := tr[down.Name]; r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "did not come back") || !strings.Contains(r.Reason, "stays cordoned") {
		t.Fatalf("report for the lost node %s: %+v", down.Name, r)
	}
	if !nbNode(t, tb, down.Name).Spec.Unschedulable {
		t.Errorf("%s did not stay cordoned", down.Name)
	}
	for _, n := range tb.Nodes {
		if n == down {
			continue
		}
		if nbNode(t, tb, n.Name).Spec.Unschedulable || n.BootID() != old[n.Name] || !n.Up() {
			t.Errorf("%s was touched after the rollout halted", n.Name)
		}
		if r := tr[n.Name]; r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "halted") || !strings.Contains(r.Reason, down.Name) {
			t.Errorf("report for %s does not say the rollout halted because of %s: %+v", n.Name, down.Name, r)
		}
	}
	// The lock stays held, with the reason, so no other process takes
	// another node down.
	h, ann := nbLease(t, tb)
	if h == "" || !strings.Contains(ann[reboot.AnnotationHalted], down.Name) {
		t.Errorf("lease after a halt: holder %q annotations %v", h, ann)
	}
	code, rep = nbApply(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true", "--set", "lock_timeout=2")
	if code != 1 {
		t.Fatalf("a second run with the rollout halted exited %d", code)
	}
	for _, r := range rep.Targets {
		if r.Status == plans.StatusChanged || (r.Name != down.Name && !strings.Contains(r.Reason, "halted")) {
			t.Errorf("second run: %+v", r)
		}
	}
	for _, n := range tb.Nodes {
		if n != down && (n.BootID() != old[n.Name] || nbNode(t, tb, n.Name).Spec.Unschedulable) {
			t.Errorf("second run touched %s", n.Name)
		}
	}
}

func TestCgroupNokmemTwoProcesses(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbRocky}})
	old := map[string]string{}
	for _, n := range tb.Nodes {
		old[n.Name] = n.BootID()
	}
	w := nbWatch(t, tb, nil)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = nbApply(t, tb, append([]string{"cgroup-nokmem.yaml", "--set", "preventive=true"}, nbFast...)...)
		}()
	}
	wg.Wait()
	w.check(t)
	for _, n := range tb.Nodes {
		if n.BootID() == old[n.Name] || !strings.Contains(n.Cmdline(), nokmem) {
			t.Errorf("%s not rebooted into %s", n.Name, nokmem)
		}
		if n.Reboots() != 1 {
			t.Errorf("%s rebooted %d times", n.Name, n.Reboots())
		}
		if nbNode(t, tb, n.Name).Spec.Unschedulable {
			t.Errorf("%s still cordoned", n.Name)
		}
		if g := nbRead(t, n, "/etc/default/grub"); strings.Count(g, nokmem) != 1 {
			t.Errorf("%s: /etc/default/grub has %s %d times", n.Name, nokmem, strings.Count(g, nokmem))
		}
	}
	// The safety property is the watcher's. A connection that died between
	// two commands (the other process rebooted the node) is redialled, but a
	// command that is running on a node when the other process reboots it
	// (its grub edit, say) fails, and that process exits 1 saying the node
	// was unreachable; a re-run converges. At least one process must succeed.
	t.Logf("exit codes %v", codes)
	if codes[0] != 0 && codes[1] != 0 {
		t.Errorf("both processes failed: exit codes %v", codes)
	}
	if h, _ := nbLease(t, tb); h != "" {
		t.Errorf("reboot lease still held by %q", h)
	}
}

func TestCgroupNokmemGrubFailureRestores(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky}})
	broken, ok := tb.Nodes[0], tb.Nodes[1]
	if err := broken.SetGrubBroken(true); err != nil {
		t.Fatal(err)
	}
	grub := nbRead(t, broken, "/etc/default/grub")
	cfg := nbRead(t, broken, broken.GrubCfg)
	boot := broken.BootID()
	code, rep := nbApply(t, tb, append([]string{"cgroup-nokmem.yaml", "--set", "preventive=true"}, nbFast...)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if got := nbRead(t, broken, "/etc/default/grub"); got != grub {
		t.Fatalf("/etc/default/grub not restored byte for byte:\n%q\nwant\n%q", got, grub)
	}
	if got := nbRead(t, broken, broken.GrubCfg); got != cfg {
		t.Errorf("grub.cfg changed")
	}
	if _, err := os.Stat(broken.Path(broken.GrubCfg + ".new")); err == nil {
		t.Errorf("grub.cfg.new left behind")
	}
	if left, _ := filepath.Glob(broken.Path("/etc/default/grub.nksrun*")); len(left) != 0 {
		t.Errorf("files left in /etc/default: %v", left)
	}
	if broken.BootID() != boot || broken.Reboots() != 0 || nbNode(t, tb, broken.Name).Spec.Unschedulable {
		t.Errorf("%s was rebooted or cordoned", broken.Name)
	}
	r := nbTargets(rep)[broken.Name]
	if r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "restored") {
		t.Errorf("report for %s: %+v", broken.Name, r)
	}
	for _, s := range r.Steps {
		if s.ID == "reboot" {
			t.Errorf("reboot step ran on %s: %+v", broken.Name, s)
		}
	}
	// The healthy node is rebooted as usual.
	if ok.Reboots() != 1 || !strings.Contains(ok.Cmdline(), nokmem) || nbTargets(rep)[ok.Name].Status != plans.StatusChanged {
		t.Errorf("%s: %d reboots, cmdline %q, %+v", ok.Name, ok.Reboots(), ok.Cmdline(), nbTargets(rep)[ok.Name])
	}
}

func TestCgroupNokmemPDBBlocksDrain(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbRocky}})
	n := tb.Nodes[0]
	ctx := context.Background()
	ns := "default"
	ctrl := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc12", Namespace: ns, Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f", UID: "4a1c2b9e-0000-4000-8000-000000000001", Controller: &ctrl}}},
		Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
	}
	created, err := tb.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Running and Ready, as a kubelet would report (Pending pods ignore PDBs).
	created.Status.Phase = corev1.PodRunning
	created.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := tb.Client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := intstr.FromInt32(0)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &zero, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}
	pc, err := tb.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The status the disruption controller would write: no disruption allowed.
	pc.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pc.Generation, DisruptionsAllowed: 0, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}
	if _, err := tb.Client.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := nbPlan(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true")
	if s := stepOf(nbPlanTargets(p)[n.Name], "reboot").Summary; !strings.Contains(s, "drain 1 pod(s) (default/web-abc12)") {
		t.Fatalf("plan does not name the pod to drain: %s", s)
	}
	boot := n.BootID()
	w := nbWatch(t, tb, nil)
	start := time.Now()
	code, rep := nbApply(t, tb, "cgroup-nokmem.yaml", "--set", "preventive=true", "--set", "drain_timeout=4", "--set", "reboot_timeout=10", "--set", "lease_duration=6")
	took := time.Since(start)
	w.Stop()
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if took < 4*time.Second {
		t.Errorf("apply took %s: the drain did not wait for its timeout", took)
	}
	if _, ok := w.sawCordon.Load(n.Name); !ok {
		t.Errorf("node never seen cordoned during the drain")
	}
	r := nbTargets(rep)[n.Name]
	if r.Status != plans.StatusFailed || !strings.Contains(r.Reason, "drain failed") || !strings.Contains(r.Reason, "default/web-abc12") ||
		!strings.Contains(r.Reason, "disruption budget") || !strings.Contains(r.Reason, "uncordoned") {
		t.Fatalf("report: %+v", r)
	}
	if nbNode(t, tb, n.Name).Spec.Unschedulable {
		t.Errorf("node left cordoned after the failed drain")
	}
	if _, ok := nbNode(t, tb, n.Name).Annotations[reboot.AnnotationCordonedBy]; ok {
		t.Errorf("cordoned-by annotation left on the node")
	}
	if h, _ := nbLease(t, tb); h != "" {
		t.Errorf("reboot lease still held by %q", h)
	}
	if n.BootID() != boot || n.Reboots() != 0 {
		t.Errorf("node rebooted although the drain failed")
	}
	if _, err := tb.Client.CoreV1().Pods(ns).Get(ctx, "web-abc12", metav1.GetOptions{}); err != nil {
		t.Errorf("the PDB-protected pod is gone: %v", err)
	}
}

// TestCgroupNokmemSerialTwo: with serial=2 at most two nodes are cordoned or
// down at any moment, and every node is rebooted exactly once.
func TestCgroupNokmemSerialTwo(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{nbCentOS, nbRocky, nbCentOS, nbRocky}})
	w := nbWatch(t, tb, nil)
	code, rep := nbApply(t, tb, append([]string{"cgroup-nokmem.yaml", "--set", "preventive=true", "--set", "serial=2"}, nbFast...)...)
	w.Stop()
	t.Logf("watcher: %d samples, max cordoned %d, max down %d", w.samples.Load(), w.maxCordoned.Load(), w.maxDown.Load())
	if code != 0 {
		t.Fatalf("apply exit %d: %+v", code, rep)
	}
	if w.samples.Load() < 10 {
		t.Fatalf("watcher took only %d samples", w.samples.Load())
	}
	if w.maxCordoned.Load() > 2 || w.maxDown.Load() > 2 {
		t.Errorf("serial=2 exceeded: max cordoned %d, max down %d", w.maxCordoned.Load(), w.maxDown.Load())
	}
	if w.maxCordoned.Load() < 1 {
		t.Errorf("the watcher never saw a cordoned node")
	}
	for _, n := range tb.Nodes {
		if n.Reboots() != 1 || !strings.Contains(n.Cmdline(), nokmem) {
			t.Errorf("%s: %d reboots, cmdline %q", n.Name, n.Reboots(), n.Cmdline())
		}
		if nbNode(t, tb, n.Name).Spec.Unschedulable {
			t.Errorf("%s still cordoned", n.Name)
		}
	}
	if h, _ := nbLease(t, tb); h != "" {
		t.Errorf("reboot lease still held by %q", h)
	}
}

package reboot_test

// End-to-end tests of the reboot module on the testbed (a real API server,
// real sshd nodes, the testbed's reboot stand-in), driven through the CLI
// in-process as an operator would run it: interruption at each phase of a
// rolling reboot, ownership of cordons, a dead holder's slot, PDBs, emptyDir.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/modules/reboot"
	"nksrun/testdata/testbed"
)

const rollingReboot = "testdata/rolling-reboot.yaml"

var (
	rocky  = testbed.NodeSpec{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Kernel: "4.18.0-553.el8_10.x86_64", Runtime: "containerd://1.7.13"}
	centos = testbed.NodeSpec{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7"}
)

// syncBuf is a bytes.Buffer the CLI writes to while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run is one `nksrun apply` running in-process; cancel is Ctrl-C.
type run struct {
	cancel         context.CancelFunc
	done           chan struct{}
	code           int
	stdout, stderr syncBuf
	args           []string
}

func startApply(t *testing.T, tb *testbed.Testbed, args ...string) *run {
	t.Helper()
	full := []string{"apply", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts,
		"--auto-approve", "--lock-file", filepath.Join(t.TempDir(), "apply.lock"), "--format", "json", "-v", rollingReboot}
	full = append(full, args...)
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, done: make(chan struct{}), args: args}
	go func() {
		defer close(r.done)
		r.code = cli.Run(ctx, full, strings.NewReader(""), &r.stdout, &r.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// wait waits (bounded) for the run to end and returns its exit code.
func (r *run) wait(t *testing.T, bound time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(bound):
		t.Fatalf("apply %v still running after %s; stderr:\n%s", r.args, bound, tail(r.stderr.String()))
	}
	t.Logf("apply %v → exit %d\nstderr:\n%s", r.args, r.code, tail(r.stderr.String()))
	return r.code
}

func (r *run) report(t *testing.T) *plans.Report {
	t.Helper()
	var rep plans.Report
	if err := json.Unmarshal([]byte(r.stdout.String()), &rep); err != nil {
		t.Fatalf("apply JSON (exit %d): %v\n%s", r.code, err, tail(r.stdout.String()))
	}
	return &rep
}

func tail(s string) string {
	if len(s) > 5000 {
		return "…" + s[len(s)-5000:]
	}
	return s
}

// waitFor polls cond (every 20 ms) until it holds, bounded.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not seen within %s: %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slot reads the reboot Lease: holder, phase and node ("" when free or absent).
func slot(tb *testbed.Testbed) (holder, phase, node string) {
	l, err := tb.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), "nksrun-reboot", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return "", "", ""
	}
	return *l.Spec.HolderIdentity, l.Annotations[reboot.AnnotationPhase], l.Annotations[reboot.AnnotationNode]
}

func getNode(t *testing.T, tb *testbed.Testbed, name string) *corev1.Node {
	t.Helper()
	n, err := tb.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// assertClean: no slot held, no node cordoned (except keep) and no node
// carrying nksrun's marks; `Status` agrees and has no findings.
func assertClean(t *testing.T, tb *testbed.Testbed, keep map[string]bool) {
	t.Helper()
	if h, _, _ := slot(tb); h != "" {
		t.Errorf("reboot slot still held by %q", h)
	}
	for _, n := range tb.Nodes {
		obj := getNode(t, tb, n.Name)
		if obj.Spec.Unschedulable != keep[n.Name] {
			t.Errorf("%s: unschedulable=%v, want %v", n.Name, obj.Spec.Unschedulable, keep[n.Name])
		}
		for _, k := range []string{reboot.AnnotationCordonedBy, reboot.AnnotationCordonedAt, reboot.AnnotationRebootSentAt, reboot.AnnotationBootIDBefore} {
			if v, ok := obj.Annotations[k]; ok {
				t.Errorf("%s still carries %s=%q", n.Name, k, v)
			}
		}
	}
	st, err := reboot.Status(context.Background(), &module.Cluster{Clientset: tb.Client})
	if err != nil || !st.Empty() {
		t.Errorf("status after the run: %+v %v", st, err)
	}
	if f, err := reboot.Findings(context.Background(), &module.Cluster{Clientset: tb.Client}); err != nil || len(f) != 0 {
		t.Errorf("findings after the run: %+v %v", f, err)
	}
}

func otherNode(tb *testbed.Testbed, name string) *testbed.Node {
	for _, n := range tb.Nodes {
		if n.Name != name {
			return n
		}
	}
	return nil
}

// blockingPDB puts a Running pod on node with a PodDisruptionBudget that
// allows no disruption (the status the disruption controller would write),
// so a drain of node keeps getting 429.
func blockingPDB(t *testing.T, tb *testbed.Testbed, node, name string) {
	t.Helper()
	ctx := context.Background()
	ctrl := true
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-rs", UID: types.UID("4a1c2b9e-0000-4000-8000-0000000000" + fmt.Sprint(len(name))), Controller: &ctrl}}},
		// No kubelet here: once evicted, the pod stays terminating for its grace period.
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "nginx:1.27"}}, TerminationGracePeriodSeconds: &grace},
	}
	created, err := tb.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := tb.Client.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := intstr.FromInt32(0)
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name + "-pdb", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &zero, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
	pc, err := tb.Client.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pc.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pc.Generation, DisruptionsAllowed: 0, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}
	if _, err := tb.Client.PolicyV1().PodDisruptionBudgets("default").UpdateStatus(ctx, pc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deletePDBPod(t *testing.T, tb *testbed.Testbed, name string) {
	t.Helper()
	ctx := context.Background()
	zero := int64(0)
	_ = tb.Client.PolicyV1().PodDisruptionBudgets("default").Delete(ctx, name+"-pdb", metav1.DeleteOptions{})
	_ = tb.Client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
}

// TestInterruptAtEachPhase cancels a two-node rolling reboot (Ctrl-C, as
// the CLI sees it) in each phase of the first node. Every time: the run
// ends within a bound, exits non-zero saying "interrupted", the second node
// is never started, and the cluster is left clean (no slot held, nothing
// cordoned, no nksrun marks). A node whose reboot command went out is seen
// through: back with a new boot id, Ready, uncordoned.
func TestInterruptAtEachPhase(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky, centos}, RebootDelay: 2 * time.Second})
	ctx := context.Background()
	bound := 2 * time.Minute

	check := func(t *testing.T, r *run, first *testbed.Node, rebootsBefore map[string]int, firstRebooted bool) {
		t.Helper()
		if code := r.wait(t, bound); code == 0 {
			t.Errorf("exit 0 after an interruption")
		}
		if !strings.Contains(r.stderr.String(), "interrupted") {
			t.Errorf("stderr does not say interrupted")
		}
		if strings.Contains(r.stdout.String()+r.stderr.String(), "did not come back") {
			t.Errorf("the interruption was reported as a node that did not come back")
		}
		rep := r.report(t)
		for _, tr := range rep.Targets {
			if tr.Name == first.Name && !strings.Contains(tr.Reason, "interrupted") {
				t.Errorf("report for %s does not say interrupted: %+v", tr.Name, tr)
			}
		}
		second := otherNode(tb, first.Name)
		if second.Reboots() != rebootsBefore[second.Name] {
			t.Errorf("%s was rebooted after the interruption", second.Name)
		}
		want := rebootsBefore[first.Name]
		if firstRebooted {
			want++
		}
		if first.Reboots() != want {
			t.Errorf("%s: %d reboots, want %d", first.Name, first.Reboots(), want)
		}
		if ready, _ := first.Ready(ctx); !ready || !first.Up() {
			t.Errorf("%s not back: up %v, Ready %v", first.Name, first.Up(), ready)
		}
		assertClean(t, tb, nil)
	}
	reboots := func() map[string]int {
		m := map[string]int{}
		for _, n := range tb.Nodes {
			m[n.Name] = n.Reboots()
		}
		return m
	}

	t.Run("waiting for a slot", func(t *testing.T) {
		// Another live nksrun holds the slot; Ctrl-C while waiting for it
		// changes nothing and leaves that holder's slot alone.
		stop := holdSlot(t, tb, "nksrun@elsewhere/77/live")
		before := reboots()
		r := startApply(t, tb)
		waitFor(t, bound, "waiting for a reboot slot", func() bool { return strings.Contains(r.stderr.String(), "waiting for a reboot slot") })
		r.cancel()
		if code := r.wait(t, bound); code == 0 || !strings.Contains(r.stderr.String(), "interrupted") {
			t.Errorf("exit %d; stderr lacks interrupted", code)
		}
		if h, _, _ := slot(tb); h != "nksrun@elsewhere/77/live" {
			t.Errorf("the live holder's slot was taken or released: %q", h)
		}
		stop()
		for _, n := range tb.Nodes {
			if n.Reboots() != before[n.Name] || getNode(t, tb, n.Name).Spec.Unschedulable {
				t.Errorf("%s touched", n.Name)
			}
		}
		assertClean(t, tb, nil)
	})

	t.Run("slot taken, not yet cordoned", func(t *testing.T) {
		// Every SSH command is slow, so the run sits between taking the
		// slot and cordoning (reading the boot id) when Ctrl-C comes.
		for _, n := range tb.Nodes {
			if err := n.SetSlow(1500 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for _, n := range tb.Nodes {
				_ = n.SetSlow(0)
			}
		}()
		before := reboots()
		r := startApply(t, tb)
		var first string
		waitFor(t, bound, "the slot taken", func() bool {
			h, phase, node := slot(tb)
			first = node
			return h != "" && phase == reboot.PhaseCordoning
		})
		r.cancel()
		check(t, r, tb.Node(first), before, false)
	})

	t.Run("draining", func(t *testing.T) {
		before := reboots()
		for _, n := range tb.Nodes {
			blockingPDB(t, tb, n.Name, "blocked-"+n.Name[len(n.Name)-1:])
		}
		r := startApply(t, tb)
		var first string
		waitFor(t, bound, "a node cordoned and draining", func() bool {
			_, phase, node := slot(tb)
			first = node
			return phase == reboot.PhaseDraining && getNode(t, tb, node).Spec.Unschedulable
		})
		r.cancel()
		check(t, r, tb.Node(first), before, false)
		for _, n := range tb.Nodes {
			name := "blocked-" + n.Name[len(n.Name)-1:]
			if _, err := tb.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("PDB-protected pod %s: %v", name, err)
			}
			deletePDBPod(t, tb, name)
		}
	})

	t.Run("reboot sent", func(t *testing.T) {
		before := reboots()
		r := startApply(t, tb)
		first := waitNodeDown(t, tb, bound)
		r.cancel()
		check(t, r, first, before, true)
	})

	t.Run("reboot sent, node by node (--forks 1)", func(t *testing.T) {
		// More nodes than --forks: apply plans and applies one node at a
		// time. Ctrl-C while the first reboots sees it through; the
		// other is not even planned.
		before := reboots()
		r := startApply(t, tb, "--forks", "1")
		first := waitNodeDown(t, tb, bound)
		r.cancel()
		check(t, r, first, before, true)
		second := otherNode(tb, first.Name)
		seen := false
		for _, tr := range r.report(t).Targets {
			if tr.Name != second.Name {
				continue
			}
			seen = true
			if tr.Status != plans.StatusNotRun || tr.Reason != "not planned: interrupted" {
				t.Errorf("%s: %s (%s), want not-run: not planned: interrupted", tr.Name, tr.Status, tr.Reason)
			}
		}
		if !seen {
			t.Errorf("the report has no result for %s", second.Name)
		}
	})

	t.Run("waiting for Ready", func(t *testing.T) {
		// The reboot stand-in keeps the node down until Start; it then
		// boots anew and stays NotReady until the test plays kubelet.
		for _, n := range tb.Nodes {
			n.SetRebootBroken(true)
		}
		before := reboots()
		r := startApply(t, tb)
		first := waitNodeDown(t, tb, bound)
		old := getNode(t, tb, first.Name).Status.NodeInfo.BootID
		// Start fails while the stand-in is still taking the node down.
		waitFor(t, bound, "the node startable", func() bool { return first.Start() == nil })
		for _, n := range tb.Nodes {
			n.SetRebootBroken(false)
		}
		if first.BootID() == old {
			t.Fatalf("%s did not boot anew", first.Name)
		}
		waitFor(t, bound, "the run waiting for Ready", func() bool {
			_, phase, _ := slot(tb)
			return phase == reboot.PhaseWaitingReady
		})
		r.cancel()
		// Still NotReady: the run must be waiting, not done.
		select {
		case <-r.done:
			t.Fatalf("the run ended before the node was Ready: %s", tail(r.stderr.String()))
		case <-time.After(500 * time.Millisecond):
		}
		if err := first.SetReady(ctx, true); err != nil {
			t.Fatal(err)
		}
		// A broken reboot and Start count no stand-in reboot; the new boot id does.
		check(t, r, first, before, false)
		if getNode(t, tb, first.Name).Status.NodeInfo.BootID == old {
			t.Errorf("%s: boot id unchanged", first.Name)
		}
	})
}

// waitNodeDown waits (bounded) for a node of tb to go down and returns it.
func waitNodeDown(t *testing.T, tb *testbed.Testbed, bound time.Duration) *testbed.Node {
	t.Helper()
	var down *testbed.Node
	waitFor(t, bound, "a node going down", func() bool {
		for _, n := range tb.Nodes {
			if !n.Up() {
				down = n
				return true
			}
		}
		return false
	})
	return down
}

// holdSlot makes a live holder of the reboot slot (another nksrun process):
// it renews the Lease until stop, which releases it.
func holdSlot(t *testing.T, tb *testbed.Testbed, holder string) (stop func()) {
	t.Helper()
	ctx := context.Background()
	c := tb.Client.CoordinationV1().Leases("kube-system")
	renew := func() error {
		l, err := c.Get(ctx, "nksrun-reboot", metav1.GetOptions{})
		now := metav1.NewMicroTime(time.Now())
		secs := int32(3)
		if err != nil {
			l = &coordinationv1.Lease{}
			l.Name, l.Namespace, l.Labels = "nksrun-reboot", "kube-system", map[string]string{"app.kubernetes.io/managed-by": "nksrun", reboot.LabelLock: "reboot"}
			l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = &holder, &secs, &now, &now
			_, err = c.Create(ctx, l, metav1.CreateOptions{})
			return err
		}
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &secs, &now
		_, err = c.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	if err := renew(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
				_ = renew()
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		l, err := c.Get(ctx, "nksrun-reboot", metav1.GetOptions{})
		if err == nil {
			l.Spec.HolderIdentity = nil
			_, _ = c.Update(ctx, l, metav1.UpdateOptions{})
		}
	}
}

// TestOwnershipAdminCordonAndStaleAnnotation: a node an administrator
// cordoned over a stale nksrun annotation keeps its cordon (the annotation
// goes); a schedulable node's stale annotation is removed and the node is
// rebooted, cordoned and uncordoned as usual.
func TestOwnershipAdminCordonAndStaleAnnotation(t *testing.T) {
	admin := rocky
	admin.Unschedulable = true // cordoned by the administrator (the testbed's client is its field manager)
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{admin, centos}})
	ctx := context.Background()
	adminNode, free := tb.Nodes[0], tb.Nodes[1]
	stale := fmt.Sprintf(`{"metadata":{"annotations":{%q:"nksrun@old/1/halted",%q:"2026-01-01T00:00:00Z"}}}`, reboot.AnnotationCordonedBy, reboot.AnnotationCordonedAt)
	for _, n := range tb.Nodes {
		if _, err := tb.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(stale), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := reboot.Status(ctx, &module.Cluster{Clientset: tb.Client})
	if err != nil || len(st.Stale) != 2 || len(st.Cordoned) != 0 {
		t.Fatalf("status before: %+v %v", st, err)
	}
	r := startApply(t, tb)
	if code := r.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, n := range tb.Nodes {
		if n.Reboots() != 1 {
			t.Errorf("%s: %d reboots", n.Name, n.Reboots())
		}
	}
	if !getNode(t, tb, adminNode.Name).Spec.Unschedulable {
		t.Errorf("the administrator's cordon on %s was lifted", adminNode.Name)
	}
	if getNode(t, tb, free.Name).Spec.Unschedulable {
		t.Errorf("%s left cordoned", free.Name)
	}
	assertClean(t, tb, map[string]bool{adminNode.Name: true})
}

// TestDeadHolderSlotTakenOver: a run killed (kill -9) while rebooting a
// node left the slot held and the node cordoned. The next run takes the
// slot over once its renewal lapsed and finishes the rollout: the node the
// dead run left is seen through (Ready: uncordoned) whether the next run
// works on that node itself or on another one first.
func TestDeadHolderSlotTakenOver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   bool // the next run works on the other node only
		reboots []int
	}{
		{"whole rollout", false, []int{1, 1}},
		{"another node", true, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky, centos}})
			left, other := tb.Nodes[0], tb.Nodes[1]
			dead := leaveDeadRun(t, tb, left.Name)
			var args []string
			if tc.limit {
				args = []string{"--limit", other.Name}
			}
			r := startApply(t, tb, args...)
			if code := r.wait(t, 3*time.Minute); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if !strings.Contains(r.stderr.String(), "over from "+dead) {
				t.Errorf("the log does not say the slot was taken over from %s", dead)
			}
			for i, n := range tb.Nodes {
				if n.Reboots() != tc.reboots[i] {
					t.Errorf("%s: %d reboots, want %d", n.Name, n.Reboots(), tc.reboots[i])
				}
			}
			assertClean(t, tb, nil)
		})
	}
}

// leaveDeadRun makes what a run killed while rebooting node leaves: its
// Lease (renewed 5 minutes ago, 6 s duration) naming the node, and its
// cordon on the node, made with nksrun's field manager, reboot sent from an
// older boot. It returns the dead holder's identity.
func leaveDeadRun(t *testing.T, tb *testbed.Testbed, node string) string {
	t.Helper()
	ctx := context.Background()
	dead := "nksrun@crashed/999999/deadbeef"
	then := metav1.NewMicroTime(time.Now().Add(-5 * time.Minute))
	secs := int32(6)
	l := &coordinationv1.Lease{}
	l.Name, l.Namespace = "nksrun-reboot", "kube-system"
	l.Labels = map[string]string{"app.kubernetes.io/managed-by": "nksrun", reboot.LabelLock: "reboot"}
	l.Annotations = map[string]string{reboot.AnnotationNode: node, reboot.AnnotationPhase: reboot.PhaseRebooting, reboot.AnnotationHolderPID: "999999"}
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = &dead, &secs, &then, &then
	if _, err := tb.Client.CoordinationV1().Leases("kube-system").Create(ctx, l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cordon := fmt.Sprintf(`{"spec":{"unschedulable":true},"metadata":{"annotations":{%q:%q,%q:"2026-12-01T00:00:00Z",%q:"2026-12-01T00:00:05Z",%q:"00000000-0000-0000-0000-000000000000"}}}`,
		reboot.AnnotationCordonedBy, dead, reboot.AnnotationCordonedAt, reboot.AnnotationRebootSentAt, reboot.AnnotationBootIDBefore)
	if _, err := tb.Client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(cordon), metav1.PatchOptions{FieldManager: reboot.FieldManager}); err != nil {
		t.Fatal(err)
	}
	c := &module.Cluster{Clientset: tb.Client}
	st, err := reboot.Status(ctx, c)
	if err != nil || len(st.Slots) != 1 || !st.Slots[0].Expired || st.Slots[0].Holder != dead || len(st.Cordoned) != 1 || st.Cordoned[0].HolderAlive {
		t.Fatalf("status of what the dead run left: %+v %v", st, err)
	}
	if f, err := reboot.Findings(ctx, c); err != nil || len(f) != 2 {
		t.Fatalf("findings (want the slot and the cordon): %+v %v", f, err)
	}
	return dead
}

// TestDrainRefusals: a PDB-blocked drain names the budget and the pod and
// leaves the node uncordoned and not rebooted; an emptyDir pod is listed
// by the plan and refused without delete_emptydir_data, evicted with it.
func TestDrainRefusals(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky}})
	ctx := context.Background()
	n := tb.Nodes[0]
	blockingPDB(t, tb, n.Name, "web")
	r := startApply(t, tb, "--set", "drain_timeout=3")
	if code := r.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("exit 0 with a PDB-blocked drain")
	}
	tr := r.report(t).Targets[0]
	for _, want := range []string{"drain failed", "PodDisruptionBudget default/web-pdb blocks pod(s) default/web", "disruption budget", "node uncordoned", "not rebooted"} {
		if !strings.Contains(tr.Reason, want) {
			t.Errorf("report lacks %q: %s", want, tr.Reason)
		}
	}
	if strings.Contains(tr.Reason, "rate limiter") {
		t.Errorf("report blames the rate limiter: %s", tr.Reason)
	}
	if n.Reboots() != 0 {
		t.Errorf("rebooted although the drain failed")
	}
	assertClean(t, tb, nil)
	deletePDBPod(t, tb, "web")

	ctrl := true
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cache-0", Namespace: "default", OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "cache", UID: "5b2d3c0f-0000-4000-8000-000000000002", Controller: &ctrl}}},
		// No kubelet here: the evicted pod stays terminating for its grace period.
		Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "redis:7"}}, TerminationGracePeriodSeconds: &grace,
			Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
	}
	created, err := tb.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Phase = corev1.PodRunning
	if _, err := tb.Client.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := cli.Run(ctx, []string{"plan", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts, rollingReboot}, strings.NewReader(""), &out, &errb)
	t.Logf("plan → %d\n%s\n%s", code, out.String(), errb.String())
	for _, want := range []string{"REFUSED: emptyDir data in default/cache-0", "will refuse 1 pod(s) with emptyDir data", "delete_emptydir_data: true"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	r = startApply(t, tb)
	if code := r.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("exit 0: an emptyDir pod was evicted without the opt-in")
	}
	if tr := r.report(t).Targets[0]; !strings.Contains(tr.Reason, "emptyDir") || !strings.Contains(tr.Reason, "default/cache-0") || !strings.Contains(tr.Reason, "not cordoned") {
		t.Errorf("report: %s", tr.Reason)
	}
	if _, err := tb.Client.CoreV1().Pods("default").Get(ctx, "cache-0", metav1.GetOptions{}); err != nil {
		t.Errorf("the emptyDir pod was evicted: %v", err)
	}
	if n.Reboots() != 0 {
		t.Errorf("rebooted although the drain was refused")
	}
	assertClean(t, tb, nil)
	r = startApply(t, tb, "--set", "delete_emptydir_data=true")
	if code := r.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("exit %d with the opt-in", code)
	}
	if n.Reboots() != 1 {
		t.Errorf("%d reboots with the opt-in", n.Reboots())
	}
	assertClean(t, tb, nil)
}

// TestLostSlotMeansNoReboot: the slot is checked right before the reboot
// command. Another process took it while the drain waited: the node is not
// rebooted, it is uncordoned, and the report says why.
func TestLostSlotMeansNoReboot(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky}})
	ctx := context.Background()
	n := tb.Nodes[0]
	blockingPDB(t, tb, n.Name, "web")
	r := startApply(t, tb, "--set", "drain_timeout=120")
	waitFor(t, time.Minute, "the drain blocked", func() bool { return strings.Contains(r.stderr.String(), "eviction of default/web refused") })
	// The thief writes the Lease as its own (as after a takeover), then the
	// budget goes away and the drain completes.
	thief := "nksrun@thief/1/0000"
	c := tb.Client.CoordinationV1().Leases("kube-system")
	l, err := c.Get(ctx, "nksrun-reboot", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.RenewTime = &thief, &now
	if _, err := c.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Client.PolicyV1().PodDisruptionBudgets("default").Delete(ctx, "web-pdb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("exit 0 after losing the slot")
	}
	tr := r.report(t).Targets[0]
	for _, want := range []string{"lost the reboot slot", thief, "not rebooted", "node uncordoned"} {
		if !strings.Contains(tr.Reason, want) {
			t.Errorf("report lacks %q: %s", want, tr.Reason)
		}
	}
	if n.Reboots() != 0 || !n.Up() {
		t.Errorf("rebooted without the slot")
	}
	if obj := getNode(t, tb, n.Name); obj.Spec.Unschedulable || obj.Annotations[reboot.AnnotationCordonedBy] != "" {
		t.Errorf("left cordoned: %v %v", obj.Spec.Unschedulable, obj.Annotations)
	}
	if h, _, _ := slot(tb); h != thief {
		t.Errorf("the thief's slot was released or taken back: %q", h)
	}
}

// TestHaltStatusUnlock: a node that never comes back halts the rollout
// with the slot held; the next run fails at once (no wait for lock_timeout)
// saying so; Status shows the halted slot, the cordon and the node not back;
// Unlock (no force: the halted run has exited) releases the slot and
// uncordons the node.
func TestHaltStatusUnlock(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky, centos}})
	ctx := context.Background()
	for _, n := range tb.Nodes {
		n.SetRebootBroken(true) // whichever goes first never comes back
	}
	r := startApply(t, tb, "--set", "reboot_timeout=4")
	if code := r.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("exit 0 with a node that never came back")
	}
	if strings.Contains(r.stderr.String(), "interrupted") {
		t.Errorf("a real failure reported as an interruption")
	}
	var down *testbed.Node
	for _, n := range tb.Nodes {
		n.SetRebootBroken(false)
		if !n.Up() {
			down = n
		}
	}
	if down == nil {
		t.Fatal("no node went down")
	}
	c := &module.Cluster{Clientset: tb.Client}
	st, err := reboot.Status(ctx, c)
	if err != nil || len(st.Slots) != 1 || st.Slots[0].Halted == "" || st.Slots[0].Node != down.Name || len(st.Cordoned) != 1 || len(st.Rebooting) != 1 || st.Rebooting[0].Name != down.Name {
		t.Fatalf("status after a halt: %+v %v", st, err)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	t.Logf("status:\n%s", b)
	f, err := reboot.Findings(ctx, c)
	if err != nil || len(f) != 3 || f[0].Severity != "critical" {
		t.Fatalf("findings: %+v %v", f, err)
	}
	// The next run (lock_timeout an hour) does not wait for a halted slot.
	r = startApply(t, tb, "--set", "lock_timeout=3600")
	if code := r.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("exit 0 with the rollout halted")
	}
	for _, tr := range r.report(t).Targets {
		if tr.Name != down.Name && (!strings.Contains(tr.Reason, "halted") || !strings.Contains(tr.Reason, "nksrun unlock")) {
			t.Errorf("second run, %s: %s", tr.Name, tr.Reason)
		}
	}
	if err := down.Start(); err != nil {
		t.Fatal(err)
	}
	if err := down.SetReady(ctx, true); err != nil {
		t.Fatal(err)
	}
	res, err := reboot.Unlock(ctx, c, false)
	if err != nil || len(res.Released) != 1 || len(res.Uncordoned) != 1 || len(res.Kept) != 0 {
		t.Fatalf("unlock: %+v %v", res, err)
	}
	assertClean(t, tb, nil)
	// Nothing left: unlock again does nothing.
	if res, err := reboot.Unlock(ctx, c, false); err != nil || len(res.Released)+len(res.Uncordoned)+len(res.Cleaned)+len(res.Kept) != 0 {
		t.Fatalf("second unlock: %+v %v", res, err)
	}
}

// TestKilledMidRebootNextRunTakesOver: `nksrun apply` is killed (SIGKILL)
// while a node is rebooting. Its slot stays held until its renewal lapses
// (lease_duration 6 s) and the node stays cordoned; `Status` shows both.
// The next run waits for the slot, takes it over, finishes the node the
// dead run left (Ready: uncordoned) and reboots its own node.
func TestKilledMidRebootNextRunTakesOver(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky, centos}, RebootDelay: 2 * time.Second})
	ctx := context.Background()
	bin := testbed.NksrunBinary(t)
	first, second := tb.Nodes[0], tb.Nodes[1]
	var stderr syncBuf
	cmd := exec.Command(bin, "apply", "--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts,
		"--auto-approve", "--lock-file", filepath.Join(t.TempDir(), "apply.lock"), rollingReboot, "--limit", first.Name)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	waitFor(t, 2*time.Minute, "the node going down", func() bool { return !first.Up() })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	t.Logf("killed nksrun; its stderr:\n%s", tail(stderr.String()))
	dead, _, node := slot(tb)
	if dead == "" || node != first.Name {
		t.Fatalf("the killed run's slot: holder %q node %q", dead, node)
	}
	st, err := reboot.Status(ctx, &module.Cluster{Clientset: tb.Client})
	if err != nil || len(st.Slots) != 1 || len(st.Cordoned) != 1 || st.Cordoned[0].Name != first.Name || st.Cordoned[0].Holder != dead {
		t.Fatalf("status after the kill: %+v %v", st, err)
	}
	r := startApply(t, tb, "--limit", second.Name)
	if code := r.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("next run: exit %d", code)
	}
	for _, want := range []string{"over from " + dead, "finishing node " + first.Name} {
		if !strings.Contains(r.stderr.String(), want) {
			t.Errorf("the next run's log lacks %q", want)
		}
	}
	if first.Reboots() != 1 || second.Reboots() != 1 {
		t.Errorf("reboots: %s %d, %s %d; want 1 each", first.Name, first.Reboots(), second.Name, second.Reboots())
	}
	assertClean(t, tb, nil)
}

// TestTimeoutShorterThanRollout: `--timeout` ends the run the way Ctrl-C
// does. The rollout needs at least three reboot delays (9 s); the run has
// 4 s: it exits non-zero saying interrupted, no node is rebooted twice, at
// least one is never started, and the cluster is clean.
func TestTimeoutShorterThanRollout(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{rocky, centos, rocky}, RebootDelay: 3 * time.Second})
	r := startApply(t, tb, "--timeout", "4s")
	if code := r.wait(t, 3*time.Minute); code == 0 {
		t.Fatal("exit 0 although the timeout ended the run")
	}
	if !strings.Contains(r.stderr.String(), "interrupted") {
		t.Errorf("stderr does not say interrupted")
	}
	untouched := 0
	for _, n := range tb.Nodes {
		switch n.Reboots() {
		case 0:
			untouched++
		case 1:
		default:
			t.Errorf("%s rebooted %d times", n.Name, n.Reboots())
		}
		if !n.Up() {
			t.Errorf("%s left down", n.Name)
		}
	}
	if untouched == 0 {
		t.Errorf("every node was rebooted within a 4 s run")
	}
	assertClean(t, tb, nil)
}

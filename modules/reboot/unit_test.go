package reboot

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"nksrun/engine/module"
)

// A slot whose renewTime + duration lapsed (its holder was killed) is taken
// over at once, and the taker learns whom it took it from and which node
// that holder was working on; a live slot is not.
func TestLeaseTakeoverAfterRenewalLapsed(t *testing.T) {
	ctx := context.Background()
	old := metav1.NewMicroTime(time.Now().Add(-2 * time.Minute))
	secs := int32(60)
	dead := "nksrun@gone/4242/dead"
	le := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "nksrun-reboot", Namespace: "kube-system", Labels: map[string]string{"app.kubernetes.io/managed-by": "nksrun"},
			Annotations: map[string]string{AnnotationNode: "node-7", AnnotationPhase: PhaseRebooting, AnnotationHolderPID: "4242"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &dead, LeaseDurationSeconds: &secs, AcquireTime: &old, RenewTime: &old},
	}
	cs := fake.NewClientset(le)
	id := Identity{Host: "op", PID: 7, RunID: "abcd"}
	b := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", id: id, holder: id.String(), duration: 60 * time.Second}
	ok, _, prev, err := b.tryAcquire(ctx, map[string]string{AnnotationNode: "node-1", AnnotationReason: "nokmem"})
	if !ok || err != nil {
		t.Fatalf("a lapsed slot was not taken over: %v %v", ok, err)
	}
	if prev == nil || prev.holder != dead || prev.node != "node-7" || prev.phase != PhaseRebooting {
		t.Fatalf("takeover: %+v", prev)
	}
	got, _ := cs.CoordinationV1().Leases("kube-system").Get(ctx, "nksrun-reboot", metav1.GetOptions{})
	want := map[string]string{AnnotationHolderHost: "op", AnnotationHolderPID: "7", AnnotationRunID: "abcd", AnnotationNode: "node-1", AnnotationReason: "nokmem"}
	for k, v := range want {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
		}
	}
	if holderOf(got) != "nksrun@op/7/abcd" || *got.Spec.LeaseDurationSeconds != 60 || *got.Spec.LeaseTransitions != 1 {
		t.Errorf("lease after takeover: %+v", got.Spec)
	}
	// The new holder is live: a third process must wait.
	c := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", holder: "C", duration: 60 * time.Second}
	if ok, holder, _, _ := c.tryAcquire(ctx, nil); ok || holder != "nksrun@op/7/abcd" {
		t.Fatalf("a live slot was taken: %v %q", ok, holder)
	}
	st, err := Status(ctx, &module.Cluster{Clientset: cs})
	if err != nil || len(st.Slots) != 1 || st.Slots[0].Expired || st.Slots[0].PID != 7 || st.Slots[0].Node != "node-1" {
		t.Fatalf("status: %+v %v", st, err)
	}
	// Unlock keeps a live holder's slot without force, releases it with.
	res, err := Unlock(ctx, &module.Cluster{Clientset: cs}, false)
	if err != nil || len(res.Released) != 0 || len(res.Kept) != 1 {
		t.Fatalf("unlock without force: %+v %v", res, err)
	}
	res, err = Unlock(ctx, &module.Cluster{Clientset: cs}, true)
	if err != nil || len(res.Released) != 1 {
		t.Fatalf("unlock --force: %+v %v", res, err)
	}
	got, _ = cs.CoordinationV1().Leases("kube-system").Get(ctx, "nksrun-reboot", metav1.GetOptions{})
	if holderOf(got) != "" || got.Annotations[AnnotationNode] != "" {
		t.Fatalf("released lease: %+v %v", got.Spec, got.Annotations)
	}
}

// managed builds a managedFields entry owning spec.unschedulable.
func managed(manager string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1",
		FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:unschedulable":{}}}`)}
}

func TestOwnership(t *testing.T) {
	statusOnly := metav1.ManagedFieldsEntry{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status",
		FieldsV1: metav1.NewFieldsV1(`{"f:status":{}}`)}
	ann := map[string]string{AnnotationCordonedBy: "nksrun@a/1/x", AnnotationCordonedAt: "2026-12-01T10:00:00Z"}
	for _, tc := range []struct {
		name          string
		cordoned      bool
		ann           map[string]string
		mf            []metav1.ManagedFieldsEntry
		ours, stale   bool
		unknown       bool
		whyContaining string
	}{
		{"schedulable, no annotation", false, nil, []metav1.ManagedFieldsEntry{statusOnly}, false, false, false, "schedulable"},
		{"admin cordon, no annotation", true, nil, []metav1.ManagedFieldsEntry{managed("kubectl-cordon")}, false, false, false, "not by nksrun"},
		{"nksrun's cordon", true, ann, []metav1.ManagedFieldsEntry{statusOnly, managed(FieldManager)}, true, false, false, "cordoned by nksrun"},
		{"schedulable again: annotation stale", false, ann, []metav1.ManagedFieldsEntry{statusOnly}, false, true, false, "stale"},
		{"admin re-cordoned over a stale annotation", true, ann, []metav1.ManagedFieldsEntry{managed("kubectl-cordon")}, false, true, false, "kubectl-cordon"},
		{"shared ownership is not nksrun's alone", true, ann, []metav1.ManagedFieldsEntry{managed(FieldManager), managed("kubectl")}, false, true, false, "stale"},
		{"no managedFields: unproven", true, ann, nil, false, false, true, "no field owners"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: tc.ann, ManagedFields: tc.mf}, Spec: corev1.NodeSpec{Unschedulable: tc.cordoned}}
			o := ownershipOf(n)
			if o.Ours != tc.ours || o.Stale != tc.stale || o.Unknown != tc.unknown || !strings.Contains(o.Why, tc.whyContaining) {
				t.Fatalf("got %+v", o)
			}
			if tc.ann != nil && !o.Since.Equal(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)) {
				t.Errorf("since %v", o.Since)
			}
		})
	}
}

// The fake clientset of client-go tracks managedFields like the API server,
// so cordon/uncordon/unlock are exercised end to end on the ownership rules.
func TestCordonOwnershipWithFieldManagers(t *testing.T) {
	ctx := context.Background()
	node := func(name string, cordoned bool) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Unschedulable: cordoned}}
	}
	cs := fake.NewClientset(node("free", false), node("admin", true))
	me := "nksrun@me/1/aa"
	if did, err := cordonNode(ctx, cs, "free", me, time.Now()); !did || err != nil {
		t.Fatalf("cordon: %v %v", did, err)
	}
	if did, err := cordonNode(ctx, cs, "admin", me, time.Now()); did || err != nil {
		t.Fatalf("cordoned a node that was cordoned already: %v %v", did, err)
	}
	n, _ := cs.CoreV1().Nodes().Get(ctx, "free", metav1.GetOptions{})
	if o := ownershipOf(n); !o.Ours || o.Holder != me {
		t.Fatalf("after nksrun's cordon: %+v (managedFields %+v)", o, n.ManagedFields)
	}
	// An admin uncordons and cordons again: the annotation stays, the
	// cordon is the admin's.
	admin := metav1.PatchOptions{FieldManager: "kubectl-cordon"}
	for _, patch := range []string{`{"spec":{"unschedulable":null}}`, `{"spec":{"unschedulable":true}}`} {
		if _, err := cs.CoreV1().Nodes().Patch(ctx, "free", "application/merge-patch+json", []byte(patch), admin); err != nil {
			t.Fatal(err)
		}
	}
	n, _ = cs.CoreV1().Nodes().Get(ctx, "free", metav1.GetOptions{})
	if o := ownershipOf(n); o.Ours || !o.Stale {
		t.Fatalf("after the admin's cordon: %+v", o)
	}
	st, err := Status(ctx, &module.Cluster{Clientset: cs})
	if err != nil || len(st.Cordoned) != 0 || len(st.Stale) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if f := findingsOf(st, time.Now()); len(f) != 1 || !strings.Contains(f[0].Title, "stale") {
		t.Fatalf("findings: %+v", f)
	}
	res, err := Unlock(ctx, &module.Cluster{Clientset: cs}, true)
	if err != nil || len(res.Uncordoned) != 0 || len(res.Cleaned) != 1 {
		t.Fatalf("unlock: %+v %v", res, err)
	}
	n, _ = cs.CoreV1().Nodes().Get(ctx, "free", metav1.GetOptions{})
	if !n.Spec.Unschedulable || hasNksrunAnnotations(n) {
		t.Fatalf("admin's cordon lost or annotation kept: %v %v", n.Spec.Unschedulable, n.Annotations)
	}
	// A cordon of a dead run (no slot renewed) is uncordoned by unlock.
	if did, err := cordonNode(ctx, cs, "other", me, time.Now()); err == nil || did {
		t.Fatalf("cordoned a node that does not exist: %v %v", did, err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node("other", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cordonNode(ctx, cs, "other", "nksrun@dead/2/bb", time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err = Unlock(ctx, &module.Cluster{Clientset: cs}, false)
	if err != nil || len(res.Uncordoned) != 1 || res.Uncordoned[0] != "other" {
		t.Fatalf("unlock of a dead run's cordon: %+v %v", res, err)
	}
	if f, err := Findings(ctx, &module.Cluster{Clientset: cs}); err != nil || len(f) != 0 {
		t.Fatalf("findings on a clean cluster: %+v %v", f, err)
	}
	// In a run, uncordonNode lifts only the holder's own cordon.
	if _, err := cordonNode(ctx, cs, "other", me, time.Now()); err != nil {
		t.Fatal(err)
	}
	if did, err := uncordonNode(ctx, cs, "other", "nksrun@someone/3/cc", true); did || err != nil {
		t.Fatalf("uncordoned another run's cordon: %v %v", did, err)
	}
	if did, err := uncordonNode(ctx, cs, "other", me, true); !did || err != nil {
		t.Fatalf("own cordon not lifted: %v %v", did, err)
	}
}

func pdbTestPod(name string, volumes ...corev1.Volume) *corev1.Pod {
	ctrl := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1", Controller: &ctrl}}},
		Spec:   corev1.PodSpec{NodeName: "n1", Volumes: volumes},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// A drain that PodDisruptionBudgets keep refusing fails at the drain
// timeout naming the budget and the pods, not "rate limiter Wait".
func TestDrainNamesBlockingPDB(t *testing.T) {
	zero := intstr.FromInt32(0)
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web-pdb", Namespace: "shop"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &zero, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	other := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db-pdb", Namespace: "shop"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &zero, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}}
	cs := fake.NewClientset(pdbTestPod("web-a"), pdbTestPod("web-b"), pdb, other)
	evictions := 0
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		evictions++
		err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"})
		return true, nil, err
	})
	_, err := drain(context.Background(), cs, "n1", drainOpts{deadline: time.Now().Add(time.Second), retry: 50 * time.Millisecond, logf: t.Logf}) // 20 rounds: "at least 4 attempts" holds on a loaded machine
	if err == nil {
		t.Fatal("drain succeeded")
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{"PodDisruptionBudget shop/web-pdb blocks pod(s) shop/web-a, shop/web-b", "needs 2 healthy pods", "disruption budget"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if strings.Contains(msg, "db-pdb") || strings.Contains(msg, "rate limiter") {
		t.Errorf("error names the wrong thing: %s", msg)
	}
	if evictions < 4 {
		t.Errorf("only %d eviction attempts: 429s were not retried", evictions)
	}
	// Cancelled (interrupted) rather than timed out: the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := drain(ctx, cs, "n1", drainOpts{deadline: time.Now().Add(time.Minute), retry: time.Second, logf: t.Logf}); !errors.Is(err, context.Canceled) {
		t.Errorf("interrupted drain: %v", err)
	}
}

// Pods with emptyDir data are refused without delete_emptydir_data, and
// the plan lists them beforehand.
func TestDrainRefusesEmptyDirWithoutOptIn(t *testing.T) {
	emptyDir := corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	done := pdbTestPod("job-done", emptyDir)
	done.Status.Phase = corev1.PodSucceeded
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	cs := fake.NewClientset(node, pdbTestPod("cache-0", emptyDir), pdbTestPod("web-a"), done)
	evicted := 0
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		evicted++
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		return true, nil, cs.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), ev.Namespace, ev.Name)
	})
	_, err := drain(context.Background(), cs, "n1", drainOpts{deadline: time.Now().Add(time.Minute), retry: time.Second, logf: t.Logf})
	if err == nil || !strings.Contains(err.Error(), "emptyDir") || !strings.Contains(err.Error(), "shop/cache-0") || strings.Contains(err.Error(), "job-done") || !strings.Contains(err.Error(), "delete_emptydir_data: true") {
		t.Fatalf("drain without opt-in: %v", err)
	}
	if evicted != 0 {
		t.Fatalf("%d pods evicted before the refusal", evicted)
	}
	m := newModule()
	tgt := module.Target{Node: &module.Node{Name: "n1"}, Cluster: &module.Cluster{Clientset: cs}}
	for _, optIn := range []bool{false, true} {
		pl, err := m.Plan(context.Background(), tgt, "reboot", &Params{DeleteEmptyDirData: optIn}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pl.Findings) != 1 || len(pl.Findings[0].Evidence) != 1 || pl.Findings[0].Evidence[0] != "shop/cache-0" {
			t.Fatalf("plan findings (opt-in %v): %+v", optIn, pl.Findings)
		}
		if refused := strings.Contains(pl.Summary, "REFUSED: emptyDir data in shop/cache-0"); refused == optIn {
			t.Errorf("plan summary (opt-in %v): %s", optIn, pl.Summary)
		}
		if warned := strings.Contains(pl.Reason, "WARNING: the drain will fail"); warned == optIn {
			t.Errorf("plan reason (opt-in %v): %s", optIn, pl.Reason)
		}
	}
	if _, err := drain(context.Background(), cs, "n1", drainOpts{deleteEmptyDir: true, deadline: time.Now().Add(30 * time.Second), retry: time.Second, logf: t.Logf}); err != nil {
		t.Fatalf("drain with opt-in: %v", err)
	}
	if evicted != 3 {
		t.Errorf("%d evictions with the opt-in, want 3", evicted)
	}
}

// The last look before the reboot command fails once another process has
// written the slot as its own.
func TestLeaseCheckSeesALostSlot(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	a := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", holder: "A", duration: time.Minute}
	if ok, _, _, err := a.tryAcquire(ctx, nil); !ok || err != nil {
		t.Fatalf("A: %v %v", ok, err)
	}
	if err := a.check(ctx); err != nil {
		t.Fatalf("check while holding: %v", err)
	}
	le, _ := cs.CoordinationV1().Leases("kube-system").Get(ctx, "nksrun-reboot", metav1.GetOptions{})
	thief := "B"
	le.Spec.HolderIdentity = &thief
	if _, err := cs.CoordinationV1().Leases("kube-system").Update(ctx, le, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.check(ctx); err == nil || !strings.Contains(err.Error(), "lost the reboot slot kube-system/nksrun-reboot") || !strings.Contains(err.Error(), "held by B") {
		t.Fatalf("check after losing the slot: %v", err)
	}
	if err := a.release(); err == nil {
		t.Fatal("released a slot another process holds")
	}
	if le, _ := cs.CoordinationV1().Leases("kube-system").Get(ctx, "nksrun-reboot", metav1.GetOptions{}); holderOf(le) != "B" {
		t.Fatalf("holder after A's release: %q", holderOf(le))
	}
}

package reboot

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestLeaseRespectsLiveHolderAndTakesExpired(t *testing.T) {
	cs := fake.NewSimpleClientset()
	ctx := context.Background()
	a := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", holder: "A", duration: 2 * time.Second}
	b := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", holder: "B", duration: 2 * time.Second}
	if ok, _, _, err := a.tryAcquire(ctx, nil); !ok || err != nil {
		t.Fatalf("A: %v %v", ok, err)
	}
	if ok, holder, _, err := b.tryAcquire(ctx, nil); ok || err != nil || holder != "A" {
		t.Fatalf("B took a live lease: %v %q %v", ok, holder, err)
	}
	// A renews: B must keep waiting even after a full duration since its first look.
	time.Sleep(1500 * time.Millisecond)
	if err := a.update(ctx, func(l *coordinationv1.Lease) bool {
		now := metav1.NewMicroTime(time.Now())
		l.Spec.RenewTime = &now
		return true
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1000 * time.Millisecond)
	if ok, _, _, _ := b.tryAcquire(ctx, nil); ok {
		t.Fatal("B took a lease that was renewed less than a duration ago")
	}
	// A stops renewing (crashed): after a whole duration unchanged, B takes it.
	time.Sleep(2100 * time.Millisecond)
	if ok, _, _, err := b.tryAcquire(ctx, nil); !ok || err != nil {
		t.Fatalf("B could not take an expired lease: %v %v", ok, err)
	}
	if err := a.release(); err == nil {
		t.Fatal("A released a lease it no longer holds")
	}
	if err := b.release(); err != nil {
		t.Fatal(err)
	}
	if ok, _, _, err := a.tryAcquire(ctx, nil); !ok || err != nil {
		t.Fatalf("A could not take a released lease: %v %v", ok, err)
	}
	if err := a.holdHalted("node-1: did not come back", time.Hour); err != nil {
		t.Fatal(err)
	}
	c := &lease{cs: cs, namespace: "kube-system", name: "nksrun-reboot", holder: "C", duration: time.Second}
	if ok, holder, _, _ := c.tryAcquire(ctx, nil); ok || holder != "A (halted: node-1: did not come back)" {
		t.Fatalf("halted lease: %v %q", ok, holder)
	}
}

func TestClassify(t *testing.T) {
	ctrl := true
	pod := func(name string, ann map[string]string, kind string, phase corev1.PodPhase) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Annotations: ann}, Status: corev1.PodStatus{Phase: phase}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: "x", Controller: &ctrl}}
		}
		return p
	}
	s := classify([]corev1.Pod{
		pod("rs", nil, "ReplicaSet", corev1.PodRunning),
		pod("ds", nil, "DaemonSet", corev1.PodRunning),
		pod("mirror", map[string]string{corev1.MirrorPodAnnotationKey: "x"}, "", corev1.PodRunning),
		pod("bare", nil, "", corev1.PodRunning),
		pod("done", nil, "", corev1.PodSucceeded),
	})
	if len(s.evict) != 3 || len(s.daemonSet) != 1 || len(s.mirror) != 1 || len(s.unmanaged) != 1 || s.unmanaged[0] != "ns/bare" {
		t.Fatalf("%+v", s)
	}
}

func TestValidateAndDefaults(t *testing.T) {
	m := newModule()
	if err := m.Validate(&Params{Serial: -1}); err == nil {
		t.Fatal("negative serial accepted")
	}
	d := defaults(&Params{})
	if d.Serial != 1 || d.MaxFailures != 1 || d.LockName != "nksrun-reboot" || d.LockNamespace != "kube-system" || d.Command != "reboot" {
		t.Fatalf("%+v", d)
	}
	if newModule().holder == m.holder {
		t.Fatal("two runs share a holder identity")
	}
}

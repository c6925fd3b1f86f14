package rolloutrestart

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/fake"

	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

// Plan and apply against a real API server (server-side dry run) are the
// data-driven cases in testdata/modules/rollout_restart, run by
// modules.TestClusterModuleCases. These are the pure parts.

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		p   Params
		err string
	}{
		{Params{Kind: "Deployment"}, ""},
		{Params{Kind: "DaemonSet", Timeout: "90s"}, ""},
		{Params{Kind: "StatefulSet", Wait: true, Timeout: "5m"}, ""},
		{Params{Kind: "Job"}, `kind "Job"`},
		{Params{Kind: "deployment"}, `kind "deployment"`},
		{Params{Kind: "Deployment", Timeout: "5"}, `timeout "5"`},
		{Params{Kind: "Deployment", Timeout: "-1m"}, `timeout "-1m"`},
	} {
		err := (&Module{}).Validate(&tc.p)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.p, err, tc.err)
		}
	}
}

func workload(kind string, gen int64, spec, status map[string]any) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": kind,
		"metadata": map[string]any{"name": "w", "namespace": "ns", "generation": gen},
		"spec":     spec, "status": status,
	}}
	return o
}

func TestRolledOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *unstructured.Unstructured
		done bool
		why  string
	}{
		{"deployment done", workload("Deployment", 2, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(3), "availableReplicas": int64(3)}), true, ""},
		{"deployment not observed", workload("Deployment", 3, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(3), "availableReplicas": int64(3)}), false, "observedGeneration 2 < generation 3"},
		{"deployment updating", workload("Deployment", 2, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(4), "updatedReplicas": int64(1), "availableReplicas": int64(3)}), false, "1 of 3 replicas updated"},
		{"deployment old pending", workload("Deployment", 2, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(4), "updatedReplicas": int64(3), "availableReplicas": int64(3)}), false, "1 old replicas pending termination"},
		{"deployment unavailable", workload("Deployment", 2, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(3), "availableReplicas": int64(2)}), false, "2 of 3 updated replicas available"},
		{"deployment default replicas", workload("Deployment", 1, map[string]any{}, map[string]any{"observedGeneration": int64(1), "replicas": int64(1), "updatedReplicas": int64(1), "availableReplicas": int64(1)}), true, ""},
		{"daemonset done", workload("DaemonSet", 1, map[string]any{}, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(5), "updatedNumberScheduled": int64(5), "numberAvailable": int64(5)}), true, ""},
		{"daemonset updating", workload("DaemonSet", 1, map[string]any{}, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(5), "updatedNumberScheduled": int64(2), "numberAvailable": int64(5)}), false, "2 of 5 pods updated"},
		{"daemonset unavailable", workload("DaemonSet", 1, map[string]any{}, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(5), "updatedNumberScheduled": int64(5), "numberAvailable": int64(4)}), false, "4 of 5 pods available"},
		{"statefulset done", workload("StatefulSet", 1, map[string]any{"replicas": int64(2)}, map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(2), "readyReplicas": int64(2), "currentRevision": "r2", "updateRevision": "r2"}), true, ""},
		{"statefulset old revision", workload("StatefulSet", 1, map[string]any{"replicas": int64(2)}, map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(2), "readyReplicas": int64(2), "currentRevision": "r1", "updateRevision": "r2"}), false, "current revision is not the update revision yet"},
		{"statefulset not ready", workload("StatefulSet", 1, map[string]any{"replicas": int64(2)}, map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(2), "readyReplicas": int64(1)}), false, "1 of 2 pods ready"},
		// Status numbers decoded from JSON are float64.
		{"float status", workload("DaemonSet", 1, map[string]any{}, map[string]any{"observedGeneration": float64(1), "desiredNumberScheduled": float64(2), "updatedNumberScheduled": float64(2), "numberAvailable": float64(1)}), false, "1 of 2 pods available"},
		{"unsupported kind", workload("Job", 1, map[string]any{}, map[string]any{"observedGeneration": int64(1)}), false, "unsupported kind Job"},
	} {
		done, why := RolledOut(tc.o)
		if done != tc.done || why != tc.why {
			t.Errorf("%s: RolledOut = %v %q, want %v %q", tc.name, done, why, tc.done, tc.why)
		}
	}
}

// fakeCluster serves Deployments from client-go's fake dynamic client: wait
// only reads (Get), which the fake does faithfully.
func fakeCluster(objs ...runtime.Object) *module.Cluster {
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	dyn := fake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "DeploymentList"}, objs...)
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	return &module.Cluster{Dynamic: dyn, Mapper: mapper}
}

func TestWait(t *testing.T) {
	ref := []kubeutil.ObjectChange{{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "ns", Name: "w"}}
	done := workload("Deployment", 2, map[string]any{"replicas": int64(1)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(1), "updatedReplicas": int64(1), "availableReplicas": int64(1)})
	m := &Module{Poll: 10 * time.Millisecond}
	var logs []string
	tgt := module.Target{Cluster: fakeCluster(done), Log: func(f string, a ...any) { logs = append(logs, f) }}
	if err := m.wait(context.Background(), tgt, ref, time.Minute); err != nil {
		t.Fatalf("rolled-out deployment: %v", err)
	}

	stuck := workload("Deployment", 2, map[string]any{"replicas": int64(3)}, map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(1), "availableReplicas": int64(3)})
	tgt.Cluster = fakeCluster(stuck)
	err := m.wait(context.Background(), tgt, ref, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "rollout not finished after 50ms: Deployment ns/w: 1 of 3 replicas updated") {
		t.Fatalf("stuck deployment: err = %v", err)
	}
	if len(logs) != 1 {
		t.Errorf("progress logged %d times, want once per new reason: %q", len(logs), logs)
	}

	tgt.Cluster = fakeCluster()
	if err := m.wait(context.Background(), tgt, ref, time.Minute); err == nil || !strings.Contains(err.Error(), `Deployment ns/w: deployments.apps "w" not found`) {
		t.Fatalf("deleted deployment: err = %v", err)
	}
}

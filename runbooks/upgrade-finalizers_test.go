package runbooks_test

import (
	"strings"

	"nksrun/engine/module"
)

func e2eUpgradeFinalizers(k *kenv) {
	_, p := k.plan("upgrade-finalizers")
	nothingToDo(k, p)

	pod := "containers: [{name: c, image: registry.k8s.io/coredns/coredns:v1.11.1}]\n"
	k.create(
		workload("Deployment", "kube-system", "coredns", "finalizers: [example.com/protect]\n", pod),
		workload("Deployment", "kube-system", "metrics-server", "", pod), // no finalizers: untouched
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: calico-config, namespace: kube-system, finalizers: [example.com/a, example.com/b]}\ndata: {k: v}\n",
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: calico-node, finalizers: [example.com/protect]}\nrules: []\n",
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: customer-role, finalizers: [example.com/keep]}\nrules: []\n", // not an NKS default
	)
	path, p := k.plan("upgrade-finalizers")
	wantActions(k, p, map[string]module.Action{
		"diagnose": module.Finding, "deployments": module.Change, "configmaps": module.Change, "clusterroles": module.Change,
		"daemonsets": module.NoOp, "services": module.NoOp, "clusterrolebindings": module.NoOp,
	})
	st := steps(k, p)
	if s := st["deployments"].Summary; !strings.Contains(s, "kube-system/coredns") || strings.Contains(s, "metrics-server (") {
		k.t.Errorf("deployments: %s", s)
	}
	if s := st["clusterroles"].Summary; !strings.Contains(s, "ClusterRole calico-node") || strings.Contains(s, "customer-role") {
		k.t.Errorf("clusterroles: %s", s)
	}
	if d := st["configmaps"].Diff; !strings.Contains(d, "-  finalizers:") {
		k.t.Errorf("diff:\n%s", d)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	for _, o := range [][3]string{{"apps/v1", "Deployment", "coredns"}, {"v1", "ConfigMap", "calico-config"}} {
		if f := k.get(o[0], o[1], "kube-system", o[2]).GetFinalizers(); len(f) != 0 {
			k.t.Errorf("%s %s still has %v", o[1], o[2], f)
		}
	}
	if f := k.get("rbac.authorization.k8s.io/v1", "ClusterRole", "", "calico-node").GetFinalizers(); len(f) != 0 {
		k.t.Errorf("ClusterRole calico-node still has %v", f)
	}
	if f := k.get("rbac.authorization.k8s.io/v1", "ClusterRole", "", "customer-role").GetFinalizers(); len(f) != 1 {
		k.t.Errorf("customer-role finalizers touched: %v", f)
	}
	_, p = k.plan("upgrade-finalizers")
	nothingToDo(k, p)
}

package runbooks_test

import (
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"nksrun/engine/module"
)

func e2eFSGroupPolicy(k *kenv) {
	ns := k.namespace("data")
	other := k.namespace("other")
	_, p := k.plan("fsgroup-policy", "namespace="+ns)
	nothingToDo(k, p)

	c := "containers: [{name: db, image: postgres:16}]\n"
	k.create(
		workload("StatefulSet", ns, "postgres", "", "securityContext: {fsGroup: 999}\n"+c),
		workload("Deployment", ns, "explicit", "", "securityContext: {fsGroup: 999, fsGroupChangePolicy: Always}\n"+c), // a choice: left alone
		workload("Deployment", ns, "no-fsgroup", "", c),
		workload("StatefulSet", other, "elsewhere", "", "securityContext: {fsGroup: 999}\n"+c),
	)
	// Without a namespace: report only, nothing patched (never cluster-wide by default).
	_, p = k.plan("fsgroup-policy")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.Skip, "deployments": module.Skip})

	path, p := k.plan("fsgroup-policy", "namespace="+ns)
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding, "statefulsets": module.Change, "deployments": module.NoOp, "daemonsets": module.NoOp})
	if s := steps(k, p)["statefulsets"].Summary; !strings.Contains(s, ns+"/postgres") {
		k.t.Errorf("summary: %s", s)
	}
	r, code := k.apply(path)
	appliedOK(k, r, code)
	pol := func(kind, ns, name string) string {
		v, _, _ := unstructured.NestedString(k.get("apps/v1", kind, ns, name).Object, "spec", "template", "spec", "securityContext", "fsGroupChangePolicy")
		return v
	}
	if pol("StatefulSet", ns, "postgres") != "OnRootMismatch" || pol("Deployment", ns, "explicit") != "Always" || pol("StatefulSet", other, "elsewhere") != "" {
		k.t.Errorf("policies: %q %q %q", pol("StatefulSet", ns, "postgres"), pol("Deployment", ns, "explicit"), pol("StatefulSet", other, "elsewhere"))
	}
	_, p = k.plan("fsgroup-policy", "namespace="+ns)
	nothingToDo(k, p)
}

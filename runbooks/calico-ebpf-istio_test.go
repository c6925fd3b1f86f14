package runbooks_test

import (
	"strings"

	"nksrun/engine/module"
)

func e2eCalicoEBPFIstio(k *kenv) {
	calicoNode(k, "v3.28.2", "- {name: FELIX_BPFENABLED, value: \"true\"}\n")
	_, p := k.plan("calico-ebpf-istio")
	nothingToDo(k, p) // eBPF without istio

	ns := k.namespace("mesh")
	k.create("apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "-app, labels: {istio-injection: enabled}}\n")
	_, p = k.plan("calico-ebpf-istio")
	wantActions(k, p, map[string]module.Action{"diagnose": module.Finding})
	f := steps(k, p)["diagnose"].Findings[0]
	if len(f.Evidence) != 2 || !strings.Contains(f.Evidence[1], ns+"-app has istio-injection=enabled") || !strings.Contains(f.Recommendation, "VXLAN") {
		k.t.Errorf("finding: %+v", f)
	}
	if c := p.Counts(); c.Change != 0 {
		k.t.Errorf("diagnose-only runbook plans changes: %+v", c)
	}
}

package runbooks_test

import (
	"nksrun/engine/module"
)

func e2eCalicoEBPFIstio(k *kenv) {
	ebpf := calicoDS("kube-system", calicoImage("v3.28.2"), bpfOn, "")
	found := map[string]module.Action{"diagnose": module.Finding}
	// Bystanders: other namespaces with other labels, a Deployment that is
	// not istiod, a pod with inject=false.
	bystanders := docs(calicoBystanders,
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS9, labels: {istio-injection: disabled, team: web}}\n",
		workload("Deployment", "$NS9", "istio-demo-app", "", "containers: [{name: a, image: nginx:1.25}]\n"),
		"apiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: $NS9, labels: {sidecar.istio.io/inject: \"false\"}}\nspec: {containers: [{name: a, image: nginx:1.25}]}\n")
	cases := []rbCase{{
		name:    "healthy: eBPF without istio",
		objects: docs(bystanders, ebpf),
	}, {
		name:    "healthy: istio without eBPF",
		objects: docs(bystanders, calicoDS("kube-system", calicoImage("v3.28.2"), "", ""), "apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS, labels: {istio-injection: enabled}}\n"),
	}, {
		name:     "broken: a namespace labelled istio-injection=enabled",
		objects:  docs(bystanders, ebpf, "apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS, labels: {istio-injection: enabled}}\n"),
		plan:     found,
		evidence: []string{"Namespace $NS has istio-injection=enabled", "FELIX_BPFENABLED=true", "Calico-VXLAN"},
		absent:   []string{"$NS9"},
		after:    found,
	}, {
		name:     "broken: a revisioned istiod in its own namespace (no istio-system)",
		objects:  docs(bystanders, ebpf, workload("Deployment", "$NS", "istiod-1-22", "", "containers: [{name: discovery, image: docker.io/istio/pilot:1.22.3}]\n")),
		plan:     found,
		evidence: []string{"Deployment $NS/istiod-1-22"},
		after:    found,
	}, {
		name:     "broken: a namespace labelled istio.io/rev",
		objects:  docs(bystanders, ebpf, "apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS, labels: {istio.io/rev: canary}}\n"),
		plan:     found,
		evidence: []string{"Namespace $NS has istio.io/rev=canary"},
		after:    found,
	}, {
		name:     "broken: pods labelled sidecar.istio.io/inject=true",
		objects:  docs(bystanders, ebpf, "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: $NS, labels: {sidecar.istio.io/inject: \"true\"}}\nspec: {containers: [{name: a, image: nginx:1.25}]}\n"),
		plan:     found,
		evidence: []string{"Pod $NS/web has sidecar.istio.io/inject=true"},
		after:    found,
	}, {
		name:     "broken: eBPF from FelixConfiguration, istio ambient",
		objects:  docs(bystanders, felixConfig("default", "{bpfEnabled: true}"), calicoDS("kube-system", calicoImage("v3.28.2"), "", ""), "apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS, labels: {istio.io/dataplane-mode: ambient}}\n"),
		plan:     found,
		evidence: []string{"FelixConfiguration default: bpfEnabled: true", "istio.io/dataplane-mode=ambient"},
		after:    found,
	}, {
		name:     "unknown: istio present, eBPF setting unreadable",
		objects:  docs(bystanders, calicoDS("kube-system", calicoImage("v3.28.2"), "- name: FELIX_BPFENABLED\n  valueFrom: {secretKeyRef: {name: felix, key: bpf}}\n", ""), "apiVersion: v1\nkind: Namespace\nmetadata: {name: $NS, labels: {istio-injection: enabled}}\n"),
		plan:     map[string]module.Action{"diagnose": module.Unknown},
		evidence: []string{"set from secretKeyRef, which nksrun does not read"},
		after:    map[string]module.Action{"diagnose": module.Unknown},
	}}
	calicoCRDs(k)
	runCases(k, "calico-ebpf-istio", cases)
}

package runbooks_test

import (
	"nksrun/engine/module"
)

func e2eCalico328Scale(k *kenv) {
	kc := func(image string) string {
		return workload("Deployment", "kube-system", "calico-kube-controllers", "", "containers: [{name: calico-kube-controllers, image: \""+image+"\"}]\n")
	}
	var cases []rbCase
	for _, tc := range []struct {
		tag, bpf string
		found    bool
	}{
		{"v3.28.0", "true", true},
		{"v3.28.1", "TRUE", true},
		{"v3.28.2", "true", false},
		{"v3.29.1", "true", false},
		{"v3.26.4", "true", false},
		{"v3.28.0", "false", false},
	} {
		c := rbCase{
			name:    tc.tag + " FELIX_BPFENABLED=" + tc.bpf,
			objects: docs(calicoBystanders, calicoDS("kube-system", calicoImage(tc.tag), "- {name: FELIX_BPFENABLED, value: \""+tc.bpf+"\"}\n", ""), kc("calico/kube-controllers:"+tc.tag)),
		}
		if tc.found {
			c.plan = map[string]module.Action{"diagnose": module.Finding}
			c.evidence = []string{"calico version " + tc.tag, "FELIX_BPFENABLED=" + tc.bpf}
			c.after = c.plan
		}
		cases = append(cases, c)
	}
	cases = append(cases, rbCase{
		name: "v3.28.1 operator install, eBPF from the Installation",
		objects: docs(calicoBystanders, "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata: {name: default}\nspec: {calicoNetwork: {linuxDataplane: BPF}}\n",
			calicoDS("calico-system", "quay.io/calico/node:v3.28.1", "", ""),
			workload("Deployment", "calico-system", "calico-kube-controllers", "", "containers: [{name: calico-kube-controllers, image: quay.io/calico/kube-controllers:v3.28.1}]\n")),
		plan:     map[string]module.Action{"diagnose": module.Finding},
		evidence: []string{"Installation default: calicoNetwork.linuxDataplane: BPF", "calico version v3.28.1"},
		after:    map[string]module.Action{"diagnose": module.Finding},
	}, rbCase{
		name:     "unknown: kube-controllers pinned by digest in eBPF mode",
		objects:  docs(calicoBystanders, calicoDS("kube-system", "calico/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", bpfOn, ""), kc("calico/kube-controllers@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")),
		plan:     map[string]module.Action{"diagnose": module.Unknown},
		evidence: []string{"the Calico version cannot be read from image calico/kube-controllers@sha256"},
		after:    map[string]module.Action{"diagnose": module.Unknown},
	})
	calicoCRDs(k)
	runCases(k, "calico-328-scale", cases)
}
